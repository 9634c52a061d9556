//go:build linux

package systemdtest

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
	"syscall"
	"testing"
	"time"

	"github.com/identity-agent/identity-agent/internal/fleettest"
)

// containerEnv is the whole environment of a command run in a machine: the
// host's would leak its PATH, locale and pager settings in.
func containerEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "PAGER=cat",
	}
}

// bootScript mounts the overlay in unshare's private mount namespace (it
// disappears with the namespace: nothing to unmount on the host) and
// becomes systemd-nspawn, in cgroups of its own ($IA_CGROUPS, see
// ownCgroups). The mount is retried: the previous boot's
// namespace may still hold upper/ for an instant after it ended.
const bootScript = `for d in $IA_CGROUPS; do echo 0 >"$d/cgroup.procs" || exit 1; done
i=0
until mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"; do
  i=$((i+1)); [ $i -lt 20 ] || exit 1; sleep 0.5
done
exec systemd-nspawn -q -D "$4" -b --register=no --keep-unit --private-network --console=pipe -M "$5" --bind-ro="$6:/mnt/host"`

// Machine is a booted container: systemd as PID 1 on an overlay of a
// cached rootfs, no network but loopback, the run's share directory at
// /mnt/host (read-only).
type Machine struct {
	Name    string
	Flavour Flavour

	run                        *Run
	lower, dir                 string
	upper, work, merged, share string

	cmd     *exec.Cmd // unshare; nspawn is PID 1 of its PID namespace
	done    chan struct{}
	console *os.File
	nspawn  int // systemd-nspawn's host pid
	init    int // the container's PID 1 as seen from the host
}

// Boot starts a machine of flavour f on the rootfs lower and waits until
// its systemd answers. The machine is killed and its files removed when the
// test ends; on failure the test log gets its failed units, jobs and
// journal first.
func (r *Run) Boot(t testing.TB, f Flavour, lower, name string) *Machine {
	t.Helper()
	m := &Machine{Name: name, Flavour: f, run: r, lower: lower, dir: filepath.Join(r.Dir, name), share: r.Share}
	m.upper, m.work, m.merged = filepath.Join(m.dir, "upper"), filepath.Join(m.dir, "work"), filepath.Join(m.dir, "merged")
	for _, d := range []string{m.upper, m.work, m.merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Units that cannot work in a container (systemd-sysctl fails on the
	// read-only /proc/sys of 254+) would leave the system "degraded".
	for _, u := range []string{"systemd-sysctl.service"} {
		p := filepath.Join(m.upper, "etc", "systemd", "system", u)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/dev/null", p); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.add(m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() && m.running() {
			m.diagnose(t)
		}
		m.kill()
		r.remove(m)
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(m.dir, "console.log")); err == nil && len(b) > 0 {
				t.Logf("%s console (last 3000 bytes):\n%s", m.Name, tail(b, 3000))
			}
		}
		_ = os.RemoveAll(m.dir)
	})
	m.start(t)
	return m
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// start boots (or boots again) the machine on its overlay.
func (m *Machine) start(t testing.TB) {
	t.Helper()
	console, err := os.OpenFile(filepath.Join(m.dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m.console = console
	m.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--mount-proc",
		"sh", "-c", bootScript, "sh", m.lower, m.upper, m.work, m.merged, m.Name, m.share)
	m.cmd.Stdout, m.cmd.Stderr = console, console
	cgroups, err := m.ownCgroups()
	if err != nil {
		t.Fatalf("boot %s: %v", m.Name, err)
	}
	m.cmd.Env = append(os.Environ(), "IA_CGROUPS="+strings.Join(cgroups, " "))
	// Its own process group: a Ctrl-C in the terminal reaches the test
	// binary, which kills the machines itself (Run.Guard).
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("boot %s: %v", m.Name, err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		close(done)
	}(m.cmd, m.done)
	m.record(m.cmd.Process.Pid)

	// unshare → nspawn (PID 1 of the new PID namespace) → the container's
	// systemd. Their host pids are recorded for CleanLeftovers.
	m.waitFor(t, 2*time.Minute, "systemd-nspawn", func() (bool, string) {
		m.nspawn = onlyChild(m.cmd.Process.Pid, "")
		return m.nspawn > 0, "no child of unshare yet"
	})
	m.record(m.nspawn)
	m.waitFor(t, 2*time.Minute, "the container's systemd", func() (bool, string) {
		m.init = onlyChild(m.nspawn, "systemd")
		return m.init > 0, "no systemd under systemd-nspawn yet"
	})
	m.record(m.init)
	m.waitFor(t, 3*time.Minute, "the container's systemd to answer", func() (bool, string) {
		r, err := m.exec(30*time.Second, "", "systemctl", "show", "--property=Version", "--value")
		return err == nil && r.Code == 0 && strings.TrimSpace(r.Stdout) != "", fmt.Sprint(err, r)
	})
	// What nspawn leaves on the host when it is killed rather than
	// stopped: its lock on the root directory (named after the overlay's
	// device and inode) and its mount propagation directory.
	if r, err := m.exec(30*time.Second, "", "stat", "-c", "%d:%i", "/"); err == nil && r.Code == 0 {
		m.hostPath("/run/systemd/nspawn/locks/inode-" + strings.TrimSpace(r.Stdout))
	}
	m.hostPath("/run/systemd/nspawn/propagate/" + m.Name)
}

// ownCgroups creates a cgroup for the machine under the test process's
// own in the hierarchies systemd manages (name=systemd and the unified
// one). With --keep-unit nspawn leaves the container in the cgroup it was
// started in; machines sharing one would create and remove each other's
// unit cgroups ("Failed to attach to cgroup ...: No such file or directory").
func (m *Machine) ownCgroups() ([]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var root string
		switch {
		case parts[1] == "name=systemd":
			root = "/sys/fs/cgroup/systemd"
		case parts[0] == "0" && parts[1] == "":
			root = "/sys/fs/cgroup/unified"
			if _, err := os.Stat(root + "/cgroup.procs"); err != nil {
				root = "/sys/fs/cgroup" // a pure cgroup2 host
			}
		default:
			continue
		}
		dir := filepath.Join(root, parts[2], "ia-nspawn-"+m.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup for %s: %w", m.Name, err)
		}
		m.hostPath(dir)
		dirs = append(dirs, dir)
	}
	return dirs, nil
}

