package service

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/identity-agent/identity-agent/packaging"
)

// Names of the service on each platform. launchd wants a reverse-DNS label.
const (
	SystemdName = "identity-agent"
	LaunchdName = "io.identity-agent"
)

// Defaults used when an InstallConfig field is empty; the reference files in
// packaging/ are rendered with exactly these (plus ReferenceOutputDir).
const (
	DefaultBinaryPath       = "/usr/local/bin/identity-agent"
	DefaultConfigPath       = "/etc/identity-agent/config.yaml"
	DefaultUser             = "identity-agent"
	DefaultDarwinConfigPath = "/usr/local/etc/identity-agent/config.yaml"
	DefaultDarwinUser       = "_identity-agent"
	DefaultDarwinLogDir     = "/Library/Logs/identity-agent"
	DefaultDarwinStateDir   = "/var/db/identity-agent"
	// ReferenceOutputDir is the output directory the reviewed reference unit
	// shows; a real install lists the config's output dirs instead.
	ReferenceOutputDir = "/etc/identity-agent/certs"
)

// BaseCapabilities are always granted: CAP_CHOWN lets the agent hand a written
// key to the service user that reads it (e.g. redis:redis 0600).
var baseCapabilities = []string{"CAP_CHOWN"}

// extraCapabilities are the only ones an operator may add, each for a feature
// of the config (see docs/SERVICE.md). Anything else is refused.
var extraCapabilities = map[string]string{
	"CAP_FOWNER":           "chmod of files already given to another user",
	"CAP_KILL":             "signal reloads of processes of another user",
	"CAP_NET_BIND_SERVICE": "proxy listeners on ports below 1024",
	"CAP_DAC_OVERRIDE":     "output directories the agent does not own",
}

// InstallConfig is what `identity-agent install` needs to render the service
// definition. Empty fields take the platform defaults above.
type InstallConfig struct {
	// ConfigPath is the agent config the service runs with (absolute).
	ConfigPath string
	// User runs the agent; Group defaults to User.
	User, Group string
	// BinaryPath is the installed agent binary (absolute).
	BinaryPath string
	// OutputDirs are the only paths the systemd sandbox leaves writable
	// (besides /run/identity-agent and /var/lib/identity-agent): every
	// output's `dir:`, the directory of every traefik reload `file:`, and the
	// directory of every unix socket the agent listens on elsewhere.
	OutputDirs []string
	// OutputGroups: the group an output directory gets (the output owner's),
	// by directory; install creates the directories with it.
	OutputGroups map[string]string
	// WorkloadAPISocket is the config's workload_api.socket ("unix:///..." or a
	// path). A socket under /tmp is bound into the unit's private /tmp.
	WorkloadAPISocket string
	// ExtraCapabilities beyond CAP_CHOWN, from a fixed allow-list.
	ExtraCapabilities []string
	// CreateUser lets Install create a missing system user (Linux: useradd).
	CreateUser bool
	// LogDir and StateDir are for launchd (macOS) only.
	LogDir, StateDir string
}

// ReferenceConfig is the InstallConfig the files in packaging/ are rendered
// with, for the given platform ("linux" or "darwin").
func ReferenceConfig(goos string) InstallConfig {
	c := InstallConfig{OutputDirs: []string{ReferenceOutputDir}}
	c.applyDefaults(goos)
	return c
}

func (c *InstallConfig) applyDefaults(goos string) {
	darwin := goos == "darwin"
	if c.BinaryPath == "" {
		c.BinaryPath = DefaultBinaryPath
	}
	if c.ConfigPath == "" {
		c.ConfigPath = DefaultConfigPath
		if darwin {
			c.ConfigPath = DefaultDarwinConfigPath
		}
	}
	if c.User == "" {
		c.User = DefaultUser
		if darwin {
			c.User = DefaultDarwinUser
		}
	}
	if c.Group == "" {
		c.Group = c.User
	}
	if c.LogDir == "" {
		c.LogDir = DefaultDarwinLogDir
	}
	if c.StateDir == "" {
		c.StateDir = DefaultDarwinStateDir
	}
}

