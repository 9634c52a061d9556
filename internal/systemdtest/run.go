//go:build linux

package systemdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dirPrefix names a test process's directory under os.TempDir().
const dirPrefix = "ia-nspawn-"

// Run owns what one test process starts: its directory (machines'
// overlays, consoles, the files shared with every machine) and the
// machines themselves.
type Run struct {
	Dir   string // $TMPDIR/ia-nspawn-*
	Share string // Dir/share, bound read-only at /mnt/host in every machine

	mu       sync.Mutex
	machines map[*Machine]struct{}
	closed   bool
}

// NewRun removes what killed runs left behind (CleanLeftovers) and creates
// this run's directory, marked with this process so that a concurrent run
// leaves it alone.
func NewRun(logf func(string, ...any)) (*Run, error) {
	CleanLeftovers(os.TempDir(), logf)
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("systemdtest: %w", err)
	}
	r := &Run{Dir: dir, Share: filepath.Join(dir, "share"), machines: map[*Machine]struct{}{}}
	if err := os.Mkdir(r.Share, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("systemdtest: %w", err)
	}
	owner, err := procID(os.Getpid())
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "owner"), []byte(owner+"\n"), 0o644)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("systemdtest: %w", err)
	}
	return r, nil
}

func (r *Run) add(m *Machine) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("systemdtest: the run is closed (interrupted or out of time)")
	}
	r.machines[m] = struct{}{}
	return nil
}

func (r *Run) remove(m *Machine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.machines, m)
}

// KillMachines kills every machine still running; their tests then fail
// on their next command and clean up as usual. No machine starts after it.
func (r *Run) KillMachines() {
	r.mu.Lock()
	r.closed = true
	ms := make([]*Machine, 0, len(r.machines))
	for m := range r.machines {
		ms = append(ms, m)
	}
	r.mu.Unlock()
	for _, m := range ms {
		m.kill()
	}
}

// Close kills every machine and removes the run's directory.
func (r *Run) Close() {
	r.KillMachines()
	_ = os.RemoveAll(r.Dir)
}

// Guard closes the run when the process gets SIGINT or SIGTERM (a Ctrl-C
// would otherwise end the test binary without its cleanups and leave
// containers running) and kills the machines shortly before deadline (the
// test binary's -timeout panics without cleanups too). Call the returned
// function once the tests are done.
func (r *Run) Guard(deadline time.Time, logf func(string, ...any)) (stop func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var timer <-chan time.Time
	stopTimer := func() bool { return false }
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		timer, stopTimer = t.C, t.Stop
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case s := <-sigs:
				logf("systemdtest: %v: killing every container and removing %s", s, r.Dir)
				r.Close()
				os.Exit(130)
			case <-timer:
				logf("systemdtest: the test binary's -timeout is near: killing every container")
				r.KillMachines()
				timer = nil
			case <-done:
				return
			}
		}
	}()
	return func() {
		stopTimer()
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}
}

// CleanLeftovers kills the containers of test processes that died without
// cleaning up (SIGKILL, a -timeout panic) and removes their directories
// under tmp. Directories of live test processes are left alone. Only
// processes whose pid and start time were recorded are signalled, so a
// reused pid is never hit.
func CleanLeftovers(tmp string, logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(tmp, dirPrefix+"*"))
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			// Not ours, or created an instant ago by a run that has not
			// written it yet: leave it.
			continue
		}
		if alive(strings.TrimSpace(string(owner))) {
			continue
		}
		machines, _ := filepath.Glob(filepath.Join(dir, "*", "procs"))
		for _, p := range machines {
			removeRecorded(filepath.Dir(p))
		}
		if err := os.RemoveAll(dir); err != nil {
			logf("systemdtest: removing the leftovers of a killed run: %v", err)
			continue
		}
		logf("systemdtest: removed the leftovers of a killed run: %s", dir)
	}
}

// procID is "PID STARTTIME": a process's identity that survives pid reuse.
func procID(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name may hold spaces and parentheses: fields count from
	// the last ')'. starttime is field 22, the 20th after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return fmt.Sprintf("%d %s", pid, f[19]), nil
}

// alive reports whether the process recorded as id ("PID STARTTIME") still
// runs (zombies do not count).
func alive(id string) bool {
	pidStr, _, ok := strings.Cut(id, " ")
	if !ok {
		return false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return false
	}
	cur, err := procID(pid)
	if err != nil || cur != id {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	return err == nil && !strings.Contains(string(st), "(zombie)")
}

// killRecorded SIGKILLs the process recorded as id if it is still that
// process, and waits (bounded) until it is gone.
func killRecorded(id string) {
	if !alive(id) {
		return
	}
	pid, _ := strconv.Atoi(strings.Fields(id)[0])
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if !alive(id) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Missing names what this host lacks to boot a container ("" when nothing):
// root, the programs and overlayfs.
func Missing() string {
	if os.Geteuid() != 0 {
		return "not root (systemd-nspawn, mounts and debootstrap need root)"
	}
	var missing []string
	for _, p := range []string{"systemd-nspawn", "debootstrap", "nsenter", "unshare", "mount", "chroot", "flock"} {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return strings.Join(missing, ", ") + " not installed (apt-get install systemd-container debootstrap util-linux)"
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
		return "the kernel has no overlayfs (modprobe overlay)"
	}
	return ""
}
