package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/identity-agent/identity-agent/internal/config"
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
		CertFile:               o.CertFile,
		KeyFile:                o.KeyFile,
		BundleFile:             o.BundleFile,
		IncludeFederated:       o.IncludeFederated,
		IntermediatesInBundle:  o.IntermediatesInBundle,
		CertMode:               fs.FileMode(o.CertMode),
		KeyMode:                fs.FileMode(o.KeyMode),
		BundleMode:             fs.FileMode(o.BundleMode),
		Owner:                  owner,
		JWTBundleFile:          o.JWTBundleFile,
		JWTBundleMode:          fs.FileMode(o.JWTBundleMode),
		UnsafeWorldReadableKey: o.UnsafeWorldReadableKey,
	}
	for _, j := range o.JWT {
		ro.JWT = append(ro.JWT, rotation.JWTFile{Audience: j.Audience, File: j.File, Mode: fs.FileMode(j.Mode)})
	}
	if err := applyFormats(&ro, o); err != nil {
		errs = append(errs, cfg.At(at, err))
	}
	for j, r := range o.Reload {
		field := fmt.Sprintf("%s.reload[%d]", at, j)
		rl, sub, err := buildReloader(env, o, r)
		if sub != "" {
			field += "." + sub
		}
		if err != nil {
			errs = append(errs, cfg.At(field, err))
		}
		ro.Reloads = append(ro.Reloads, rl)
	}
	return ro, config.Join(errs...)
}

// buildReloader builds the reloader r of output o with env, and checks it
// by the rules only its package knows. The problem, if any, is at field
// sub (below the reload's own line) when sub is not "". It is the one
// place a reload kind becomes a rotation.Reloader.
func buildReloader(env Env, o config.Output, r config.Reload) (rl rotation.Reloader, sub string, err error) {
	switch {
	case r.Redis != nil:
		rl, err = redisReloader(env, o, r.Redis)
		return rl, "redis", err
	case r.Traefik != nil:
		t := r.Traefik
		rl, err = traefikReloader(env, o, t)
		var oe *ownerError // reported once, at owner
		// What the traefik package checks beyond the file's rules (an
		// absolute file, a mode with nothing for other), which report
		// those first.
		if err != nil && (errors.As(err, &oe) || !filepath.IsAbs(t.File) || t.Mode&0o007 != 0) {
			return nil, "", nil
		}
		if err != nil {
			return nil, "traefik", errors.New(strings.TrimPrefix(err.Error(), "traefik: "))
		}
		return rl, "", nil
	}
	rl, err = basicReloader(r)
	if err == nil && rl != nil {
		err = rotation.ValidateReloader(rl)
	}
	if err == nil && rl == nil {
		err = fmt.Errorf("reload kind %q is not supported", r.Kind())
	}
	return rl, "", err
}

// basicReloader builds the reload kinds pkg/rotation implements; nil, nil
// for the others.
func basicReloader(r config.Reload) (rotation.Reloader, error) {
	switch {
	case r.Signal != nil:
		sig, err := rotation.ParseSignal(r.Signal.Name)
		if err != nil {
			return nil, &fieldError{field: "signal.name", err: err}
		}
		return rotation.NewSignalReloader(r.Signal.PidFile, r.Signal.Pid, sig), nil
	case r.Exec != nil:
		return rotation.NewExecReloader(r.Exec.Command, r.Exec.Timeout.D(config.DefaultExecTimeout)), nil
	case r.Systemd != nil:
		return rotation.NewSystemdReloader(r.Systemd.Unit, r.Systemd.Action), nil
	case r.Launchd != nil:
		return rotation.NewLaunchdReloader(r.Launchd.Label, r.Launchd.Restart == nil || *r.Launchd.Restart), nil
	}
	return nil, nil
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

// keyed is a reloader this package builds with the settings K it was
// built from: two are Equal (rotation.Output.Equal, the reload diff) when
// their settings are. It forwards only the Reloader methods: the kinds
// wrapped (redis, traefik) implement no optional rotation interface.
type keyed[K comparable] struct {
	rotation.Reloader
	key K
}

// Equal is true for a reloader built from the same settings.
func (k keyed[K]) Equal(other any) bool {
	o, ok := other.(keyed[K])
	return ok && k.key == o.key
}
