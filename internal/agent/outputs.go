package agent

import (
	"errors"
	"fmt"
	"reflect"

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
// when it cannot compare itself (the redis reloader holds its server
// authorizer as a func, the traefik one a logger): it is keyed by the
// settings of its kind it was built from. The output's own settings,
// which reloaders also use, are compared by Output.Equal. So a new kind
// needs nothing here: a reloader comparable by value (or with an Equal)
// is compared as it is, any other by its settings.
func withEqual(rl rotation.Reloader, spec config.ReloadSpec) rotation.Reloader {
	if _, ok := rl.(selfComparing); ok || comparableValue(rl) {
		return rl // Output.Equal compares it itself
	}
	if st, ok := rl.(rotation.StartReloader); ok {
		return keyedStart{st, spec}
	}
	return keyed{rl, spec}
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

// keyed is a reloader this package builds with the settings it was built
// from: two are Equal (rotation.Output.Equal, the reload diff) when their
// kind and settings are.
type keyed struct {
	rotation.Reloader
	spec config.ReloadSpec
}

// Equal is true for a reloader built from the same settings.
func (k keyed) Equal(other rotation.Reloader) bool {
	o, ok := other.(keyed)
	return ok && sameSpec(k.spec, o.spec)
}

// keyedStart is keyed for a reloader that acts differently at start
// (rotation.StartReloader); the wrapper must not hide that.
type keyedStart struct {
	rotation.StartReloader
	spec config.ReloadSpec
}

// Equal is true for a reloader built from the same settings.
func (k keyedStart) Equal(other rotation.Reloader) bool {
	o, ok := other.(keyedStart)
	return ok && sameSpec(k.spec, o.spec)
}

// comparableValue tells whether Output.Equal can compare rl by value (a
// comparable type, or a pointer to one): such a reloader keeps its own
// optional methods (rotation's up-front validation, its timeout) unwrapped.
func comparableValue(rl rotation.Reloader) bool {
	t := reflect.TypeOf(rl)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Comparable()
}

// sameSpec compares the settings of one reload entry as decoded (plain
// values, slices and pointers to values: never funcs or state), so deep
// equality is what "the same settings" means.
func sameSpec(a, b config.ReloadSpec) bool {
	return reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.DeepEqual(a, b)
}
