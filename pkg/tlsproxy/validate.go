package tlsproxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/mtls"
)

// FieldError is a problem with one field of a Config ("listen",
// "allow[2]"). It is fielderr.Error, the one type every pkg/ Validate
// uses, named here for callers of Config.Validate.
type FieldError = fielderr.Error

// Validate checks cfg as New will, without opening anything: name, mode,
// addresses, the loopback rule for the plaintext side, the allow list (or
// Authorizer: one of them) and the limits. Every problem is reported, each as a *FieldError, joined.
func (cfg Config) Validate() error {
	var errs []error
	fail := func(field string, err error) { errs = append(errs, &FieldError{Field: field, Err: err}) }
	if cfg.Name == "" {
		fail("name", errors.New("must not be empty"))
	}
	modeOK := true
	switch cfg.Mode {
	case ModeServer, ModeClient:
	default:
		modeOK = false
		fail("mode", fmt.Errorf("%q: want %q or %q", cfg.Mode, ModeServer, ModeClient))
	}
	listen, lerr := parseAddr(cfg.Listen)
	if lerr != nil {
		fail("listen", lerr)
	}
	target, terr := parseAddr(cfg.Target)
	if terr != nil {
		fail("target", terr)
	}
	if !cfg.UnsafeAllowNonLoopbackPlaintext && modeOK {
		if cfg.Mode == ModeServer && terr == nil && !target.isLoopback() {
			fail("target", fmt.Errorf("%q: plaintext target must be a loopback IP, localhost or a unix socket (set unsafe_allow_non_loopback_plaintext to override)", cfg.Target))
		}
		if cfg.Mode == ModeClient && lerr == nil && !listen.isLoopback() {
			fail("listen", fmt.Errorf("%q: plaintext listener must be a loopback IP, localhost or a unix socket (set unsafe_allow_non_loopback_plaintext to override)", cfg.Listen))
		}
	}
	if cfg.RewriteHost && !cfg.HTTP {
		fail("rewrite_host", errors.New("needs http: true"))
	}
	if cfg.HTTP && cfg.Mode == ModeClient {
		fail("http", errors.New("HTTP mode is only available in server mode"))
	}
	switch {
	case cfg.Authorizer != nil && len(cfg.Allow) > 0:
		fail("allow", errAllowAndAuthorizer)
	case cfg.Authorizer == nil && len(cfg.Allow) == 0:
		fail("allow", mtls.ErrEmptyAllow)
	}
	for i, e := range cfg.Allow {
		if err := mtls.CheckAllowEntry(e); err != nil {
			fail(fmt.Sprintf("allow[%d]", i), fmt.Errorf("%q: %w", e, err))
		}
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"handshake_timeout", cfg.HandshakeTimeout},
		{"idle_timeout", cfg.IdleTimeout},
		{"connect_timeout", cfg.ConnectTimeout},
		{"drain_timeout", cfg.DrainTimeout},
		{"max_conn_lifetime", cfg.MaxConnLifetime},
	} {
		if d.v < 0 {
			fail(d.field, fmt.Errorf("%s: must not be negative", d.v))
		}
	}
	if cfg.MaxConnLifetime > 0 && cfg.MaxConnLifetime < MinConnLifetime {
		fail("max_conn_lifetime", fmt.Errorf("%s: must be 0 (no limit) or at least %s", cfg.MaxConnLifetime, MinConnLifetime))
	}
	for _, n := range []struct {
		field string
		v     int
	}{{"max_conns", cfg.MaxConns}, {"max_handshakes", cfg.MaxHandshakes}, {"max_handshakes_per_source", cfg.MaxHandshakesPerSource}} {
		if n.v < 0 {
			fail(n.field, fmt.Errorf("%d: must not be negative", n.v))
		}
	}
	return errors.Join(errs...)
}

// ListenAddr returns cfg.Listen in the form two proxies would collide on
// ("host:port" or "unix:///path", cleaned), or "" when it does not parse.
func (cfg Config) ListenAddr() string {
	a, err := parseAddr(cfg.Listen)
	if err != nil {
		return ""
	}
	return a.String()
}
