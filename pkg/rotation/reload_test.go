package rotation

import (
	"context"
	"math/big"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// recorder returns a script that appends its argv (one line, args joined
// with '|') to log.
func recorder(t *testing.T, dir, name string) (script, log string) {
	t.Helper()
	log = filepath.Join(dir, name+".log")
	script = writeScript(t, dir, name+".sh", `IFS='|'; echo "$*" >> '`+log+`'`)
	return script, log
}

func TestReloadOnlyWhenWritten(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	svidScript, svidLog := recorder(t, base, "svid")
	bundleScript, bundleLog := recorder(t, base, "bundle")
	w := newWrites()
	m := newTestManager(t, e, []Output{
		{Name: "svid", Dir: filepath.Join(base, "svid"), CertFile: "cert.pem", KeyFile: "key.pem",
			Reloads: []Reloader{NewExecReloader([]string{svidScript, "svid"}, 5*time.Second)}},
		// Only the bundle: an SVID rotation pushes, but changes nothing here.
		{Name: "bundle", Dir: filepath.Join(base, "bundle"), BundleFile: "ca.pem",
			Reloads: []Reloader{NewExecReloader([]string{bundleScript, "bundle"}, 5*time.Second)}},
	}, withWriteHook(w.hook))
	runManager(t, m)
	require.Eventually(t, func() bool { return len(lines(svidLog)) == 1 && len(lines(bundleLog)) == 1 }, waitFor, tick)
	waitSettled(t, w, "bundle")

	bundleSyncs := w.count("bundle", false)
	require.NoError(t, e.srv.RotateSVIDs())
	waitSerial(t, filepath.Join(base, "svid", "cert.pem"), currentSerial(e, ""))
	require.Eventually(t, func() bool { return len(lines(svidLog)) == 2 }, waitFor, tick)
	// The bundle output saw the push (an unchanged write) and did not reload.
	require.Eventually(t, func() bool { return w.count("bundle", false) > bundleSyncs }, waitFor, tick)
	require.Len(t, lines(bundleLog), 1, "reload ran although nothing was written")
	require.Equal(t, 1, w.count("bundle", true))

	require.NoError(t, e.srv.RotateCA())
	require.Eventually(t, func() bool { return len(lines(bundleLog)) == 2 }, waitFor, tick)
	require.Equal(t, []string{"svid", "svid"}, lines(svidLog)[:2])
	st := outputState(m, "bundle")
	require.False(t, st.LastReload.IsZero())
	require.True(t, st.Healthy())
}

func TestSignalReloader(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	hups := filepath.Join(base, "hups")
	ready := filepath.Join(base, "ready")
	// A real service stand-in: counts SIGHUPs. A shell cannot trap a signal
	// that was ignored when it started, and under nohup (or a CI runner
	// that ignores SIGHUP) the test inherits SIGHUP ignored. Catching it
	// here for the fork gives the child the default disposition instead:
	// exec resets caught signals and keeps ignored ones.
	hupCaught := make(chan os.Signal, 1)
	signal.Notify(hupCaught, syscall.SIGHUP)
	cmd := exec.Command("sh", "-c", `trap 'echo hup >> "$0"' HUP; echo up > "$1"; while :; do sleep 0.05; done`, hups, ready)
	require.NoError(t, cmd.Start())
	signal.Stop(hupCaught)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool { _, err := os.Stat(ready); return err == nil }, waitFor, tick)
	pidFile := filepath.Join(base, "svc.pid")
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644))

	m := newTestManager(t, e, []Output{{Name: "svc", Dir: filepath.Join(base, "out"), CertFile: "cert.pem", KeyFile: "key.pem",
		Reloads: []Reloader{NewSignalReloader(pidFile, 0, syscall.SIGHUP)}}})
	runManager(t, m)
	require.Eventually(t, func() bool { return len(lines(hups)) == 1 }, waitFor, tick)
	require.NoError(t, e.srv.RotateSVIDs())
	require.Eventually(t, func() bool { return len(lines(hups)) == 2 }, waitFor, tick,
		"hups %d; output %+v", len(lines(hups)), outputState(m, "svc"))

	// Errors name the pid file and what is wrong with it.
	ctx := context.Background()
	missing := NewSignalReloader(filepath.Join(base, "nope.pid"), 0, syscall.SIGHUP)
	require.ErrorContains(t, missing.Reload(ctx, Written{}), "nope.pid: missing")
	require.NoError(t, os.WriteFile(pidFile, []byte("abc\n"), 0o644))
	require.ErrorContains(t, NewSignalReloader(pidFile, 0, syscall.SIGHUP).Reload(ctx, Written{}), `not a number: "abc"`)
	done := exec.Command("true")
	require.NoError(t, done.Run())
	require.NoError(t, os.WriteFile(pidFile, []byte(strconv.Itoa(done.Process.Pid)), 0o644))
	require.ErrorContains(t, NewSignalReloader(pidFile, 0, syscall.SIGHUP).Reload(ctx, Written{}), "not running (stale)")
	require.NoError(t, os.WriteFile(pidFile, []byte("1"), 0o644))
	require.ErrorContains(t, NewSignalReloader(pidFile, 0, syscall.SIGHUP).Reload(ctx, Written{}), "refusing pid 1")
	// Without a pid file, the pid is used directly.
	require.NoError(t, NewSignalReloader("", cmd.Process.Pid, syscall.SIGHUP).Reload(ctx, Written{}))
	require.Eventually(t, func() bool { return len(lines(hups)) == 3 }, waitFor, tick)
}