// hostPath records a host path nspawn may leave behind, removed with the
// machine (and by CleanLeftovers).
func (m *Machine) hostPath(p string) {
	f, err := os.OpenFile(filepath.Join(m.dir, "paths"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	_, _ = f.WriteString(p + "\n")
	_ = f.Close()
}

// record appends a process's identity to the machine's procs file, which
// CleanLeftovers reads if this test process dies without cleaning up.
func (m *Machine) record(pid int) {
	id, err := procID(pid)
	if err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(m.dir, "procs"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	_, _ = f.WriteString(id + "\n")
	_ = f.Close()
}

// onlyChild is the child of pid whose command name is comm (any when ""),
// or 0.
func onlyChild(pid int, comm string) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			c, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if comm == "" {
				return c
			}
			if name, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); err == nil && strings.TrimSpace(string(name)) == comm {
				return c
			}
		}
	}
	return 0
}

// waitFor is fleettest.WaitFor that gives up at once when the machine ended.
func (m *Machine) waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	fleettest.WaitFor(t, timeout, what, func() (bool, string) {
		if !m.running() {
			b, _ := os.ReadFile(filepath.Join(m.dir, "console.log"))
			t.Fatalf("%s: the machine ended while waiting for %s; console:\n%s", m.Name, what, tail(b, 3000))
		}
		return cond()
	})
}

func (m *Machine) running() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// exec runs argv in the machine (all its namespaces, a clean environment)
// with stdin, bounded by timeout.
func (m *Machine) exec(timeout time.Duration, stdin string, argv ...string) (fleettest.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"-t", strconv.Itoa(m.init), "-a", "--", "env", "-i"}, containerEnv()...)
	cmd := exec.CommandContext(ctx, "nsenter", append(args, argv...)...)
	// nsenter forks into the PID namespace: when it is killed at the
	// timeout its child may keep the output open; stop waiting for it.
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	res := fleettest.Result{Stdout: out.String(), Stderr: errb.String()}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s: %s: no answer within %v", m.Name, strings.Join(argv, " "), timeout)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.Code = ee.ExitCode()
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("%s: nsenter %s: %w", m.Name, strings.Join(argv, " "), err)
	}
	return res, nil
}

