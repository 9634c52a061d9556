package agent

import (
	"errors"
	"fmt"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// convertOutput builds the rotation.Output of o; problems (unknown owner,
// a reload the packages refuse) come back with their lines.
func convertOutput(cfg *config.Config, env Env, at string, o config.Output) (rotation.Output, error) {
	var errs []error
	owner, err := resolveOwner(o.Owner)
	if err != nil {
		errs = append(errs, cfg.At(at+".owner", err))
	}
	ro := rotation.Output{
		Name:                   o.Name,
		Selector:               svid.Selector{SpiffeID: o.SpiffeID, Hint: o.Hint},
		Dir:                    o.Dir,
		IncludeFederated:       o.IncludeFederated,
		Owner:                  owner,
		UnsafeWorldReadableKey: o.UnsafeWorldReadableKey,
	}
	if err := applyFormats(&ro, o); err != nil {
		errs = append(errs, cfg.At(at, err))
	}
	for j, r := range o.Reload {
		rl, err := buildReloader(env, o, owner, r)
		if err != nil {
			errs = append(errs, cfg.At(fmt.Sprintf("%s.reload[%d]", at, j), err))
		}
		ro.Reloads = append(ro.Reloads, rl)
	}
	return ro, config.Join(errs...)
}

// buildReloader builds reload entry r of output o with env, through the
// config's table of reload kinds (config.Reload.Build): the one place a
// reload kind becomes a rotation.Reloader. With no env.Source (config
// validate, status) the reloader is only checked, never run. The error
// names its field below the entry.
func buildReloader(env Env, o config.Output, owner atomicdir.Owner, r config.Reload) (rotation.Reloader, error) {
	rl, err := r.Build(config.ReloadEnv{Output: o, Owner: owner, Source: env.Source, Logger: env.Logger, Registerer: env.registerer()})
	if err != nil || rl == nil {
		return rl, err
	}
	return withEqual(rl, r.Spec()), nil
}

// withEqual makes rl comparable by rotation.Output.Equal (the reload diff)
// when it cannot compare itself: the redis reloader (its server
// authorizer is a func) and the traefik one (its logger) are keyed by the
// settings they were built from (the output's own settings, which they
// also use, are compared by Output.Equal). A kind whose reloader has
// neither an Equal(rotation.Reloader) bool, nor a comparable value, nor a
// line here equals only itself: its output is replaced on every reload,
// which is safe but says "changed".
func withEqual(rl rotation.Reloader, spec config.ReloadSpec) rotation.Reloader {
	if _, ok := rl.(selfComparing); ok {
		return rl
	}
	switch s := spec.(type) {
	case *config.RedisReload:
		return keyed[config.RedisReload]{rl, *s}
	case *config.TraefikReload:
		return keyed[config.TraefikReload]{rl, *s}
	}
	return rl
}

// outputProblem points an error of rotation's at the output's line in
// next (and its field, when rotation names one).
func outputProblem(next *config.Config, err error) error {
	var oe *rotation.OutputError
	if errors.As(err, &oe) {
		for i, o := range next.Outputs {
			if o.Name != oe.Output {
				continue
			}
			field := fmt.Sprintf("outputs[%d]", i)
			if oe.Field != "" {
				field += "." + oe.Field
			}
			return next.At(field, oe.Err)
		}
	}
	return fmt.Errorf("%s: outputs: %w", next.Path, err)
}

// selfComparing is a reloader rotation.Output.Equal asks to compare
// itself.
type selfComparing interface {
	Equal(other rotation.Reloader) bool
}

// keyed is a reloader this package builds with the settings K it was
// built from: two are Equal (rotation.Output.Equal, the reload diff) when
// their settings are. It forwards only the Reloader methods: the kinds
// wrapped (redis, traefik) implement no optional rotation interface.
type keyed[K comparable] struct {
	rotation.Reloader
	key K
}

// Equal is true for a reloader built from the same settings.
func (k keyed[K]) Equal(other rotation.Reloader) bool {
	o, ok := other.(keyed[K])
	return ok && k.key == o.key
}
