package agent

import (
	"fmt"
	"io/fs"
	"os/user"
	"strconv"
	"syscall"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// ReloaderFactory builds reloaders for kinds that live outside pkg/rotation
// (redis, traefik); it gets the output so it can name its files.
type ReloaderFactory func(out config.Output, r config.Reload) (rotation.Reloader, error)

// Outputs converts configured outputs to rotation outputs.
func Outputs(cfg *config.Config, extra ReloaderFactory) ([]rotation.Output, error) {
	outs := make([]rotation.Output, 0, len(cfg.Outputs))
	for i, o := range cfg.Outputs {
		owner, err := resolveOwner(o.Owner)
		if err != nil {
			return nil, fmt.Errorf("%s: outputs[%d] (%s): owner: %w", cfg.Path, i, o.Name, err)
		}
		ro := rotation.Output{
			Name:                  o.Name,
			Selector:              svid.Selector{SpiffeID: o.SpiffeID, Hint: o.Hint},
			Dir:                   o.Dir,
			CertFile:              o.CertFile,
			KeyFile:               o.KeyFile,
			BundleFile:            o.BundleFile,
			IncludeFederated:      o.IncludeFederated,
			IntermediatesInBundle: o.IntermediatesInBundle,
			CertMode:              fs.FileMode(o.CertMode),
			KeyMode:               fs.FileMode(o.KeyMode),
			BundleMode:            fs.FileMode(o.BundleMode),
			Owner:                 owner,
			JWTBundleFile:         o.JWTBundleFile,
			JWTBundleMode:         fs.FileMode(o.JWTBundleMode),
		}
		for _, j := range o.JWT {
			ro.JWT = append(ro.JWT, rotation.JWTFile{Audience: j.Audience, File: j.File, Mode: fs.FileMode(j.Mode)})
		}
		if err := applyFormats(&ro, o); err != nil {
			return nil, fmt.Errorf("%s: outputs[%d] (%s): %w", cfg.Path, i, o.Name, err)
		}
		for j, r := range o.Reload {
			rl, err := reloader(o, r, extra)
			if err != nil {
				return nil, fmt.Errorf("%s: outputs[%d].reload[%d] (%s): %w", cfg.Path, i, j, r.Kind(), err)
			}
			ro.Reloads = append(ro.Reloads, rl)
		}
		outs = append(outs, ro)
	}
	return outs, nil
}

var signalNumbers = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
	"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT, "SIGWINCH": syscall.SIGWINCH,
}

func reloader(o config.Output, r config.Reload, extra ReloaderFactory) (rotation.Reloader, error) {
	switch {
	case r.Signal != nil:
		sig, ok := signalNumbers[config.SignalName(r.Signal.Name)]
		if !ok {
			return nil, fmt.Errorf("unsupported signal %q", r.Signal.Name)
		}
		return rotation.NewSignalReloader(r.Signal.PidFile, r.Signal.Pid, sig), nil
	case r.Exec != nil:
		return rotation.NewExecReloader(r.Exec.Command, r.Exec.Timeout.D(config.DefaultExecTimeout)), nil
	case r.Systemd != nil:
		return rotation.NewSystemdReloader(r.Systemd.Unit, r.Systemd.Action), nil
	case r.Launchd != nil:
		return rotation.NewLaunchdReloader(r.Launchd.Label, r.Launchd.Restart == nil || *r.Launchd.Restart), nil
	}
	if extra == nil {
		return nil, fmt.Errorf("reload kind %q is not available here", r.Kind())
	}
	return extra(o, r)
}

// resolveOwner turns user/group names (or numeric ids) into ids; empty
// means "leave as the agent's user".
func resolveOwner(o config.Owner) (svid.Owner, error) {
	owner := svid.Owner{UID: -1, GID: -1}
	if o.User != "" {
		u, err := lookupUser(o.User)
		if err != nil {
			return owner, err
		}
		owner.UID, _ = strconv.Atoi(u.Uid)
		if o.Group == "" {
			owner.GID, _ = strconv.Atoi(u.Gid)
		}
	}
	if o.Group != "" {
		g, err := lookupGroup(o.Group)
		if err != nil {
			return owner, err
		}
		owner.GID, _ = strconv.Atoi(g.Gid)
	}
	return owner, nil
}

func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		u, err := user.LookupId(name)
		if err != nil {
			return &user.User{Uid: name, Gid: "-1"}, nil //nolint:nilerr // a numeric uid need not exist in passwd
		}
		return u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

func lookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return &user.Group{Gid: name}, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return nil, fmt.Errorf("group %q: %w", name, err)
	}
	return g, nil
}