func TestExecReloader(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	args := filepath.Join(dir, "args")
	script := writeScript(t, dir, "args.sh", `for a in "$@"; do echo "$a" >> '`+args+`'; done`)
	// No shell: spaces and $ stay literal.
	require.NoError(t, NewExecReloader([]string{script, "a b", "$HOME", ";true"}, time.Second).Reload(ctx, Written{}))
	require.Equal(t, []string{"a b", "$HOME", ";true"}, lines(args))

	fail := writeScript(t, dir, "fail.sh", `echo "first line" >&2; echo "config broken" >&2; exit 3`)
	err := NewExecReloader([]string{fail}, time.Second).Reload(ctx, Written{})
	require.ErrorContains(t, err, "exit status 3")
	require.ErrorContains(t, err, "config broken")
	require.NotContains(t, err.Error(), "\n\n")

	// Timeout kills the whole process group, grandchildren included.
	childPid := filepath.Join(dir, "child.pid")
	hang := writeScript(t, dir, "hang.sh", `sleep 30 & echo $! > '`+childPid+`'; wait`)
	start := time.Now()
	err = NewExecReloader([]string{hang}, time.Second).Reload(ctx, Written{})
	require.ErrorContains(t, err, "timed out after 1s")
	require.Less(t, time.Since(start), 10*time.Second)
	raw, rerr := os.ReadFile(childPid)
	require.NoError(t, rerr)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	require.Eventually(t, func() bool { return !processAlive(pid) }, waitFor, tick, "grandchild survived the timeout")

	require.ErrorContains(t, NewExecReloader([]string{filepath.Join(dir, "absent")}, time.Second).Reload(ctx, Written{}), "absent")
}

// processAlive is false for a gone or zombie process (a zombie is dead; it
// only waits for a reaper that a container may not run).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestServiceManagerReloaders(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	systemctl, sysLog := recorder(t, dir, "systemctl")
	launchctl, launchLog := recorder(t, dir, "launchctl")

	require.NoError(t, NewSystemdReloader("redis.service", "reload", WithCommandPath(systemctl)).Reload(ctx, Written{}))
	require.NoError(t, NewSystemdReloader("uvicorn.service", "try-restart", WithCommandPath(systemctl)).Reload(ctx, Written{}))
	require.Equal(t, []string{"reload|redis.service", "try-restart|uvicorn.service"}, lines(sysLog))

	require.NoError(t, NewLaunchdReloader("com.example.api", true, WithCommandPath(launchctl)).Reload(ctx, Written{}))
	require.NoError(t, NewLaunchdReloader("com.example.api", false, WithCommandPath(launchctl), WithLaunchdDomain("gui/501")).Reload(ctx, Written{}))
	require.Equal(t, []string{"kickstart|-k|system/com.example.api", "kickstart|gui/501/com.example.api"}, lines(launchLog))

	failing := writeScript(t, dir, "systemctl-fail", `echo "Unit redis.service not found." >&2; exit 5`)
	err := NewSystemdReloader("redis.service", "restart", WithCommandPath(failing)).Reload(ctx, Written{})
	require.ErrorContains(t, err, "exit status 5")
	require.ErrorContains(t, err, "Unit redis.service not found.")

	require.Equal(t, "systemd", NewSystemdReloader("a", "reload").Kind())
	require.Equal(t, "launchd", NewLaunchdReloader("a", false).Kind())
	require.Equal(t, "exec", NewExecReloader([]string{"x"}, 0).Kind())
	require.Equal(t, "signal", NewSignalReloader("p", 0, syscall.SIGHUP).Kind())
}

