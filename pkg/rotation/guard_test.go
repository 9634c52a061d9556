package rotation

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func TestGuardRestoresDeletedAndAlteredFiles(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	dir := filepath.Join(base, "out")
	script, reloadLog := recorder(t, base, "reload")
	w := newWrites()
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, CertFile: "cert.pem", KeyFile: "key.pem", BundleFile: "ca.pem",
		Reloads: []Reloader{NewExecReloader([]string{script, "r"}, 5*time.Second)}}}, withWriteHook(w.hook))
	runManager(t, m)
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	waitSerial(t, certPath, currentSerial(e, ""))
	require.Eventually(t, func() bool { return len(lines(reloadLog)) == 1 }, waitFor, tick)
	cert, key := mustRead(t, certPath), mustRead(t, keyPath)

	restored := func(p string, want []byte, mode os.FileMode) func() bool {
		return func() bool {
			got, err := os.ReadFile(p)
			fi, serr := os.Stat(p)
			return err == nil && serr == nil && bytes.Equal(got, want) && fi.Mode().Perm() == mode
		}
	}

	// Deleted.
	require.NoError(t, os.Remove(certPath))
	require.Eventually(t, restored(certPath, cert, 0o644), waitFor, tick, "deleted cert not restored")

	// Altered in place (the write follows the symlink into the data dir).
	require.NoError(t, os.WriteFile(keyPath, []byte("not a key\n"), 0o600))
	require.Eventually(t, restored(keyPath, key, 0o600), waitFor, tick, "altered key not restored")

	// Widened permissions on the key.
	require.NoError(t, os.Chmod(keyPath, 0o644))
	require.Eventually(t, restored(keyPath, key, 0o600), waitFor, tick, "chmod-ed key not restored")

	// Replaced by a plain file (an editor's save-as-rename).
	tmp := filepath.Join(dir, "cert.pem.swp")
	require.NoError(t, os.WriteFile(tmp, []byte("edited\n"), 0o644))
	require.NoError(t, os.Rename(tmp, certPath))
	require.Eventually(t, restored(certPath, cert, 0o644), waitFor, tick, "replaced cert not restored")

	// The ..data link removed.
	require.NoError(t, os.Remove(filepath.Join(dir, "..data")))
	require.Eventually(t, restored(certPath, cert, 0o644), waitFor, tick, "..data not restored")

	// The whole directory removed. The guard may restore it while the
	// removal is under way (rm -rf then fails with "directory not empty",
	// as it would for an operator); remove again until one pass gets it all.
	require.Eventually(t, func() bool { return os.RemoveAll(dir) == nil }, waitFor, tick)
	require.Eventually(t, restored(certPath, cert, 0o644), waitFor, tick, "removed directory not restored")
	require.Eventually(t, restored(keyPath, key, 0o600), waitFor, tick)

	// Restores go through the reload path too.
	require.Eventually(t, func() bool { return len(lines(reloadLog)) >= 2 }, waitFor, tick)

	// No loop on our own writes: once settled, nothing more is written.
	waitSettled(t, w, "web")
	settled := w.count("web", true)
	time.Sleep(time.Second)
	require.Equal(t, settled, w.count("web", true), "guard keeps rewriting its own files")
	require.True(t, outputState(m, "web").Healthy())

	// And a real rotation afterwards is not mistaken for tampering, and
	// the guard still watches the recreated directory.
	require.NoError(t, e.srv.RotateSVIDs())
	waitSerial(t, certPath, currentSerial(e, ""))
	cert = mustRead(t, certPath)
	require.NoError(t, os.Remove(certPath))
	require.Eventually(t, restored(certPath, cert, 0o644), waitFor, tick, "guard lost the directory after it was recreated")
}

func TestGuardOff(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := t.TempDir()
	w := newWrites()
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, CertFile: "cert.pem"}}, WithGuard(false), withWriteHook(w.hook))
	runManager(t, m)
	certPath := filepath.Join(dir, "cert.pem")
	waitSerial(t, certPath, currentSerial(e, ""))
	waitSettled(t, w, "web")
	require.NoError(t, os.Remove(certPath))
	time.Sleep(500 * time.Millisecond)
	_, err := os.Lstat(certPath)
	require.ErrorIs(t, err, os.ErrNotExist, "guard disabled but file restored")
	// The next push writes it again.
	require.NoError(t, e.srv.RotateSVIDs())
	waitSerial(t, certPath, currentSerial(e, ""))
}

