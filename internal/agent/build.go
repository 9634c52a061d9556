package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// Plan is a configuration converted into what each package takes and
// checked by every rule `run` applies before it starts anything: the
// file's own rules (internal/config), each package's Validate, owners that
// must exist, and what only the whole file shows (two outputs in one
// directory, two listeners on one address). `config validate` and `run`
// both make it with NewPlan. Making a plan changes nothing: no directory,
// socket or file is created and nothing is chowned; it only reads (user
// and group databases, symlinks along output directories).
type Plan struct {
	Config *config.Config
	// Outputs, one per configured output, owners resolved. Reloads holds
	// every reloader, built without the Workload API source: checked, not
	// to be run (New builds them again with the source).
	Outputs []rotation.Output
	// Proxies, one per configured proxy.
	Proxies []tlsproxy.Config
	// Hash is the SHA-256 of the file the plan was made from (status
	// shows it; a reload compares it).
	Hash string
	// Warnings are settings that are legal but probably unintended, as
	// config.Problems.
	Warnings error
}

// Load reads the file at path and plans it: every problem of the file and
// of the plan is reported at once, as config.Problems sorted by line.
// The file is used only once it has held still for SettleInterval (two
// identical reads; see readSettled), so `run`, `config validate` and a
// reload all read it by one rule.
func Load(path string, getenv func(string) string) (*Plan, error) {
	return load(context.Background(), path, getenv, Self())
}

// LoadAs is Load checked for the agent running as as instead of as this
// process's user: `config validate --user NAME`, and the root steps of a
// service (`service prepare`, `install`) that check for the service's user.
// Like Load, it only reads.
func LoadAs(path string, getenv func(string) string, as RunAs) (*Plan, error) {
	return load(context.Background(), path, getenv, as)
}

// RunAs is the user a plan is checked for: the one the agent runs as, whose
// every existing output directory must be (atomicdir.CheckDir).
type RunAs struct {
	UID int
	// Name names the user in messages; "" = "the agent's user".
	Name string
	// Hint, when set, is called for an output directory refused because
	// uid owner owns it; what it returns ("" = nothing) is appended to
	// that one line (e.g. how to check as the service's user instead).
	Hint func(owner int) string
	// SettingsOnly leaves the owner rule out: for a command that reads the
	// config for its settings and writes no output dir (`redis
	// transition`), which root runs next to a service whose user owns the
	// dirs. Not for anything that runs the agent or judges its config.
	SettingsOnly bool
}

// Self is RunAs for this process's effective user: what `run` and a
// reload check.
func Self() RunAs { return RunAs{UID: os.Geteuid()} }

func (r RunAs) who() string {
	if r.Name == "" {
		return "the agent's user"
	}
	return r.Name
}

// NewPlan converts and checks cfg (see Plan) for this process's user. The
// error is config.Problems.
func NewPlan(cfg *config.Config) (*Plan, error) { return newPlan(cfg, Self()) }

func newPlan(cfg *config.Config, as RunAs) (*Plan, error) {
	p := &Plan{Config: cfg}
	var errs, warns []error
	for i, o := range cfg.Outputs {
		at := fmt.Sprintf("outputs[%d]", i)
		ro, err := convertOutput(cfg, at, o)
		errs = append(errs, err)
		// The reloads were checked one by one, each at its own line.
		bare := ro
		bare.Reloads = nil
		if err := bare.Validate(); err != nil {
			errs = append(errs, cfg.At(at, err))
		}
		for _, w := range ro.Warnings() {
			warns = append(warns, cfg.At(at, w))
		}
		p.Outputs = append(p.Outputs, ro)
	}
	errs = append(errs, checkOutputDirs(cfg), checkOutputDirOwners(cfg, as))
	for i, pc := range cfg.Proxies {
		tc := ProxyConfig(pc)
		if err := tc.Validate(); err != nil {
			errs = append(errs, cfg.At(fmt.Sprintf("proxies[%d]", i), err))
		}
		p.Proxies = append(p.Proxies, tc)
	}
	errs = append(errs, checkListeners(cfg, p.Proxies))
	warns = append(warns, cfg.AllowTrustDomainWarnings()...)
	if t := redisTransition(cfg); t != nil {
		errs = append(errs, cfg.At("redis.transition.admin", t.Admin.CheckAdmin()))
	}
	if err := config.Join(errs...); err != nil {
		return nil, err
	}
	p.Warnings = config.Join(warns...)
	return p, nil
}