// safePath is deliberately narrow: no whitespace, quotes, '%' (systemd
// specifiers), '$', '\' or template braces, so values need no escaping in a
// unit file or plist and mean the same in both.
var (
	safePath = regexp.MustCompile(`^/[A-Za-z0-9._/@+:,=-]*$`)
	safeName = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,30}$`)
)

// Paths a sandboxed output directory must not live under: PrivateTmp hides
// /tmp and /var/tmp from everyone else, ProtectHome hides homes, and the API
// file systems are not places for certificates.
var forbiddenOutputRoots = []string{"/tmp", "/var/tmp", "/home", "/root", "/run/user", "/proc", "/sys", "/dev"}

func checkPath(field, p string) error {
	if p == "" {
		return fmt.Errorf("service: %s is empty", field)
	}
	if !safePath.MatchString(p) {
		return fmt.Errorf("service: %s %q must be an absolute path of letters, digits and ._/@+:,=- only", field, p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("service: %s %q is not clean (want %q)", field, p, path.Clean(p))
	}
	return nil
}

func under(p, root string) bool {
	return p == root || strings.HasPrefix(p, root+"/")
}

// validate checks every field and normalises lists (sorted, deduplicated, and
// nested output dirs folded into their parent) so the rendering is stable.
func (c *InstallConfig) validate() error {
	if err := checkPath("binary path", c.BinaryPath); err != nil {
		return err
	}
	if err := checkPath("config path", c.ConfigPath); err != nil {
		return err
	}
	if err := checkPath("log dir", c.LogDir); err != nil {
		return err
	}
	if err := checkPath("state dir", c.StateDir); err != nil {
		return err
	}
	for _, n := range []struct{ field, v string }{{"user", c.User}, {"group", c.Group}} {
		if !safeName.MatchString(n.v) {
			return fmt.Errorf("service: %s %q is not a valid system account name", n.field, n.v)
		}
		if n.v == "root" || n.v == "wheel" {
			return fmt.Errorf("service: %s %q: the service is hardened for a dedicated unprivileged account (default %q)", n.field, n.v, DefaultUser)
		}
	}
	dirs := slices.Clone(c.OutputDirs)
	for _, d := range dirs {
		if err := checkPath("output dir", d); err != nil {
			return err
		}
		if d == "/" {
			return errors.New(`service: output dir "/" would make the whole file system writable`)
		}
		for _, r := range forbiddenOutputRoots {
			if under(d, r) {
				return fmt.Errorf("service: output dir %q is under %s, which the service sandbox hides from other processes; use a directory such as %s/<output>", d, r, ReferenceOutputDir)
			}
		}
	}
	slices.Sort(dirs)
	dirs = slices.Compact(dirs)
	folded := dirs[:0]
	for _, d := range dirs {
		if len(folded) > 0 && under(d, folded[len(folded)-1]) {
			continue
		}
		folded = append(folded, d)
	}
	c.OutputDirs = folded
	caps := make([]string, 0, len(c.ExtraCapabilities))
	for _, cp := range c.ExtraCapabilities {
		u := strings.ToUpper(strings.TrimSpace(cp))
		if !strings.HasPrefix(u, "CAP_") {
			u = "CAP_" + u
		}
		if _, ok := extraCapabilities[u]; !ok {
			return fmt.Errorf("service: capability %q is not one the agent can use (allowed: CAP_FOWNER, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_DAC_OVERRIDE)", cp)
		}
		caps = append(caps, u)
	}
	slices.Sort(caps)
	c.ExtraCapabilities = slices.Compact(caps)
	if c.WorkloadAPISocket != "" {
		if _, err := c.socketBindDir(); err != nil {
			return err
		}
	}
	return nil
}

// socketBindDir returns the Workload API socket's directory when PrivateTmp
// would hide it, or "".
func (c *InstallConfig) socketBindDir() (string, error) {
	p := strings.TrimPrefix(c.WorkloadAPISocket, "unix://")
	if !strings.HasPrefix(p, "/") {
		if strings.Contains(p, "://") {
			// tcp:// Workload API: nothing to bind.
			return "", nil
		}
		return "", fmt.Errorf("service: workload API socket %q must be unix:///abs/path or an absolute path", c.WorkloadAPISocket)
	}
	if err := checkPath("workload API socket", p); err != nil {
		return "", err
	}
	if under(p, "/tmp") || under(p, "/var/tmp") {
		return path.Dir(p), nil
	}
	return "", nil
}

type renderData struct {
	InstallConfig
	Capabilities      []string
	BindReadOnlyPaths []string
	Label             string
}

func (c InstallConfig) data() (renderData, error) {
	d := renderData{InstallConfig: c, Label: LaunchdName}
	d.Capabilities = append(slices.Clone(baseCapabilities), c.ExtraCapabilities...)
	slices.Sort(d.Capabilities)
	if c.WorkloadAPISocket != "" {
		b, err := c.socketBindDir()
		if err != nil {
			return d, err
		}
		if b != "" {
			d.BindReadOnlyPaths = []string{b}
		}
	}
	return d, nil
}

func render(name, src string, c InstallConfig, goos string) ([]byte, error) {
	c.applyDefaults(goos)
	if err := c.validate(); err != nil {
		return nil, err
	}
	d, err := c.data()
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Option("missingkey=error").
		Funcs(template.FuncMap{"join": strings.Join, "capReason": func(c string) string { return extraCapabilities[c] }}).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("service: parse %s template: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("service: render %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// RenderSystemdUnit renders packaging/systemd/identity-agent.service.tmpl for
// c (empty fields take the Linux defaults). It is exactly what Install writes.
func RenderSystemdUnit(c InstallConfig) ([]byte, error) {
	return render("systemd unit", packaging.SystemdUnitTemplate(), c, "linux")
}

// RenderLaunchdPlist renders packaging/launchd/io.identity-agent.plist.tmpl
// for c (empty fields take the macOS defaults). It is exactly what Install
// writes on macOS.
func RenderLaunchdPlist(c InstallConfig) ([]byte, error) {
	return render("launchd plist", packaging.LaunchdPlistTemplate(), c, "darwin")
}
