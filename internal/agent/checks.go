package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// checkOutputDirs refuses two outputs whose directories are one (after
// cleaning and following the symlinks that exist today) or where one lies
// inside the other: each atomicdir.Writer owns its directory's links and prunes
// what it does not know.
func checkOutputDirs(cfg *config.Config) error {
	type seen struct {
		i    int
		real string
	}
	var prev []seen
	var errs []error
	for i, o := range cfg.Outputs {
		if o.Dir == "" || !filepath.IsAbs(o.Dir) {
			continue // reported by the file's own checks
		}
		real := resolveExisting(o.Dir)
		for _, s := range prev {
			field := fmt.Sprintf("outputs[%d].dir", i)
			switch {
			case real == s.real:
				errs = append(errs, cfg.Problemf(field, "%q is also the dir of outputs[%d]%s; two outputs cannot share a directory", o.Dir, s.i, via(o.Dir, real)))
			case within(real, s.real):
				errs = append(errs, cfg.Problemf(field, "%q is inside outputs[%d].dir %q; output directories must not nest", o.Dir, s.i, cfg.Outputs[s.i].Dir))
			case within(s.real, real):
				errs = append(errs, cfg.Problemf(field, "%q contains outputs[%d].dir %q; output directories must not nest", o.Dir, s.i, cfg.Outputs[s.i].Dir))
			}
		}
		prev = append(prev, seen{i, real})
	}
	return config.Join(errs...)
}

// checkOutputDirOwners applies atomicdir.CheckDir, the rule `service
// prepare` and the writer apply too, to each output directory that exists
// today: a real directory (a symlinked one is refused here as by `run`),
// owned by the user the agent runs as (as). A directory someone else owns
// would let them swap what the agent later chmods or removes by name. A
// path this user cannot look at is not a finding about the directory:
// `run` reports it when it gets there, as before.
func checkOutputDirOwners(cfg *config.Config, as RunAs) error {
	if as.SettingsOnly {
		return nil
	}
	var errs []error
	for i, o := range cfg.Outputs {
		if o.Dir == "" || !filepath.IsAbs(o.Dir) {
			continue // reported by the file's own checks
		}
		dir := filepath.Clean(o.Dir)
		err := atomicdir.CheckDir(dir, as.UID, as.who())
		var de *atomicdir.DirError
		if errors.As(err, &de) {
			errs = append(errs, cfg.Problemf(fmt.Sprintf("outputs[%d].dir", i), "%q %s%s", o.Dir, de.Problem, ownerHint(dir, as)))
		}
	}
	return config.Join(errs...)
}

// ownerHint is as.Hint's text for dir when dir is a directory refused for
// its owner ("" otherwise). It looks again: the refusal does not carry the
// owner, and a hint needs no more than a fresh look.
func ownerHint(dir string, as RunAs) string {
	if as.Hint == nil {
		return ""
	}
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == as.UID {
		return ""
	}
	return as.Hint(int(st.Uid))
}

func via(dir, real string) string {
	if filepath.Clean(dir) == real {
		return ""
	}
	return " (both are " + real + ")"
}

func within(p, dir string) bool {
	return strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
}

// resolveExisting cleans p and follows the symlinks of the longest prefix
// that exists, so that /srv/link/x and /srv/real/x compare equal before
// either x exists.
func resolveExisting(p string) string {
	p = filepath.Clean(p)
	rest := ""
	for cur := p; ; {
		if real, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(real, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// checkListeners refuses two listeners on one address: two proxies, or a
// proxy and admin.metrics_listen (TCP), or a proxy and the admin socket
// (unix). A wildcard host collides with every host on its port.
func checkListeners(cfg *config.Config, proxies []ProxyPlan) error {
	type listener struct{ field, addr string }
	var all []listener
	if cfg.Admin.MetricsListen != "" {
		all = append(all, listener{"admin.metrics_listen", cfg.Admin.MetricsListen})
	}
	if cfg.Admin.Socket != "" {
		all = append(all, listener{"admin.socket", "unix://" + filepath.Clean(strings.TrimPrefix(cfg.Admin.Socket, "unix://"))})
	}
	var errs []error
	for i, pp := range proxies {
		pc := pp.Config
		addr := pc.ListenAddr()
		if addr == "" {
			continue // tlsproxy's Validate says why
		}
		field := fmt.Sprintf("proxies[%d].listen", i)
		for _, l := range all {
			if sameListener(addr, l.addr) {
				errs = append(errs, cfg.Problemf(field, "%q is also the address of %s", pc.Listen, l.field))
				break
			}
		}
		all = append(all, listener{field[:len(field)-len(".listen")], addr})
	}
	return config.Join(errs...)
}

func sameListener(a, b string) bool {
	if strings.HasPrefix(a, "unix://") || strings.HasPrefix(b, "unix://") {
		return a == b
	}
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	norm := func(h string) string {
		if strings.EqualFold(h, "localhost") {
			return "127.0.0.1"
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsUnspecified() {
				return ""
			}
			return ip.String()
		}
		return strings.ToLower(h)
	}
	ha, hb = norm(ha), norm(hb)
	return ha == hb || ha == "" || hb == ""
}

// fieldError is a problem with the field below the value being checked
// (config.At reads FieldName).
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string     { return e.field + ": " + e.err.Error() }
func (e *fieldError) Unwrap() error     { return e.err }
func (e *fieldError) FieldName() string { return e.field }