// convertOutput builds the rotation.Output of o; problems (unknown owner,
// a reload the packages refuse) come back with their lines.
func convertOutput(cfg *config.Config, at string, o config.Output) (rotation.Output, error) {
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
		// Built without the Workload API source: checked here, built
		// again by New (Outputs).
		rl, err := r.Build(config.ReloadEnv{Output: o, Owner: owner})
		if err != nil {
			errs = append(errs, cfg.At(fmt.Sprintf("%s.reload[%d]", at, j), err))
		}
		ro.Reloads = append(ro.Reloads, rl)
	}
	return ro, config.Join(errs...)
}

// Outputs converts configured outputs to rotation outputs, their
// reloaders built with env (the Workload API source, logger, registry).
func Outputs(cfg *config.Config, env config.ReloadEnv) ([]rotation.Output, error) {
	p, err := NewPlan(cfg)
	if err != nil {
		return nil, err
	}
	outs := make([]rotation.Output, len(p.Outputs))
	for i, ro := range p.Outputs {
		o := cfg.Outputs[i]
		env.Output, env.Owner = o, ro.Owner
		ro.Reloads = make([]rotation.Reloader, len(o.Reload))
		for j, r := range o.Reload {
			if ro.Reloads[j], err = r.Build(env); err != nil {
				return nil, fmt.Errorf("%s: outputs[%d].reload[%d] (%s): %w", cfg.Path, i, j, r.Kind(), err)
			}
		}
		outs[i] = ro
	}
	return outs, nil
}

func redisTransition(cfg *config.Config) *config.RedisTransition {
	if cfg.Redis == nil {
		return nil
	}
	return cfg.Redis.Transition
}

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
func checkListeners(cfg *config.Config, proxies []tlsproxy.Config) error {
	type listener struct{ field, addr string }
	var all []listener
	if cfg.Admin.MetricsListen != "" {
		all = append(all, listener{"admin.metrics_listen", cfg.Admin.MetricsListen})
	}
	if cfg.Admin.Socket != "" {
		all = append(all, listener{"admin.socket", "unix://" + filepath.Clean(strings.TrimPrefix(cfg.Admin.Socket, "unix://"))})
	}
	var errs []error
	for i, pc := range proxies {
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

// ownerError is an owner user or group that does not resolve; field is
// "user" or "group".
type ownerError struct {
	field string
	err   error
}

func (e *ownerError) Error() string     { return e.field + ": " + e.err.Error() }
func (e *ownerError) Unwrap() error     { return e.err }
func (e *ownerError) FieldName() string { return e.field }

// resolveOwner turns user/group names (or numeric ids) into ids; empty
// means "leave as the agent's user".
func resolveOwner(o config.Owner) (atomicdir.Owner, error) {
	owner := atomicdir.Owner{UID: -1, GID: -1}
	var errs []error
	if o.User != "" {
		u, err := lookupUser(o.User)
		if err != nil {
			errs = append(errs, &ownerError{"user", err})
		} else {
			owner.UID, _ = strconv.Atoi(u.Uid)
			if o.Group == "" {
				owner.GID, _ = strconv.Atoi(u.Gid)
			}
		}
	}
	if o.Group != "" {
		g, err := lookupGroup(o.Group)
		if err != nil {
			errs = append(errs, &ownerError{"group", err})
		} else {
			owner.GID, _ = strconv.Atoi(g.Gid)
		}
	}
	return owner, errors.Join(errs...)
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
		return nil, fmt.Errorf("user %q does not exist on this host", name)
	}
	return u, nil
}

func lookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return &user.Group{Gid: name}, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return nil, fmt.Errorf("group %q does not exist on this host", name)
	}
	return g, nil
}

// Parse is Load for bytes already read; path is used in messages.
func Parse(path string, data []byte, getenv func(string) string) (*Plan, error) {
	return parse(path, data, getenv, Self())
}

func parse(path string, data []byte, getenv func(string) string, as RunAs) (*Plan, error) {
	cfg, err := config.Parse(path, data, getenv)
	if cfg == nil {
		return nil, err
	}
	p, perr := newPlan(cfg, as)
	if all := config.Join(err, withoutEchoes(perr, err)); all != nil {
		return nil, all
	}
	sum := sha256.Sum256(data)
	p.Hash = hex.EncodeToString(sum[:])
	return p, nil
}

// withoutEchoes drops the plan's problems with a field that a problem of
// the file's decoding names too, or inside or around it: one mistake
// (`exec: {command: "a string"}`) is one line, not also "empty command"
// for the value the decoder could not take.
func withoutEchoes(plan, decode error) error {
	var ps, ds config.Problems
	if !errors.As(plan, &ps) || !errors.As(decode, &ds) {
		return plan
	}
	related := func(a, b string) bool {
		return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
	}
	var keep []error
	for _, p := range ps {
		if !slices.ContainsFunc(ds, func(d *config.Problem) bool { return related(p.Field, d.Field) }) {
			keep = append(keep, p)
		}
	}
	return config.Join(keep...)
}