func TestWorkloadAPIDownStartedStoppedRestarted(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, false)
	dir := t.TempDir()
	core, logs := observer.New(zap.WarnLevel)
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, CertFile: "cert.pem", KeyFile: "key.pem"}},
		WithExpiryWindow(2*time.Hour), // the 1h SVIDs are always "within" it
		WithLogger(zap.New(core)), withWatchdogCheck(100*time.Millisecond))
	runManager(t, m)
	certPath := filepath.Join(dir, "cert.pem")

	// Down at start: nothing written, state says so.
	time.Sleep(300 * time.Millisecond)
	st := m.Snapshot()
	require.False(t, st.WorkloadAPI.Connected)
	require.False(t, st.Outputs[0].Healthy())
	_, err := os.Lstat(certPath)
	require.ErrorIs(t, err, os.ErrNotExist)

	// Started: files appear.
	require.NoError(t, e.srv.Start(e.socket))
	first := currentSerial(e, "")
	waitSerial(t, certPath, first)
	require.Eventually(t, func() bool { s := m.Snapshot(); return s.WorkloadAPI.Connected && s.Outputs[0].Healthy() }, waitFor, tick)
	require.Equal(t, ExpiryOverdue, m.Snapshot().Outputs[0].Expiry, "a 1h SVID is inside a 2h window")
	before := mustRead(t, certPath)

	// Stopped mid-run: files untouched, state shows the disconnect and the
	// watchdog marks the SVID.
	e.srv.Stop()
	require.Eventually(t, func() bool {
		s := m.Snapshot()
		return !s.WorkloadAPI.Connected && s.WorkloadAPI.LastError != "" && s.Outputs[0].Expiry == ExpiryOverdue
	}, waitFor, tick)
	require.Equal(t, before, mustRead(t, certPath))
	require.True(t, m.Snapshot().Outputs[0].Healthy(), "files on disk are still good")
	// The watchdog's timer (armed at NotAfter-window, already past) logs it.
	require.Eventually(t, func() bool {
		return logs.FilterMessage("Workload API unreachable and the SVID on disk expires soon").Len() > 0
	}, waitFor, tick)

	// Restarted: recovers and picks up what was issued meanwhile.
	require.NoError(t, e.srv.RotateSVIDs())
	require.NoError(t, e.srv.Start(e.socket))
	waitSerial(t, certPath, currentSerial(e, ""))
	require.Eventually(t, func() bool {
		s := m.Snapshot()
		return s.WorkloadAPI.Connected && s.Outputs[0].Healthy() && s.Outputs[0].Serial == serialString(currentSerial(e, ""))
	}, waitFor, tick)
}

// makeUnwritable makes dir refuse new entries: chattr +i as root (root
// ignores mode bits), chmod 0555 otherwise. It returns the undo.
func makeUnwritable(t *testing.T, dir string) func() {
	t.Helper()
	if os.Geteuid() != 0 {
		require.NoError(t, os.Chmod(dir, 0o555))
		return func() { _ = os.Chmod(dir, 0o755) }
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot make %s immutable as root: %v: %s", dir, err, out)
	}
	undo := func() { _ = exec.Command("chattr", "-i", dir).Run() }
	t.Cleanup(undo)
	return undo
}