func TestFailingReloadIsRetriedAndReported(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	okFile := filepath.Join(base, "ok")
	attempts := filepath.Join(base, "attempts")
	flaky := writeScript(t, base, "flaky.sh", `echo try >> '`+attempts+`'; [ -f '`+okFile+`' ] && exit 0; echo "service not ready" >&2; exit 1`)
	next, nextLog := recorder(t, base, "next")
	m := newTestManager(t, e, []Output{{Name: "svc", Dir: filepath.Join(base, "out"), CertFile: "cert.pem",
		Reloads: []Reloader{NewExecReloader([]string{flaky}, 5*time.Second), NewExecReloader([]string{next, "next"}, 5*time.Second)}}})
	runManager(t, m)

	require.Eventually(t, func() bool { return len(lines(attempts)) >= 3 }, waitFor, tick, "failed reload not retried")
	st := outputState(m, "svc")
	require.False(t, st.Healthy())
	require.Contains(t, st.LastReloadError, "reload 1/2 (exec)")
	require.Contains(t, st.LastReloadError, "service not ready")
	require.Empty(t, st.LastWriteError, "the write itself succeeded")
	require.Empty(t, lines(nextLog), "later reloads wait for the earlier one")
	require.GreaterOrEqual(t, testutil.ToFloat64(m.metrics.reloadFailures.WithLabelValues("svc", "exec")), 2.0)

	require.NoError(t, os.WriteFile(okFile, nil, 0o644))
	require.Eventually(t, func() bool {
		st := outputState(m, "svc")
		return st.Healthy() && st.LastReloadError == "" && len(lines(nextLog)) == 1
	}, waitFor, tick)
	// Success ends the retries.
	n := len(lines(attempts))
	time.Sleep(time.Second)
	require.Len(t, lines(attempts), n)
}

// TestHeldReloadsRunAfterRelease: with HoldReloads the files are written
// (by WriteAll and by the loops) but no reload runs until ReleaseReloads,
// which runs them in the background; that is what lets an agent send
// READY=1 between its first write and the first reloads.
func TestHeldReloadsRunAfterRelease(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	script, log := recorder(t, base, "reload")
	m := newTestManager(t, e, []Output{{Name: "svc", Dir: filepath.Join(base, "out"), CertFile: "cert.pem",
		Reloads: []Reloader{NewExecReloader([]string{script, "svc"}, 5*time.Second)}}})
	m.HoldReloads()
	runManager(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, e.src.WaitReady(ctx))
	require.NoError(t, m.WriteAll(ctx))
	waitSerial(t, filepath.Join(base, "out", "cert.pem"), currentSerial(e, ""))
	time.Sleep(300 * time.Millisecond) // the loop's own first pass
	require.Empty(t, lines(log), "a reload ran while held")

	m.ReleaseReloads()
	require.Eventually(t, func() bool { return len(lines(log)) == 1 }, waitFor, tick)
	require.True(t, outputState(m, "svc").Healthy())
	m.ReleaseReloads() // a second release changes nothing
	time.Sleep(300 * time.Millisecond)
	require.Len(t, lines(log), 1)
}

// TestSystemdReloadAtStartSkipsInactiveUnit: the reloads held at start
// act only on active units (`systemctl is-active` exit 0), whatever the
// action; exit 3 (inactive, activating, unknown) skips with ErrNotRunning,
// and a systemctl that cannot answer is an error, not a skip.
func TestSystemdReloadAtStartSkipsInactiveUnit(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	activeFile := filepath.Join(dir, "active")
	log := filepath.Join(dir, "calls")
	systemctl := writeScript(t, dir, "systemctl", `echo "$*" >> '`+log+`'
[ "$1" = is-active ] || exit 0
[ -f '`+activeFile+`' ] && exit 0
exit 3`)
	r := NewSystemdReloader("api.service", "restart", WithCommandPath(systemctl)).(StartReloader)
	err := r.ReloadAtStart(ctx, Written{})
	require.ErrorIs(t, err, ErrNotRunning)
	require.Equal(t, []string{"is-active --quiet api.service"}, lines(log))

	require.NoError(t, os.WriteFile(activeFile, nil, 0o600))
	require.NoError(t, r.ReloadAtStart(ctx, Written{}))
	require.Equal(t, []string{"is-active --quiet api.service", "is-active --quiet api.service", "restart api.service"}, lines(log))

	broken := writeScript(t, dir, "systemctl-broken", `echo "Failed to connect to bus" >&2; exit 1`)
	err = NewSystemdReloader("api.service", "reload", WithCommandPath(broken)).(StartReloader).ReloadAtStart(ctx, Written{})
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotRunning)
	require.ErrorContains(t, err, "Failed to connect to bus")
}

// wedgedReloader ignores its context and blocks until released: a reload
// that its own deadline cannot end, i.e. a wedged loop.
type wedgedReloader struct{ release chan struct{} }

