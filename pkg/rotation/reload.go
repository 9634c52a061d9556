package rotation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Reloader is one reload action run after an output's files were written.
// Other packages implement it too (for example a Redis CONFIG SET reload).
type Reloader interface {
	// Kind names the reload for logs, state and metric labels: "signal",
	// "exec", "systemd", "launchd", "redis", ...
	Kind() string
	// Reload tells the service to pick up the new files; w says which
	// files were written and where. It must honour ctx.
	Reload(ctx context.Context, w Written) error
}

// Written is what one write put in an output's directory, as a reload is
// told it: a reloader that hands file paths to its service (Redis CONFIG
// SET, a Traefik dynamic file) looks them up here instead of joining the
// output's directory and names itself.
type Written struct {
	// Dir is the output directory (Output.Dir).
	Dir string
	// Files maps the name of each file written, as the Output names it
	// ("tls.crt", "bundles/example.org.pem"), to its absolute path.
	Files map[string]string
	// SVID is the X.509-SVID the files were made from; nil for an output
	// that writes only JWT files.
	SVID *x509svid.SVID
}

// Path is the absolute path of the written file name (as the Output names
// it); an error names the file and the directory when this write did not
// produce it.
func (w Written) Path(name string) (string, error) {
	if p, ok := w.Files[name]; ok {
		return p, nil
	}
	return "", fmt.Errorf("%s was not written to %s", name, w.Dir)
}

// written is the set on disk as the reloads are told it: the files last
// written (or restored by the guard) and their SVID.
func (r *outputRunner) written() Written {
	w := Written{Dir: r.out.Dir, Files: make(map[string]string, len(r.lastFiles)), SVID: r.lastSVID}
	for _, f := range r.lastFiles {
		w.Files[f.Name] = filepath.Join(r.out.Dir, f.Name)
	}
	return w
}

// StartReloader is a Reloader that acts differently on the reloads an
// agent held until it was ready (Manager.HoldReloads): those follow the
// files written at start, when the service may not run yet, e.g. because
// it is ordered after the agent and starts next with the new files.
type StartReloader interface {
	Reloader
	// ReloadAtStart is Reload, except that it returns an error wrapping
	// ErrNotRunning, having done nothing, when the service is not running.
	ReloadAtStart(ctx context.Context, w Written) error
}

// ErrNotRunning says a service was not reloaded at start because it does
// not run: it reads the files when it starts.
var ErrNotRunning = errors.New("service not running")

// validator is implemented by reloaders that can reject their configuration
// up front, so NewManager fails at start instead of at the first rotation.
type validator interface {
	validate() error
}

const (
	// defaultExecTimeout bounds an exec reload; a reload hook that hangs must
	// not stall the rotation of this output forever.
	defaultExecTimeout = 30 * time.Second
	// defaultServiceTimeout is longer because a restart through systemd or
	// launchd waits for the service to stop and start again.
	defaultServiceTimeout = 2 * time.Minute
	// stderrTail is how much of a failed command's stderr goes into the
	// error: enough to see the cause, short enough for one log line.
	stderrTail = 512
	// waitDelay bounds how long we wait for a killed command's pipes to
	// close (a grandchild outside the process group may hold them).
	waitDelay = 2 * time.Second
)

// ReloaderOption configures the command-based reloaders (systemd, launchd).
type ReloaderOption func(*commandConfig)

type commandConfig struct {
	path    string
	timeout time.Duration
	domain  string
}

// WithCommandPath sets the program run by a systemd or launchd reloader
// (default "systemctl" / "launchctl", looked up in $PATH). Tests point it at a
// fake script; hardened hosts may pin an absolute path.
func WithCommandPath(path string) ReloaderOption {
	return func(c *commandConfig) { c.path = path }
}

// WithCommandTimeout bounds one run of the command (default 2m). On timeout
// the command's whole process group is killed.
func WithCommandTimeout(d time.Duration) ReloaderOption {
	return func(c *commandConfig) { c.timeout = d }
}

// WithLaunchdDomain sets the launchd domain of the service target, e.g.
// "system" (default) or "gui/501".
func WithLaunchdDomain(domain string) ReloaderOption {
	return func(c *commandConfig) { c.domain = domain }
}

// ---------------------------------------------------------------- signal

type signalReloader struct {
	pidFile string
	pid     int
	sig     syscall.Signal
}

// NewSignalReloader sends sig to a process. When pidFile is not empty it is
// read again on every reload (services rewrite it when they restart) and pid
// is ignored; otherwise pid is used as is.
func NewSignalReloader(pidFile string, pid int, sig syscall.Signal) Reloader {
	return &signalReloader{pidFile: pidFile, pid: pid, sig: sig}
}

