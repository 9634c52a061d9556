package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// redisAdminConfig builds the admin connection; a TLS address presents
// the SVID picked by sel and requires the server's SPIFFE ID.
func redisAdminConfig(src *svid.Source, r config.RedisReload, sel svid.Selector) (redistransition.AdminConfig, error) {
	ac := redistransition.AdminConfig{Addr: r.Addr, Username: r.Username, PasswordFile: r.PasswordFile}
	if err := checkRedisAdmin(r); err != nil {
		return ac, err
	}
	if strings.HasPrefix(r.Addr, "rediss://") || strings.HasPrefix(r.Addr, "tls://") {
		authz, err := serverAuthorizer(r.ServerID)
		if err != nil {
			return ac, err
		}
		ac.SVIDs, ac.Bundles, ac.ServerAuthorizer = src.X509SVIDSource(sel), src, authz
	}
	return ac, nil
}

// serverAuthorizer reads "spiffe://td" as any member of td and anything
// longer as one exact ID.
func serverAuthorizer(id string) (tlsconfig.Authorizer, error) {
	rest := strings.TrimPrefix(id, "spiffe://")
	if !strings.Contains(rest, "/") {
		return redisclient.ServerAuthorizer("", id)
	}
	return redisclient.ServerAuthorizer(id, "")
}

func (a *Agent) redisReloader(o config.Output, r *config.RedisReload) (rotation.Reloader, error) {
	ac, err := redisAdminConfig(a.source, *r, svid.Selector{SpiffeID: o.SpiffeID, Hint: o.Hint})
	if err != nil {
		return nil, err
	}
	// The output's names: each reload is told where they were written.
	ca := r.CACertFile
	if ca == "" {
		ca = o.BundleFile
	}
	files := redistransition.TLSFiles{CertFile: o.CertFile, KeyFile: o.KeyFile, CAFile: ca}
	return redistransition.NewConfigSetReloader(ac, files, redistransition.WithLogger(a.log.Named("redis")), redistransition.WithRegisterer(a.registry))
}

// RedisTransition builds the admin connection and the transition of
// cfg.Redis.Transition; the caller closes the Admin.
func RedisTransition(cfg *config.Config, src *svid.Source, opts ...redistransition.Option) (*redistransition.Transition, *redistransition.Admin, error) {
	if cfg.Redis == nil || cfg.Redis.Transition == nil {
		return nil, nil, fmt.Errorf("%s: no redis.transition section", cfg.Path)
	}
	t := cfg.Redis.Transition
	sel := svid.Selector{SpiffeID: t.SpiffeID}
	ac, err := redisAdminConfig(src, t.Admin, sel)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: redis.transition.admin: %w", cfg.Path, err)
	}
	adm, err := redistransition.NewAdmin(ac, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: redis.transition.admin: %w", cfg.Path, err)
	}
	tc := redistransition.TransitionConfig{
		StateFile:    t.StateFile,
		PlainPort:    t.PlainPort,
		TLSPort:      t.TLSPort,
		TLSFiles:     redistransition.TLSFiles{CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.CACertFile},
		PasswordFile: t.PasswordFile,
		Window:       t.Window.D(redistransition.DefaultWindow),
		MaxSampleGap: t.MaxSampleGap.D(redistransition.DefaultMaxSampleGap),
		TLSAddr:      t.TLSAddr,
		SVIDs:        src.X509SVIDSource(sel),
		Bundles:      src,
	}
	if t.ServerID != "" {
		if tc.ServerAuthorizer, err = serverAuthorizer(t.ServerID); err != nil {
			_ = adm.Close()
			return nil, nil, fmt.Errorf("%s: redis.transition.server_id: %w", cfg.Path, err)
		}
	}
	for _, hc := range t.HealthChecks {
		if hc.HTTP != "" {
			tc.HealthChecks = append(tc.HealthChecks, redistransition.HTTPHealthCheck(hc.Name, hc.HTTP, time.Duration(hc.Timeout)))
		} else {
			tc.HealthChecks = append(tc.HealthChecks, redistransition.CommandHealthCheck(hc.Name, hc.Exec, time.Duration(hc.Timeout)))
		}
	}
	tr, err := redistransition.NewTransition(adm, tc, opts...)
	if err != nil {
		_ = adm.Close()
		return nil, nil, fmt.Errorf("%s: redis.transition: %w", cfg.Path, err)
	}
	return tr, adm, nil
}
