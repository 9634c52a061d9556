package config

import (
	"cmp"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/internal/unixsock"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// applyDefaults fills the file's empty fields, each from the constant of
// the package that consumes it (rotation.DefaultKeyMode,
// redistransition.DefaultPlainPort, ...): the one default, applied here
// for the file so that the Config (and the reload diff) holds the
// effective values; those packages' constructors fill a zero value from
// the same constant for their library callers. Nothing in between applies
// a default again.
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
	r.ExpiryWindow = Duration(r.ExpiryWindow.D(rotation.DefaultExpiryWindow))
	r.Debounce = Duration(r.Debounce.D(rotation.DefaultDebounce))
	r.RetryMin = Duration(r.RetryMin.D(rotation.DefaultRetryMin))
	r.RetryMax = Duration(r.RetryMax.D(rotation.DefaultRetryMax))
	if r.Guard == nil {
		t := true
		r.Guard = &t
	}
	for i := range c.Outputs {
		o := &c.Outputs[i]
		o.CertMode = FileMode(o.CertMode.Or(rotation.DefaultCertMode))
		o.KeyMode = FileMode(o.KeyMode.Or(rotation.DefaultKeyMode))
		o.BundleMode = FileMode(o.BundleMode.Or(rotation.DefaultBundleMode))
		o.JWTBundleMode = FileMode(o.JWTBundleMode.Or(rotation.DefaultJWTBundleMode))
		for j := range o.JWT {
			o.JWT[j].Mode = FileMode(o.JWT[j].Mode.Or(rotation.DefaultJWTMode))
		}
		defaultFormats(o)
		for _, rl := range o.Reload {
			rl.applyDefaults()
		}
	}
	for i := range c.Proxies {
		defaultAuthz(c.Proxies[i].kinds())
	}
	if c.Redis != nil && c.Redis.Transition != nil {
		t := c.Redis.Transition
		t.PlainPort = cmp.Or(t.PlainPort, redistransition.DefaultPlainPort)
		t.TLSPort = cmp.Or(t.TLSPort, redistransition.DefaultTLSPort)
		t.Window = Duration(t.Window.D(redistransition.DefaultWindow))
		t.SampleInterval = Duration(t.SampleInterval.D(redistransition.DefaultSampleInterval))
		t.MaxSampleGap = Duration(t.MaxSampleGap.D(redistransition.DefaultMaxSampleGap))
		if t.ServerID == "" {
			t.ServerID = t.Admin.ServerID
		}
		if t.PasswordFile == "" {
			t.PasswordFile = t.Admin.PasswordFile
		}
	}
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// validate makes the checks that concern the file itself: its shape
// (one reload kind per entry, names), paths that must be absolute, and
// references between sections. What a package consumes is checked by that
// package's Validate, which agent.Plan calls with the converted settings.
func (c *Config) validate(v *validator) {
	if c.WorkloadAPI.Socket == "" {
		v.errorf(path("workload_api", "socket"), "no Workload API address: set it or export %s", EnvEndpointSocket)
	} else if rest, ok := strings.CutPrefix(c.WorkloadAPI.Socket, "unix://"); ok {
		if !filepath.IsAbs(rest) {
			v.errorf(path("workload_api", "socket"), "%q must name an absolute path (unix:///path)", c.WorkloadAPI.Socket)
		}
	} else if hp, ok := strings.CutPrefix(c.WorkloadAPI.Socket, "tcp://"); ok {
		// go-spiffe dials only an IP and a port; anything else fails at
		// every connection attempt instead of here.
		host, port, err := net.SplitHostPort(hp)
		if err == nil && net.ParseIP(host) == nil {
			err = fmt.Errorf("%q is not an IP address", host)
		}
		if n, perr := strconv.Atoi(port); err == nil && (perr != nil || n < 1 || n > 65535) {
			err = fmt.Errorf("port %q is not 1-65535", port)
		}
		if err != nil {
			v.errorf(path("workload_api", "socket"), "%q must be tcp://IP:port: %v", c.WorkloadAPI.Socket, err)
		}
	} else {
		v.errorf(path("workload_api", "socket"), "%q must start with unix:// (or tcp://)", c.WorkloadAPI.Socket)
	}
	if err := svid.ValidateRetryMax(c.WorkloadAPI.RetryMax.D(svid.DefaultRetryMax)); err != nil {
		v.errorf(path("workload_api", "retry_max"), "%v", err)
	}
	checkAbs(v, path("admin", "socket"), strings.TrimPrefix(c.Admin.Socket, "unix://"))
	checkSocketPath(v, path("admin", "socket"), c.Admin.Socket)
	checkSocketPath(v, path("workload_api", "socket"), c.WorkloadAPI.Socket)
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
	if len(c.Outputs) == 0 && len(c.Proxies) == 0 && !c.AllowEmpty {
		v.errorf(path(), "no outputs and no proxies: the agent would do nothing, and a reload of this file would stop everything it runs (set allow_empty: true if that is meant)")
	}

	names := map[string]int{}
	for i, o := range c.Outputs {
		p := func(elems ...any) []any { return append([]any{"outputs", i}, elems...) }
		switch {
		case o.Name == "":
			// rotation.Output.Validate reports it.
		case !nameRE.MatchString(o.Name):
			v.errorf(p("name"), "%q may hold only letters, digits, '.', '_' and '-'", o.Name)
		default:
			if j, dup := names[o.Name]; dup {
				v.errorf(p("name"), "%q is also the name of outputs[%d]", o.Name, j)
			}
			names[o.Name] = i
		}
		if o.Dir != "" {
			checkAbs(v, p("dir"), o.Dir)
		}
		checkSelector(v, p(), o.SpiffeID, o.Hint)
		if o.CertFile != "" && o.KeyFile == "" {
			v.errorf(p("cert_file"), "needs key_file too: cert_file and key_file go together")
		}
		if o.KeyFile != "" && o.CertFile == "" {
			v.errorf(p("key_file"), "needs cert_file too: cert_file and key_file go together")
		}
		validateFormats(v, p, o)
		for j, rl := range o.Reload {
			checkReload(v, p("reload", j), rl, o)
		}
	}

	proxyNames := map[string]int{}
	for i, px := range c.Proxies {
		p := func(elems ...any) []any { return append([]any{"proxies", i}, elems...) }
		if px.Name != "" {
			if j, dup := proxyNames[px.Name]; dup {
				v.errorf(p("name"), "%q is also the name of proxies[%d]", px.Name, j)
			} else {
				proxyNames[px.Name] = i
			}
		}
		checkSelector(v, p(), px.SpiffeID, px.Hint)
		checkSocketPath(v, p("listen"), px.Listen)
		checkSocketPath(v, p("target"), px.Target)
		checkAuthz(v, p, px.kinds())
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
		for _, f := range []struct{ name, val string }{
			{"state_file", t.StateFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile},
			{"ca_cert_file", t.CACertFile}, {"password_file", t.PasswordFile},
		} {
			if f.val != "" {
				checkAbs(v, p(f.name), f.val)
			}
		}
		if t.Admin.PasswordFile != "" {
			checkAbs(v, p("admin", "password_file"), t.Admin.PasswordFile)
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

// checkAbs refuses a relative path: the agent runs from / under a service
// manager, so a path relative to wherever `config validate` ran would name
// another file at run time.
func checkAbs(v *validator, field []any, p string) {
	if p != "" && !filepath.IsAbs(p) {
		v.errorf(field, "%q must be an absolute path", p)
	}
}

// checkSocketPath refuses a unix socket path longer than the kernel takes;
// addr may be "unix:///path", a bare absolute path, or not a socket at all.
func checkSocketPath(v *validator, field []any, addr string) {
	p, ok := strings.CutPrefix(addr, "unix://")
	if !ok && !strings.HasPrefix(addr, "/") {
		return
	}
	if !ok {
		p = addr
	}
	if err := unixsock.CheckPath(p); err != nil {
		v.errorf(field, "%v", err)
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
