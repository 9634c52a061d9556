package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"

	kservice "github.com/kardianos/service"
)

// State is what Status reports.
type State string

// States of the installed service.
const (
	StateRunning      State = "running"
	StateStopped      State = "stopped"
	StateNotInstalled State = "not-installed"
	StateUnknown      State = "unknown"
)

// Where kardianos/service writes the definitions (system services only).
const (
	SystemdUnitPath  = "/etc/systemd/system/" + SystemdName + ".service"
	LaunchdPlistPath = "/Library/LaunchDaemons/" + LaunchdName + ".plist"
)

// InstallResult says what Install did.
type InstallResult struct {
	Path    string // the unit or plist written
	Changed bool   // false: an identical definition was already installed
	Created []string
}

// noop satisfies kardianos's Interface: this package only manages the
// service definition; the daemon itself is `identity-agent run`.
type noop struct{}

func (noop) Start(kservice.Service) error { return nil }
func (noop) Stop(kservice.Service) error  { return nil }

// platform is the kardianos backend this package supports on this OS.
func platform() (name, want string, err error) {
	switch runtime.GOOS {
	case "linux":
		return SystemdName, "linux-systemd", nil
	case "darwin":
		return LaunchdName, "darwin-launchd", nil
	}
	return "", "", fmt.Errorf("service: %s is not supported (systemd on Linux and launchd on macOS are)", runtime.GOOS)
}

// newService builds the kardianos service with our fully rendered definition
// as its template. kardianos's own template engine only knows a fixed set of
// keys (no ReadWritePaths=, capabilities, ...), so we hand it finished text:
// it contains no "{{" and comes out verbatim, while kardianos still does the
// platform work (file location, enable, daemon-reload, start/stop/status).
func newService(c InstallConfig, definition []byte) (kservice.Service, error) {
	name, want, err := platform()
	if err != nil {
		return nil, err
	}
	if bytes.Contains(definition, []byte("{{")) {
		return nil, errors.New("service: rendered definition contains \"{{\" and would be altered by kardianos/service")
	}
	kc := &kservice.Config{
		Name:        name,
		DisplayName: name,
		Description: "identity-agent: SPIFFE workload identity agent",
		Executable:  c.BinaryPath,
		Arguments:   []string{"run", "--config", c.ConfigPath},
		UserName:    c.User,
		Option:      kservice.KeyValue{},
	}
	if definition != nil {
		kc.Option["SystemdScript"] = string(definition)
		kc.Option["LaunchdConfig"] = string(definition)
	}
	s, err := kservice.New(noop{}, kc)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	if got := s.Platform(); got != want {
		return nil, fmt.Errorf("service: the service manager here is %q; identity-agent installs only as %q", got, want)
	}
	return s, nil
}

