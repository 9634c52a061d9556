package service

import (
	"maps"
	"net"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/identity-agent/identity-agent/internal/config"
)

// The directories systemd creates and leaves writable for the unit
// (RuntimeDirectory=, StateDirectory=); nothing under them needs a
// ReadWritePaths= line.
const (
	RuntimeDir = "/run/identity-agent"
	StateDir   = "/var/lib/identity-agent"
)

// Layout is what the service definition and `service prepare` need to know
// about an agent config.
type Layout struct {
	// WritableDirs: every directory the agent writes into outside
	// RuntimeDir/StateDir (outputs, traefik dynamic files, the Redis
	// transition state file, unix listeners). InstallConfig.OutputDirs.
	WritableDirs []string
	// ListenSockets: the admin socket and the proxies' unix listeners, whose
	// directories Prepare creates.
	ListenSockets []string
	// OutputDirs: every output's dir (also those under RuntimeDir or
	// StateDir), which Prepare creates with OutputGroups[dir] as group.
	OutputDirs []string
	// OutputGroups: an output dir's group, the output owner's ("" none).
	OutputGroups map[string]string
	// WorkloadAPISocket as configured (after defaults).
	WorkloadAPISocket string
	// ExtraCapabilities the config needs beyond CAP_CHOWN: CAP_KILL for
	// signal reloads (their targets usually run as another user),
	// CAP_NET_BIND_SERVICE for a proxy on a port below 1024.
	ExtraCapabilities []string
}

// LayoutFromConfig derives the Layout from a loaded (defaulted, validated)
// config.
func LayoutFromConfig(c *config.Config) Layout {
	var l Layout
	writable := func(dir string) {
		if dir == "" || under(dir, RuntimeDir) || under(dir, StateDir) {
			return
		}
		l.WritableDirs = append(l.WritableDirs, dir)
	}
	caps := map[string]bool{}
	l.OutputGroups = map[string]string{}
	for _, o := range c.Outputs {
		writable(o.Dir)
		if o.Dir != "" {
			l.OutputDirs = append(l.OutputDirs, filepath.Clean(o.Dir))
			if g := ownerGroup(o.Owner); g != "" {
				l.OutputGroups[filepath.Clean(o.Dir)] = g
			}
		}
		for _, r := range o.Reload {
			// What a kind needs is the kind's to say (config.ServiceNeeds).
			needs := r.ServiceNeeds()
			for _, d := range needs.WritableDirs {
				writable(d)
			}
			for _, cp := range needs.Capabilities {
				caps[cp] = true
			}
		}
	}
	if c.Redis != nil && c.Redis.Transition != nil && c.Redis.Transition.StateFile != "" {
		writable(filepath.Dir(c.Redis.Transition.StateFile))
	}
	if c.Admin.Socket != "" {
		l.ListenSockets = append(l.ListenSockets, c.Admin.Socket)
	}
	for _, p := range c.Proxies {
		if path, ok := unixPath(p.Listen); ok {
			l.ListenSockets = append(l.ListenSockets, path)
			writable(filepath.Dir(path))
			continue
		}
		if _, port, err := net.SplitHostPort(p.Listen); err == nil {
			if n, err := strconv.Atoi(port); err == nil && n > 0 && n < 1024 {
				caps["CAP_NET_BIND_SERVICE"] = true
			}
		}
	}
	l.WorkloadAPISocket = c.WorkloadAPI.Socket
	for cp := range caps {
		l.ExtraCapabilities = append(l.ExtraCapabilities, cp)
	}
	slices.Sort(l.ExtraCapabilities)
	slices.Sort(l.WritableDirs)
	l.WritableDirs = slices.Compact(l.WritableDirs)
	return l
}

func unixPath(addr string) (string, bool) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		return p, true
	}
	if strings.HasPrefix(addr, "/") {
		return addr, true
	}
	return "", false
}

// InstallConfig returns the InstallConfig for this layout; empty fields
// take the platform defaults when rendered.
func (l Layout) InstallConfig(configPath, user string) InstallConfig {
	return InstallConfig{
		ConfigPath:        configPath,
		User:              user,
		OutputDirs:        slices.Clone(l.WritableDirs),
		OutputGroups:      maps.Clone(l.OutputGroups),
		WorkloadAPISocket: l.WorkloadAPISocket,
		ExtraCapabilities: slices.Clone(l.ExtraCapabilities),
	}
}

// ownerGroup is the group an output's files (and so its directory) get:
// the owner's group, else the owner user's primary group, else none; the
// rule agent.NewPlan applies to the files.
func ownerGroup(o config.Owner) string {
	if o.Group != "" || o.User == "" {
		return o.Group
	}
	if _, err := strconv.Atoi(o.User); err == nil {
		if u, err := user.LookupId(o.User); err == nil {
			return u.Gid
		}
		return ""
	}
	if u, err := user.Lookup(o.User); err == nil {
		return u.Gid
	}
	return ""
}

// Prepare creates the layout's directories owned by user: each output's
// dir with the group of the output's owner (atomicdir.MakeDir's rule), the
// other writable directories and the listeners' socket directories. It
// is the body of `identity-agent service prepare` (as root, before the
// sandbox starts) and of the same step at the start of `run` and `fetch`;
// nothing else creates these directories.
func (l Layout) Prepare(user string) error {
	var dirs []Dir
	seen := map[string]bool{}
	for _, d := range l.OutputDirs {
		dirs = append(dirs, OutputDir(d, user, l.OutputGroups[d]))
		seen[d] = true
	}
	for _, d := range l.WritableDirs {
		if !seen[filepath.Clean(d)] {
			// Not written by an atomicdir.Writer (traefik's, the transition's
			// state): may be shared, as before.
			dirs = append(dirs, Dir{Path: d, Mode: OutputDirMode, User: user})
		}
	}
	for _, s := range l.ListenSockets {
		dirs = append(dirs, SocketDir(s, user))
	}
	return EnsureDirs(dirs...)
}