// Run runs argv in the machine; a non-zero exit is a Result, no answer
// within timeout fails the test.
func (m *Machine) Run(t testing.TB, timeout time.Duration, argv ...string) fleettest.Result {
	t.Helper()
	r, err := m.exec(timeout, "", argv...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Sh runs a shell script (sh -e) in the machine.
func (m *Machine) Sh(t testing.TB, timeout time.Duration, script string) fleettest.Result {
	t.Helper()
	return m.Run(t, timeout, "sh", "-ec", script)
}

// MustSh runs a shell script in the machine and returns its stdout; a
// non-zero exit fails the test.
func (m *Machine) MustSh(t testing.TB, script string) string {
	t.Helper()
	r := m.Sh(t, 2*time.Minute, script)
	if r.Code != 0 {
		t.Fatalf("%s: %s\n%s", m.Name, script, r)
	}
	return r.Stdout
}

// WriteFile writes a file in the machine (parents created).
func (m *Machine) WriteFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	r, err := m.exec(time.Minute, content, "sh", "-ec", `mkdir -p "$(dirname "$1")"; cat >"$1.tmp"; chmod "$2" "$1.tmp"; mv "$1.tmp" "$1"`,
		"sh", path, fmt.Sprintf("%o", mode))
	if err == nil && r.Code != 0 {
		err = fmt.Errorf("%s: write %s: %s", m.Name, path, r)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// ReadFile returns a file of the machine.
func (m *Machine) ReadFile(t testing.TB, path string) string {
	t.Helper()
	r := m.Run(t, time.Minute, "cat", path)
	if r.Code != 0 {
		t.Fatalf("%s: cat %s: %s", m.Name, path, r)
	}
	return r.Stdout
}

// Reboot powers the machine off the way systemd does (every unit stopped)
// and boots it again on the same overlay: what was written stays.
func (m *Machine) Reboot(t testing.TB) {
	t.Helper()
	if r, err := m.exec(time.Minute, "", "systemctl", "poweroff", "--no-block"); err != nil || r.Code != 0 {
		t.Fatalf("%s: systemctl poweroff: %v %s", m.Name, err, r)
	}
	select {
	case <-m.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("%s: still running 3 min after systemctl poweroff", m.Name)
	}
	_ = m.console.Close()
	m.start(t)
}

// kill ends the machine: SIGTERM to nspawn, which powers the container off
// and removes what it made on the host; after 20 s SIGKILL to unshare,
// whose --kill-child kills nspawn, the PID 1 of the namespace every
// container process lives in. Then whatever nspawn left is removed.
func (m *Machine) kill() {
	if m.running() {
		if m.nspawn > 0 {
			_ = syscall.Kill(m.nspawn, syscall.SIGTERM)
			select {
			case <-m.done:
			case <-time.After(20 * time.Second):
			}
		}
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
		}
	}
	removeRecorded(m.dir)
	if m.console != nil {
		_ = m.console.Close()
	}
}

// removeRecorded kills the processes recorded in dir/procs and removes the
// host paths recorded in dir/paths.
func removeRecorded(dir string) {
	if b, err := os.ReadFile(filepath.Join(dir, "procs")); err == nil {
		for _, id := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			killRecorded(id)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "paths")); err == nil {
		for _, p := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			switch {
			case strings.HasPrefix(p, "/run/systemd/nspawn/"):
				_ = os.RemoveAll(p)
			case strings.HasPrefix(p, "/sys/fs/cgroup/") && strings.Contains(p, "/ia-nspawn-"):
				removeCgroup(p)
			}
		}
	}
}

// removeCgroup removes a cgroup and those the container made under it,
// deepest first (a cgroup directory goes with rmdir, its files with it).
func removeCgroup(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// The last processes may take a moment to leave a cgroup (EBUSY).
	for range 50 {
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(dirs[i])
		}
		if _, err := os.Stat(dir); err != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// diagnose logs what a failed test needs to see of the machine.
func (m *Machine) diagnose(t testing.TB) {
	t.Helper()
	for _, argv := range [][]string{
		{"systemctl", "is-system-running"},
		{"systemctl", "list-jobs", "--no-pager"},
		{"systemctl", "--failed", "--no-pager"},
		{"systemctl", "status", "--no-pager", "-n", "0", "identity-agent.service"},
		{"journalctl", "--no-pager", "-b", "-n", "120", "-o", "short-monotonic"},
	} {
		r, err := m.exec(30*time.Second, "", argv...)
		t.Logf("%s$ %s\n%s%s%v", m.Name, strings.Join(argv, " "), r.Stdout, r.Stderr, errOrEmpty(err))
	}
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