// Install renders the reviewed definition for c, creates the service user
// (when c.CreateUser) and the output directories, and installs it with
// kardianos/service (systemd: written to SystemdUnitPath, enabled,
// daemon-reload; launchd: written to LaunchdPlistPath). Re-running it after a
// config change replaces a different definition; the running agent keeps
// running until Restart. It must run as root.
func Install(c InstallConfig) (InstallResult, error) {
	var res InstallResult
	if os.Geteuid() != 0 {
		return res, errors.New("service: install must run as root (sudo identity-agent install ...)")
	}
	if c.BinaryPath == "" {
		exe, err := os.Executable()
		if err != nil {
			return res, fmt.Errorf("service: locate own binary: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return res, fmt.Errorf("service: locate own binary: %w", err)
		}
		c.BinaryPath = exe
	}
	c.applyDefaults(runtime.GOOS)
	var (
		def  []byte
		dest string
		err  error
	)
	switch runtime.GOOS {
	case "darwin":
		def, err = RenderLaunchdPlist(c)
		dest = LaunchdPlistPath
	default:
		def, err = RenderSystemdUnit(c)
		dest = SystemdUnitPath
	}
	if err != nil {
		return res, err
	}
	if err := c.validate(); err != nil { // normalises OutputDirs for EnsureDirs
		return res, err
	}
	res.Path = dest
	s, err := newService(c, def)
	if err != nil {
		return res, err
	}
	if err := ensureUser(c.User, c.CreateUser); err != nil {
		return res, err
	}
	dirs := make([]Dir, 0, len(c.OutputDirs)+2)
	for _, d := range c.OutputDirs {
		dirs = append(dirs, OutputDir(d, c.User, c.OutputGroups[d]))
	}
	if runtime.GOOS == "darwin" {
		// launchd has no RuntimeDirectory=/StateDirectory=: create them here.
		dirs = append(dirs, Dir{Path: c.LogDir, Mode: 0o750, User: c.User}, Dir{Path: c.StateDir, Mode: 0o750, User: c.User})
	}
	if err := EnsureDirs(dirs...); err != nil {
		return res, err
	}
	for _, d := range dirs {
		res.Created = append(res.Created, d.Path)
	}
	old, err := os.ReadFile(dest)
	switch {
	case err == nil && bytes.Equal(old, def):
		return res, nil
	case err == nil:
		// kardianos refuses to overwrite: drop the old file, keep enablement
		// semantics by letting Install enable again.
		if err := os.Remove(dest); err != nil {
			return res, fmt.Errorf("service: replace %s: %w", dest, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return res, fmt.Errorf("service: read %s: %w", dest, err)
	}
	if err := s.Install(); err != nil {
		return res, fmt.Errorf("service: install %s: %w", dest, err)
	}
	res.Changed = true
	// launchd ignores a plist that is group- or world-writable, and
	// kardianos creates it with the process umask: pin the mode.
	if err := os.Chmod(dest, 0o644); err != nil {
		return res, fmt.Errorf("service: chmod %s: %w", dest, err)
	}
	written, err := os.ReadFile(dest)
	if err != nil {
		return res, fmt.Errorf("service: read back %s: %w", dest, err)
	}
	if !bytes.Equal(written, def) {
		return res, fmt.Errorf("service: %s does not match the reviewed template rendering (kardianos/service altered it)", dest)
	}
	return res, nil
}

// ensureUser checks the service account exists and, when allowed, creates it
// as a locked system account (Linux only; macOS accounts are made with dscl,
// see docs/SERVICE.md).
func ensureUser(name string, create bool) error {
	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	if runtime.GOOS != "linux" {
		return fmt.Errorf("service: user %q does not exist; create it first (docs/SERVICE.md, macOS)", name)
	}
	args := []string{"--system", "--user-group", "--no-create-home", "--home-dir", "/var/lib/identity-agent",
		"--shell", "/usr/sbin/nologin", "--comment", "identity-agent", name}
	if !create {
		return fmt.Errorf("service: user %q does not exist; create it with: useradd %s", name, joinArgs(args))
	}
	out, err := exec.Command("useradd", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("service: useradd %s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

func joinArgs(a []string) string {
	var b bytes.Buffer
	for i, s := range a {
		if i > 0 {
			b.WriteByte(' ')
		}
		if bytes.ContainsAny([]byte(s), " \t") {
			s = "'" + s + "'"
		}
		b.WriteString(s)
	}
	return b.String()
}

// control returns a kardianos service for start/stop/status: these only need
// the service name, not the rendered definition.
func control() (kservice.Service, error) {
	var c InstallConfig
	c.applyDefaults(runtime.GOOS)
	return newService(c, nil)
}

// Uninstall stops (launchd), disables and removes the service definition.
// Output files and directories are left in place: services may still read
// them.
func Uninstall() error {
	s, err := control()
	if err != nil {
		return err
	}
	if err := s.Uninstall(); err != nil {
		return fmt.Errorf("service: uninstall: %w", err)
	}
	return nil
}

// Start starts the installed service.
func Start() error { return act("start", func(s kservice.Service) error { return s.Start() }) }

// Stop stops the installed service.
func Stop() error { return act("stop", func(s kservice.Service) error { return s.Stop() }) }

// Restart restarts the installed service (e.g. after a config change).
func Restart() error { return act("restart", func(s kservice.Service) error { return s.Restart() }) }

func act(what string, f func(kservice.Service) error) error {
	s, err := control()
	if err != nil {
		return err
	}
	if err := f(s); err != nil {
		return fmt.Errorf("service: %s: %w", what, err)
	}
	return nil
}

// Status reports whether the service is installed and running.
func Status() (State, error) {
	s, err := control()
	if err != nil {
		return StateUnknown, err
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, kservice.ErrNotInstalled):
		return StateNotInstalled, nil
	case err != nil:
		return StateUnknown, fmt.Errorf("service: status: %w", err)
	}
	switch st {
	case kservice.StatusRunning:
		return StateRunning, nil
	case kservice.StatusStopped:
		return StateStopped, nil
	}
	return StateUnknown, nil
}

// WriteSystemdUnit renders the unit for c and writes it under root
// (root/etc/systemd/system/identity-agent.service) without touching the
// running system: for package builds (.deb/.rpm staging dirs) and tests.
func WriteSystemdUnit(root string, c InstallConfig) (string, error) {
	def, err := RenderSystemdUnit(c)
	if err != nil {
		return "", err
	}
	dest := filepath.Join(root, SystemdUnitPath)
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", fmt.Errorf("service: %w", err)
	}
	if err := os.WriteFile(dest, def, 0o644); err != nil {
		return "", fmt.Errorf("service: %w", err)
	}
	return dest, nil
}