func (w wedgedReloader) Kind() string { return "wedged" }
func (w wedgedReloader) Reload(context.Context, Written) error {
	<-w.release
	return nil
}
func (w wedgedReloader) Timeout() time.Duration { return 50 * time.Millisecond }

// TestStalledNamesAWedgedLoop: a loop stuck in a pass past the pass's own
// deadlines is reported by Stalled (what the agent's systemd watchdog
// asks before each WATCHDOG=1); a loop that waits or works within its
// deadlines is not.
func TestStalledNamesAWedgedLoop(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	w := wedgedReloader{release: make(chan struct{})}
	m := newTestManager(t, e, []Output{
		{Name: "ok", Dir: filepath.Join(base, "ok"), CertFile: "cert.pem"},
		{Name: "stuck", Dir: filepath.Join(base, "stuck"), CertFile: "cert.pem", Reloads: []Reloader{w}},
	}, withStepSlack(100*time.Millisecond))
	require.Empty(t, m.Stalled())
	runManager(t, m)
	waitSerial(t, filepath.Join(base, "ok", "cert.pem"), currentSerial(e, ""))
	require.Eventually(t, func() bool { return slices.Equal(m.Stalled(), []string{"stuck"}) }, waitFor, tick)

	close(w.release) // the loop moves on: no longer stalled
	require.Eventually(t, func() bool { return len(m.Stalled()) == 0 }, waitFor, tick)
}

// writtenRecorder is a StartReloader that keeps what each reload was told.
type writtenRecorder struct {
	mu    sync.Mutex
	calls []string // "reload" or "start", one per call
	seen  []Written
}

func (r *writtenRecorder) Kind() string { return "recorder" }
func (r *writtenRecorder) Reload(_ context.Context, w Written) error {
	return r.record("reload", w)
}
func (r *writtenRecorder) ReloadAtStart(_ context.Context, w Written) error {
	return r.record("start", w)
}
func (r *writtenRecorder) record(call string, w Written) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call)
	r.seen = append(r.seen, w)
	return nil
}
func (r *writtenRecorder) last() (int, string, Written) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		return 0, "", Written{}
	}
	return len(r.seen), r.calls[len(r.calls)-1], r.seen[len(r.seen)-1]
}

// requireWritten: w names the output dir, each file of the set by its
// configured name with a path that holds it, and the SVID on disk.
func requireWritten(t *testing.T, w Written, dir string, names []string, serial *big.Int) {
	t.Helper()
	require.Equal(t, dir, w.Dir)
	require.Len(t, w.Files, len(names), "files: %v", w.Files)
	for _, n := range names {
		p, err := w.Path(n)
		require.NoError(t, err)
		require.Equal(t, filepath.Join(dir, n), p)
		require.True(t, filepath.IsAbs(p))
		require.FileExists(t, p)
	}
	require.NotNil(t, w.SVID)
	require.Equal(t, 0, w.SVID.Certificates[0].SerialNumber.Cmp(serial), "the SVID of the set")
	cert, _ := w.Path("cert.pem")
	require.Equal(t, 0, fileSerial(cert).Cmp(serial), "the file the path names holds that SVID")
	_, err := w.Path("other.pem")
	require.ErrorContains(t, err, "other.pem was not written to "+dir)
}

// TestReloadIsToldWhatWasWritten: every reload gets the set it follows
// (dir, each file by name with its absolute path, the SVID): after the
// first write, after a rotation, and the reloads held at start
// (ReloadAtStart) alike; nobody has to join the output's dir and names.
func TestReloadIsToldWhatWasWritten(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	dir := filepath.Join(base, "out")
	names := []string{"cert.pem", "key.pem", "ca.pem"}
	rec := &writtenRecorder{}
	m := newTestManager(t, e, []Output{{Name: "svc", Dir: dir, CertFile: "cert.pem", KeyFile: "key.pem", BundleFile: "ca.pem",
		Reloads: []Reloader{rec}}})
	m.HoldReloads()
	runManager(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, e.src.WaitReady(ctx))
	require.NoError(t, m.WriteAll(ctx))
	m.ReleaseReloads()
	require.Eventually(t, func() bool { n, _, _ := rec.last(); return n == 1 }, waitFor, tick)
	_, call, w := rec.last()
	require.Equal(t, "start", call)
	requireWritten(t, w, dir, names, currentSerial(e, ""))

	require.NoError(t, e.srv.RotateSVIDs())
	want := currentSerial(e, "")
	require.Eventually(t, func() bool {
		n, _, w := rec.last()
		return n >= 2 && w.SVID != nil && w.SVID.Certificates[0].SerialNumber.Cmp(want) == 0
	}, waitFor, tick)
	_, call, w = rec.last()
	require.Equal(t, "reload", call)
	requireWritten(t, w, dir, names, want)
}
