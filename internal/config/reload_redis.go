package config

import (
	"errors"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// RedisReload makes a running Redis load new TLS files with CONFIG SET.
// It is also the admin connection of redis.transition.
type RedisReload struct {
	// Addr of the admin connection: "unix:///path", "host:port" (password
	// or plaintext) or "rediss://host:port" (TLS with the agent's SVID).
	Addr         string `yaml:"addr"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// ServerID is the SPIFFE ID (or spiffe://trust-domain) the Redis
	// server must present on a TLS admin connection.
	ServerID string `yaml:"server_id"`
	// CACertFile overrides the bundle file given to Redis as tls-ca-cert-file.
	CACertFile string `yaml:"ca_cert_file"`
}

func (r *RedisReload) applyDefaults() {}

func (r *RedisReload) check(c reloadCheck) {
	if r.Addr == "" {
		c.errorf(path("addr"), "is required")
	}
	if c.out.CertFile == "" {
		c.errorf(nil, "needs the output to write cert_file and key_file")
	}
	c.abs("password_file", r.PasswordFile)
	c.abs("ca_cert_file", r.CACertFile)
	if r.ServerID != "" {
		if _, err := spiffeid.FromString(r.ServerID); err != nil {
			c.errorf(path("server_id"), "%v", err)
		}
	}
}

// Build makes the CONFIG SET reloader of the output's cert, key and
// bundle (or ca_cert_file), by their names: each reload is told their
// paths.
func (r *RedisReload) Build(env ReloadEnv) (rotation.Reloader, error) {
	o := env.Output
	if r.Addr == "" || o.CertFile == "" {
		return nil, nil // the file's rules refused it
	}
	ac, err := r.AdminConfig(env.Source, svid.Selector{SpiffeID: o.SpiffeID, Hint: o.Hint})
	if err != nil {
		return nil, err
	}
	ca := r.CACertFile
	if ca == "" {
		ca = o.BundleFile
	}
	files := redistransition.TLSFiles{CertFile: o.CertFile, KeyFile: o.KeyFile, CAFile: ca}
	opts := []redistransition.Option{redistransition.WithLogger(env.logger("redis"))}
	if env.Registerer != nil {
		opts = append(opts, redistransition.WithRegisterer(env.Registerer))
	}
	return redistransition.NewConfigSetReloader(ac, files, opts...)
}

// ServiceNeeds: nothing the rendered unit adds for it today.
func (r *RedisReload) ServiceNeeds() ServiceNeeds { return ServiceNeeds{} }

// CheckAdmin is every rule for a Redis admin connection that can be
// checked without connecting: the address, and the server_id a TLS
// address needs. Errors name their field (addr, server_id).
func (r RedisReload) CheckAdmin() error {
	if r.Addr == "" {
		return nil // required-ness is the file's rule, reported with its line
	}
	isTLS, err := redistransition.ValidateAdminAddr(r.Addr)
	if err != nil {
		return &rotation.FieldError{Field: "addr", Err: errors.New(strings.TrimPrefix(err.Error(), "redis admin: "))}
	}
	if isTLS && r.ServerID == "" {
		return &rotation.FieldError{Field: "server_id", Err: errors.New("is required for a TLS admin connection (the SPIFFE ID or spiffe://trust-domain Redis presents)")}
	}
	if r.ServerID != "" {
		if _, err := RedisServerAuthorizer(r.ServerID); err != nil {
			return &rotation.FieldError{Field: "server_id", Err: err}
		}
	}
	return nil
}

// AdminConfig is the admin connection; a TLS address presents the SVID
// src picks by sel and requires the server's SPIFFE ID. src may be nil
// for a connection that is only checked, never opened.
func (r RedisReload) AdminConfig(src *svid.Source, sel svid.Selector) (redistransition.AdminConfig, error) {
	ac := redistransition.AdminConfig{Addr: r.Addr, Username: r.Username, PasswordFile: r.PasswordFile}
	if err := r.CheckAdmin(); err != nil {
		return ac, err
	}
	if strings.HasPrefix(r.Addr, "rediss://") || strings.HasPrefix(r.Addr, "tls://") {
		authz, err := RedisServerAuthorizer(r.ServerID)
		if err != nil {
			return ac, err
		}
		ac.SVIDs, ac.Bundles, ac.ServerAuthorizer = src.X509SVIDSource(sel), src, authz
	}
	return ac, nil
}

// RedisServerAuthorizer reads a server_id: "spiffe://td" is any member of
// td, anything longer one exact ID.
func RedisServerAuthorizer(id string) (tlsconfig.Authorizer, error) {
	rest := strings.TrimPrefix(id, "spiffe://")
	if !strings.Contains(rest, "/") {
		return redisclient.ServerAuthorizer("", id)
	}
	return redisclient.ServerAuthorizer(id, "")
}
