package config

import (
	"net"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// Defaults applied to fields left empty.
const (
	DefaultCertMode   = 0o644
	DefaultKeyMode    = 0o600
	DefaultBundleMode = 0o644
	DefaultJWTMode    = 0o600
	// DefaultExpiryWindow 0 leaves rotation.expiry_window unset: an SVID
	// is overdue when less than a third of its lifetime is left
	// (rotation.DefaultExpiryWindow, rotation.ExpiryOf).
	DefaultExpiryWindow  time.Duration = 0
	DefaultDebounce                    = 100 * time.Millisecond
	DefaultRetryMin                    = time.Second
	DefaultRetryMax                    = time.Minute
	DefaultExecTimeout                 = 30 * time.Second
	DefaultReloadSignal                = "SIGHUP"
	DefaultSystemdAction               = "reload"
)

func (c *Config) applyDefaults(getenv func(string) string) {
	if c.WorkloadAPI.Socket == "" && getenv != nil {
		c.WorkloadAPI.Socket = getenv(EnvEndpointSocket)
	}
	c.WorkloadAPI.RetryMax = Duration(c.WorkloadAPI.RetryMax.D(svid.DefaultRetryMax))
	if c.Admin.Socket == "" {
		c.Admin.Socket = AdminSocketFor(runtime.GOOS)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	r := &c.Rotation
	r.ExpiryWindow = Duration(r.ExpiryWindow.D(DefaultExpiryWindow))
	r.Debounce = Duration(r.Debounce.D(DefaultDebounce))
	r.RetryMin = Duration(r.RetryMin.D(DefaultRetryMin))
	r.RetryMax = Duration(r.RetryMax.D(DefaultRetryMax))
	if r.Guard == nil {
		t := true
		r.Guard = &t
	}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		o.CertMode = FileMode(o.CertMode.Or(DefaultCertMode))
		o.KeyMode = FileMode(o.KeyMode.Or(DefaultKeyMode))
		o.BundleMode = FileMode(o.BundleMode.Or(DefaultBundleMode))
		o.JWTBundleMode = FileMode(o.JWTBundleMode.Or(DefaultBundleMode))
		for j := range o.JWT {
			o.JWT[j].Mode = FileMode(o.JWT[j].Mode.Or(DefaultJWTMode))
		}
		for j := range o.Reload {
			rl := &o.Reload[j]
			if rl.Signal != nil && rl.Signal.Name == "" {
				rl.Signal.Name = DefaultReloadSignal
			}
			if rl.Exec != nil {
				rl.Exec.Timeout = Duration(rl.Exec.Timeout.D(DefaultExecTimeout))
			}
			if rl.Systemd != nil && rl.Systemd.Action == "" {
				rl.Systemd.Action = DefaultSystemdAction
			}
			if rl.Launchd != nil && rl.Launchd.Restart == nil {
				t := true
				rl.Launchd.Restart = &t
			}
			if rl.Traefik != nil && rl.Traefik.Mode == 0 {
				rl.Traefik.Mode = DefaultKeyMode
			}
		}
	}
	if c.Redis != nil && c.Redis.Transition != nil {
		t := c.Redis.Transition
		if t.PlainPort == 0 {
			t.PlainPort = 6379
		}
		if t.TLSPort == 0 {
			t.TLSPort = 6380
		}
		t.Window = Duration(t.Window.D(24 * time.Hour))
		t.SampleInterval = Duration(t.SampleInterval.D(15 * time.Second))
		t.MaxSampleGap = Duration(t.MaxSampleGap.D(10 * time.Minute))
		if t.ServerID == "" {
			t.ServerID = t.Admin.ServerID
		}
		if t.PasswordFile == "" {
			t.PasswordFile = t.Admin.PasswordFile
		}
		for i := range t.HealthChecks {
			t.HealthChecks[i].Timeout = Duration(t.HealthChecks[i].Timeout.D(10 * time.Second))
		}
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

func (c *Config) validate(v *validator) {
	if c.WorkloadAPI.Socket == "" {
		v.errorf(path("workload_api", "socket"), "no Workload API address: set it or export %s", EnvEndpointSocket)
	} else if !strings.HasPrefix(c.WorkloadAPI.Socket, "unix://") && !strings.HasPrefix(c.WorkloadAPI.Socket, "tcp://") {
		v.errorf(path("workload_api", "socket"), "%q must start with unix:// (or tcp://)", c.WorkloadAPI.Socket)
	}
	if err := svid.ValidateRetryMax(c.WorkloadAPI.RetryMax.D(svid.DefaultRetryMax)); err != nil {
		v.errorf(path("workload_api", "retry_max"), "%v", err)
	}
	if c.Admin.MetricsListen != "" {
		checkLoopbackAddr(v, path("admin", "metrics_listen"), c.Admin.MetricsListen)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.errorf(path("log", "level"), "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		v.errorf(path("log", "format"), "%q is not one of json, console", c.Log.Format)
	}
	if c.Rotation.RetryMin > c.Rotation.RetryMax {
		v.errorf(path("rotation", "retry_min"), "is larger than retry_max")
	}

	names := map[string]int{}
	dirs := map[string]int{}
	for i, o := range c.Outputs {
		p := func(elems ...any) []any { return append([]any{"outputs", i}, elems...) }
		switch {
		case o.Name == "":
			v.errorf(p("name"), "is required")
		case !nameRE.MatchString(o.Name):
			v.errorf(p("name"), "%q may hold only letters, digits, '.', '_' and '-'", o.Name)
		default:
			if j, dup := names[o.Name]; dup {
				v.errorf(p("name"), "%q is also the name of outputs[%d]", o.Name, j)
			}
			names[o.Name] = i
		}
		if o.Dir == "" {
			v.errorf(p("dir"), "is required")
		} else {
			clean := filepath.Clean(o.Dir)
			if j, dup := dirs[clean]; dup {
				v.errorf(p("dir"), "%q is also the dir of outputs[%d]; two outputs cannot share a directory", o.Dir, j)
			}
			dirs[clean] = i
		}
		checkSelector(v, p(), o.SpiffeID, o.Hint)
		if o.CertFile != "" && o.KeyFile == "" {
			v.errorf(p("cert_file"), "needs key_file too: cert_file and key_file go together")
		}
		if o.KeyFile != "" && o.CertFile == "" {
			v.errorf(p("key_file"), "needs cert_file too: cert_file and key_file go together")
		}
		if o.CertFile == "" && o.BundleFile == "" && len(o.JWT) == 0 && o.JWTBundleFile == "" && !o.formatsSet() {
			v.errorf(p(), "writes nothing: set cert_file/key_file, bundle_file, combined_file, layout, bundle_dir, pkcs12, jwt or jwt_bundle_file")
		}
		validateFormats(v, p, o)
		files := map[string]string{}
		checkFile := func(field []any, name string) {
			if name == "" {
				return
			}
			if name != filepath.Base(name) || strings.HasPrefix(name, "..") || name == "." {
				v.errorf(field, "%q must be a plain file name inside dir (no '/' and no leading '..')", name)
				return
			}
			if other, dup := files[name]; dup {
				v.errorf(field, "%q is also used by %s", name, other)
			}
			files[name] = fieldName(field)
		}
		checkFile(p("cert_file"), o.CertFile)
		checkFile(p("key_file"), o.KeyFile)
		checkFile(p("bundle_file"), o.BundleFile)
		checkFile(p("jwt_bundle_file"), o.JWTBundleFile)
		for j, jf := range o.JWT {
			if len(jf.Audience) == 0 {
				v.errorf(p("jwt", j, "audience"), "at least one audience is required")
			}
			if jf.File == "" {
				v.errorf(p("jwt", j, "file"), "is required")
			}
			checkFile(p("jwt", j, "file"), jf.File)
		}
		for j, rl := range o.Reload {
			checkReload(v, p("reload", j), rl, o)
		}
	}

	proxyNames := map[string]int{}
	for i, px := range c.Proxies {
		p := func(elems ...any) []any { return append([]any{"proxies", i}, elems...) }
		if px.Name == "" {
			v.errorf(p("name"), "is required")
		} else if j, dup := proxyNames[px.Name]; dup {
			v.errorf(p("name"), "%q is also the name of proxies[%d]", px.Name, j)
		} else {
			proxyNames[px.Name] = i
		}
		if px.Mode != "server" && px.Mode != "client" {
			v.errorf(p("mode"), "%q must be server or client", px.Mode)
		}
		checkSelector(v, p(), px.SpiffeID, px.Hint)
		if px.Listen == "" {
			v.errorf(p("listen"), "is required")
		}
		if px.Target == "" {
			v.errorf(p("target"), "is required")
		}
		if len(px.Allow) == 0 {
			v.errorf(p("allow"), "is required: list the peer SPIFFE IDs to accept (there is no allow-anyone)")
		}
		for j, a := range px.Allow {
			// The proxy's own parser, so the forms accepted here are
			// exactly the ones the proxy enforces.
			if _, err := tlsproxy.ParseAllow([]string{a}); err != nil {
				v.errorf(p("allow", j), "%s", strings.TrimPrefix(err.Error(), "allow[0] "))
			}
		}
		for _, n := range []struct {
			field string
			val   int
		}{{"max_conns", px.MaxConns}, {"max_handshakes", px.MaxHandshakes}, {"max_handshakes_per_source", px.MaxHandshakesPerSource}} {
			if n.val < 0 {
				v.errorf(p(n.field), "must not be negative")
			}
		}
	}

	if c.Redis != nil && c.Redis.Transition != nil {
		t := c.Redis.Transition
		p := func(elems ...any) []any { return append([]any{"redis", "transition"}, elems...) }
		if t.Admin.Addr == "" {
			v.errorf(p("admin", "addr"), "is required")
		}
		if t.StateFile == "" {
			v.errorf(p("state_file"), "is required (the plaintext-idle window must survive restarts)")
		}
		for _, f := range []struct{ name, val string }{{"spiffe_id", t.SpiffeID}, {"server_id", t.ServerID}} {
			if f.val == "" {
				continue
			}
			if _, err := spiffeid.FromString(f.val); err != nil {
				v.errorf(p(f.name), "%q: %v", f.val, err)
			}
		}
		if t.PlainPort == t.TLSPort {
			v.errorf(p("tls_port"), "must differ from plain_port (%d)", t.PlainPort)
		}
		for i, hc := range t.HealthChecks {
			if hc.Name == "" {
				v.errorf(p("health_checks", i, "name"), "is required")
			}
			if (hc.HTTP == "") == (len(hc.Exec) == 0) {
				v.errorf(p("health_checks", i), "set exactly one of http and exec")
			}
		}
	}
}

func checkSelector(v *validator, base []any, id, hint string) {
	if id != "" && hint != "" {
		v.errorf(append(base, "hint"), "set spiffe_id or hint, not both")
	}
	if id != "" {
		if _, err := spiffeid.FromString(id); err != nil {
			v.errorf(append(base, "spiffe_id"), "%q: %v", id, err)
		}
	}
}

func checkLoopbackAddr(v *validator, field []any, addr string) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(field, "%q: %v", addr, err)
		return
	}
	if host == "localhost" {
		return
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		v.errorf(field, "%q must be a loopback address", addr)
	}
}

var signals = map[string]bool{"SIGHUP": true, "SIGUSR1": true, "SIGUSR2": true, "SIGTERM": true, "SIGINT": true, "SIGQUIT": true, "SIGWINCH": true}

// SignalName normalises "HUP" to "SIGHUP".
func SignalName(s string) string {
	s = strings.ToUpper(s)
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	return s
}

func checkReload(v *validator, p []any, rl Reload, o Output) {
	kind := rl.Kind()
	if kind == "" {
		v.errorf(p, "names no action: use one of signal, exec, systemd, launchd, redis, traefik")
		return
	}
	if strings.Contains(kind, "+") {
		v.errorf(p, "sets %s: one action per list entry", strings.ReplaceAll(kind, "+", " and "))
		return
	}
	q := func(elems ...any) []any { return append(append([]any{}, p...), elems...) }
	switch {
	case rl.Signal != nil:
		s := rl.Signal
		if (s.PidFile == "") == (s.Pid == 0) {
			v.errorf(q("signal"), "set exactly one of pid_file and pid")
		}
		if s.Pid < 0 {
			v.errorf(q("signal", "pid"), "must be positive")
		}
		if !signals[SignalName(s.Name)] {
			v.errorf(q("signal", "name"), "%q is not a supported signal (SIGHUP, SIGUSR1, SIGUSR2, SIGTERM, SIGINT, SIGQUIT, SIGWINCH)", s.Name)
		}
	case rl.Exec != nil:
		if len(rl.Exec.Command) == 0 || rl.Exec.Command[0] == "" {
			v.errorf(q("exec", "command"), "is required, as a list: [program, arg, ...]")
		}
	case rl.Systemd != nil:
		if rl.Systemd.Unit == "" {
			v.errorf(q("systemd", "unit"), "is required")
		}
		switch rl.Systemd.Action {
		case "reload", "restart", "try-restart", "reload-or-restart":
		default:
			v.errorf(q("systemd", "action"), "%q must be reload, restart, try-restart or reload-or-restart", rl.Systemd.Action)
		}
	case rl.Launchd != nil:
		if rl.Launchd.Label == "" {
			v.errorf(q("launchd", "label"), "is required")
		}
	case rl.Redis != nil:
		if rl.Redis.Addr == "" {
			v.errorf(q("redis", "addr"), "is required")
		}
		if o.CertFile == "" {
			v.errorf(q("redis"), "needs the output to write cert_file and key_file")
		}
		if rl.Redis.ServerID != "" {
			if _, err := spiffeid.FromString(rl.Redis.ServerID); err != nil {
				v.errorf(q("redis", "server_id"), "%v", err)
			}
		}
	case rl.Traefik != nil:
		if rl.Traefik.File == "" {
			v.errorf(q("traefik", "file"), "is required")
		} else if !filepath.IsAbs(rl.Traefik.File) {
			v.errorf(q("traefik", "file"), "%q must be an absolute path", rl.Traefik.File)
		}
		if o.CertFile == "" || o.BundleFile == "" {
			v.errorf(q("traefik"), "needs the output to write cert_file, key_file and bundle_file")
		}
		if id := rl.Traefik.PeerSpiffeID; id != "" {
			if _, err := spiffeid.FromString(id); err != nil {
				v.errorf(q("traefik", "peer_spiffe_id"), "%q: %v", id, err)
			}
		}
		if rl.Traefik.Mode&0o007 != 0 {
			v.errorf(q("traefik", "mode"), "%04o lets every user read the inline private key; use 0600 or 0640", uint32(rl.Traefik.Mode))
		}
	}
}