func TestWriteFailureKeepsOldFilesAndRecovers(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := filepath.Join(t.TempDir(), "out")
	script, reloadLog := recorder(t, t.TempDir(), "reload")
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, CertFile: "cert.pem", KeyFile: "key.pem",
		Reloads: []Reloader{NewExecReloader([]string{script, "r"}, 5*time.Second)}}})
	runManager(t, m)
	certPath := filepath.Join(dir, "cert.pem")
	first := currentSerial(e, "")
	waitSerial(t, certPath, first)
	require.Eventually(t, func() bool { return len(lines(reloadLog)) == 1 }, waitFor, tick)
	before := mustRead(t, certPath)

	undo := makeUnwritable(t, dir)
	require.NoError(t, e.srv.RotateSVIDs())
	second := currentSerial(e, "")
	require.Eventually(t, func() bool {
		st := outputState(m, "web")
		return !st.Healthy() && st.LastWriteError != ""
	}, waitFor, tick)
	st := outputState(m, "web")
	require.Contains(t, st.LastWriteError, dir)
	require.Equal(t, serialString(first), st.Serial, "state must describe what is on disk")
	// Retried with backoff while it fails; nothing reloaded; old files kept.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(m.metrics.writeFailures.WithLabelValues("web")) >= 3
	}, waitFor, tick)
	require.Equal(t, before, mustRead(t, certPath))
	require.Len(t, lines(reloadLog), 1)

	undo()
	waitSerial(t, certPath, second)
	require.Eventually(t, func() bool {
		st := outputState(m, "web")
		return st.Healthy() && st.LastWriteError == "" && st.Serial == serialString(second) && len(lines(reloadLog)) == 2
	}, waitFor, tick)
}

// waitSettled waits until the output went 300ms without any write attempt
// (the first pushes of a fresh Source arrive in a short burst).
func waitSettled(t *testing.T, w *writes, output string) {
	t.Helper()
	last := -1
	require.Eventually(t, func() bool {
		n := w.count(output, false)
		same := n == last
		last = n
		return same
	}, waitFor, 300*time.Millisecond)
}

// The running guard never acts through a symlink planted in the output
// directory: the current version directory swapped for a symlink to a
// directory of someone else's (mode 0751; the attack turned a root
// one into 0700) is moved aside and the files restored, and the target
// keeps its mode and contents. A chmod flood on the key afterwards leaves
// at most atomicdir.QuarantineKeep quarantined versions, each 0700.
func TestGuardNeverChmodsThroughASymlinkAndBoundsItsQuarantine(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := filepath.Join(t.TempDir(), "out")
	w := newWrites()
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, CertFile: "cert.pem", KeyFile: "key.pem", BundleFile: "ca.pem"}}, withWriteHook(w.hook))
	runManager(t, m)
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	waitSerial(t, certPath, currentSerial(e, ""))
	waitSettled(t, w, "web")
	key := mustRead(t, keyPath)
	whole := func() bool {
		got, err := os.ReadFile(keyPath)
		fi, serr := os.Stat(keyPath)
		return err == nil && serr == nil && bytes.Equal(got, key) && fi.Mode().Perm() == 0o600
	}

	victim := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.Mkdir(victim, 0o700))
	require.NoError(t, os.Chmod(victim, 0o751))
	require.NoError(t, os.WriteFile(filepath.Join(victim, "key.pem"), []byte("victim's"), 0o644))
	ver, err := os.Readlink(filepath.Join(dir, "..data"))
	require.NoError(t, err)
	require.NoError(t, os.Rename(filepath.Join(dir, ver), filepath.Join(t.TempDir(), "gone")))
	require.NoError(t, os.Symlink(victim, filepath.Join(dir, ver)))
	require.Eventually(t, func() bool {
		_, err := os.Lstat(filepath.Join(dir, ver))
		return whole() && os.IsNotExist(err)
	}, waitFor, tick, "not restored")
	fi, err := os.Lstat(victim)
	require.NoError(t, err)
	require.Equal(t, os.ModeDir|0o751, fi.Mode(), "the guard chmod-ed through the symlink")
	require.Equal(t, []byte("victim's"), mustRead(t, filepath.Join(victim, "key.pem")))

	quarantined := func() []string {
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		var q []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".quarantine-") {
				q = append(q, e.Name())
			}
		}
		return q
	}
	for range 6 {
		require.NoError(t, os.Chmod(keyPath, 0o644))
		require.Eventually(t, whole, waitFor, tick, "chmod not restored")
		require.LessOrEqual(t, len(quarantined()), atomicdir.QuarantineKeep, "%v", quarantined())
	}
	require.Eventually(t, func() bool { return len(quarantined()) == atomicdir.QuarantineKeep }, waitFor, tick, "%v", quarantined())
	for _, n := range quarantined() {
		fi, err := os.Lstat(filepath.Join(dir, n))
		require.NoError(t, err)
		require.Equal(t, os.ModeDir|0o700, fi.Mode(), n)
	}
}
