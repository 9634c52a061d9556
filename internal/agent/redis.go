package agent

import (
	"fmt"
	"time"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// RedisTransition builds the admin connection and the transition of
// cfg.Redis.Transition; the caller closes the Admin.
func RedisTransition(cfg *config.Config, src *svid.Source, opts ...redistransition.Option) (*redistransition.Transition, *redistransition.Admin, error) {
	if cfg.Redis == nil || cfg.Redis.Transition == nil {
		return nil, nil, fmt.Errorf("%s: no redis.transition section", cfg.Path)
	}
	t := cfg.Redis.Transition
	sel := svid.Selector{SpiffeID: t.SpiffeID}
	ac, err := t.Admin.AdminConfig(src, sel)
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
		if tc.ServerAuthorizer, err = config.RedisServerAuthorizer(t.ServerID); err != nil {
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