func (r *signalReloader) Kind() string { return "signal" }

func (r *signalReloader) validate() error {
	if r.sig <= 0 {
		return fmt.Errorf("signal reload: invalid signal %d", int(r.sig))
	}
	if r.pidFile == "" && r.pid <= 1 {
		return fmt.Errorf("signal reload: need a pid file or a pid > 1 (got %d)", r.pid)
	}
	return nil
}

func (r *signalReloader) target() (int, error) {
	if r.pidFile == "" {
		return r.pid, nil
	}
	raw, err := os.ReadFile(r.pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("pid file %s: missing", r.pidFile)
	}
	if err != nil {
		return 0, fmt.Errorf("pid file %s: %w", r.pidFile, err)
	}
	s := strings.TrimSpace(string(raw))
	pid, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("pid file %s: not a number: %q", r.pidFile, truncate(s, 32))
	}
	return pid, nil
}

func (r *signalReloader) Reload(ctx context.Context, _ Written) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.validate(); err != nil {
		return err
	}
	pid, err := r.target()
	if err != nil {
		return fmt.Errorf("signal reload: %w", err)
	}
	// pid 0, -1 and negative values address process groups or every process
	// we may signal; 1 is init. None of them is ever a service to reload.
	if pid <= 1 {
		return fmt.Errorf("signal reload: refusing pid %d%s", pid, r.fromFile())
	}
	if err := syscall.Kill(pid, r.sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal reload: pid %d%s is not running (stale)", pid, r.fromFile())
		}
		return fmt.Errorf("signal reload: kill %d %s%s: %w", pid, r.sig, r.fromFile(), err)
	}
	return nil
}

func (r *signalReloader) fromFile() string {
	if r.pidFile == "" {
		return ""
	}
	return " (from " + r.pidFile + ")"
}

// ---------------------------------------------------------------- exec

type execReloader struct {
	argv    []string
	timeout time.Duration
	kind    string
	label   string // names the reloader in errors
}

// NewExecReloader runs argv (no shell: argv[0] is the program, looked up in
// $PATH when it has no slash). A non-zero exit is an error carrying the tail
// of the command's stderr. On timeout (default 30s when <= 0) or context
// cancellation the whole process group is killed, so a hook's children do
// not outlive it.
func NewExecReloader(argv []string, timeout time.Duration) Reloader {
	if timeout <= 0 {
		timeout = defaultExecTimeout
	}
	return &execReloader{argv: append([]string(nil), argv...), timeout: timeout, kind: "exec", label: "exec reload"}
}

func (r *execReloader) Kind() string { return r.kind }

// Timeout bounds one run (Manager.Stalled counts on it).
func (r *execReloader) Timeout() time.Duration { return r.timeout }

func (r *execReloader) validate() error {
	if len(r.argv) == 0 || r.argv[0] == "" {
		return fmt.Errorf("%s: empty command", r.label)
	}
	return nil
}

func (r *execReloader) Reload(ctx context.Context, _ Written) error {
	if err := r.validate(); err != nil {
		return err
	}
	return runCommand(ctx, r.label, r.argv, r.timeout)
}

func runCommand(ctx context.Context, label string, argv []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...) //nolint:gosec // argv comes from the operator's config; no shell is involved
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Negative pid: the whole group, so `sh -c 'sleep 100 & wait'`
		// style hooks die with their children.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	tail := &tailBuffer{max: stderrTail}
	cmd.Stderr = tail
	cmd.Stdout = nil // discarded: only stderr explains a failure

	err := cmd.Run()
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("%s %q", label, argv)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		msg += fmt.Sprintf(": timed out after %s (process group killed)", timeout)
	case ctx.Err() != nil:
		msg += ": canceled (process group killed)"
	default:
		msg += ": " + err.Error()
	}
	if s := tail.String(); s != "" {
		msg += fmt.Sprintf(": stderr: %q", s)
	}
	return &commandError{msg: msg, err: err}
}

// commandError is a failed command, its message naming it; it unwraps to
// the *exec.ExitError when the command ran and exited.
type commandError struct {
	msg string
	err error
}

func (e *commandError) Error() string { return e.msg }
func (e *commandError) Unwrap() error { return e.err }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// ---------------------------------------------------------------- systemd

type systemdReloader struct {
	unit, action string
	cfg          commandConfig
}

func validSystemdAction(a string) bool {
	switch a {
	case "reload", "restart", "try-restart", "reload-or-restart", "try-reload-or-restart":
		return true
	}
	return false
}

// NewSystemdReloader runs `systemctl <action> <unit>`. action is one of
// reload, restart, try-restart, reload-or-restart, try-reload-or-restart.
// Options: WithCommandPath, WithCommandTimeout.
func NewSystemdReloader(unit, action string, opts ...ReloaderOption) Reloader {
	cfg := commandConfig{path: "systemctl", timeout: defaultServiceTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	return &systemdReloader{unit: unit, action: action, cfg: cfg}
}

func (r *systemdReloader) Kind() string { return "systemd" }

// Timeout bounds one command; ReloadAtStart runs two.
func (r *systemdReloader) Timeout() time.Duration { return 2 * r.cfg.timeout }

func (r *systemdReloader) validate() error {
	if !validSystemdAction(r.action) {
		return fmt.Errorf("systemd reload of %q: unsupported action %q (want reload, restart, try-restart, reload-or-restart or try-reload-or-restart)", r.unit, r.action)
	}
	// A leading dash would be taken as an option by systemctl.
	if r.unit == "" || strings.HasPrefix(r.unit, "-") {
		return fmt.Errorf("systemd reload: invalid unit name %q", r.unit)
	}
	return nil
}

func (r *systemdReloader) Reload(ctx context.Context, _ Written) error {
	if err := r.validate(); err != nil {
		return err
	}
	return runCommand(ctx, "systemd reload", []string{r.cfg.path, r.action, r.unit}, r.cfg.timeout)
}

// ReloadAtStart runs the action only on an active unit, whatever the
// action: `systemctl is-active UNIT` first. A unit that is starting
// (activating, or waiting for its start job, typically because it is
// ordered After= the agent) is not active, and starts with the files just
// written; a stopped unit stays stopped. The check and the action are two
// commands: a unit that stops in between is acted on as configured
// (restart starts it), which is what the same reload does after a rotation.
func (r *systemdReloader) ReloadAtStart(ctx context.Context, w Written) error {
	if err := r.validate(); err != nil {
		return err
	}
	active, err := r.isActive(ctx)
	if err != nil {
		return err
	}
	if !active {
		return fmt.Errorf("systemd unit %s is not active: %w", r.unit, ErrNotRunning)
	}
	return r.Reload(ctx, w)
}

// isActive asks `systemctl is-active --quiet UNIT`: exit 0 active (or
// reloading), 3 anything else (LSB "not running"; also an unknown unit),
// 4 no such unit on some versions. Another exit or no exit at all is an
// error: systemctl could not answer.
func (r *systemdReloader) isActive(ctx context.Context) (bool, error) {
	err := runCommand(ctx, "systemd reload", []string{r.cfg.path, "is-active", "--quiet", r.unit}, r.cfg.timeout)
	if err == nil {
		return true, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) && (ee.ExitCode() == 3 || ee.ExitCode() == 4) {
		return false, nil
	}
	return false, err
}

// ---------------------------------------------------------------- launchd

type launchdReloader struct {
	label   string
	restart bool
	cfg     commandConfig
}

// NewLaunchdReloader runs `launchctl kickstart [-k] <domain>/<label>`
// (domain "system" unless WithLaunchdDomain). restart adds -k, which kills a
// running instance first; without it kickstart only starts a stopped job.
// Options: WithCommandPath, WithCommandTimeout, WithLaunchdDomain.
func NewLaunchdReloader(label string, restart bool, opts ...ReloaderOption) Reloader {
	cfg := commandConfig{path: "launchctl", timeout: defaultServiceTimeout, domain: "system"}
	for _, o := range opts {
		o(&cfg)
	}
	return &launchdReloader{label: label, restart: restart, cfg: cfg}
}

func (r *launchdReloader) Kind() string { return "launchd" }

// Timeout bounds one run.
func (r *launchdReloader) Timeout() time.Duration { return r.cfg.timeout }

func (r *launchdReloader) validate() error {
	if r.label == "" || strings.ContainsAny(r.label, "/ ") {
		return fmt.Errorf("launchd reload: invalid label %q", r.label)
	}
	if r.cfg.domain == "" {
		return fmt.Errorf("launchd reload of %q: empty domain", r.label)
	}
	return nil
}

func (r *launchdReloader) Reload(ctx context.Context, _ Written) error {
	if err := r.validate(); err != nil {
		return err
	}
	argv := []string{r.cfg.path, "kickstart"}
	if r.restart {
		argv = append(argv, "-k")
	}
	argv = append(argv, r.cfg.domain+"/"+r.label)
	return runCommand(ctx, "launchd reload", argv, r.cfg.timeout)
}
