package rotation

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// reloadLog is an exec reload that appends its tag to a file, so a test
// can count reloads per output from outside the Manager.
func reloadLog(t *testing.T, dir, tag string) (Reloader, string) {
	t.Helper()
	log := filepath.Join(dir, tag+".reloads")
	script := writeScript(t, dir, tag+".sh", `echo `+tag+` >> '`+log+`'`)
	return NewExecReloader([]string{script}, 5*time.Second), log
}

// TestApplyLeavesUntouchedOutputsAlone: a running Manager adds, replaces
// and removes outputs. The untouched output keeps its files and fires no
// reload; a replaced output whose files come out the same writes nothing
// and reloads nothing; one whose files differ (a new key mode) writes once;
// a removed output stops (its files stay) and its metrics go away.
func TestApplyLeavesUntouchedOutputsAlone(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	keepReload, keepLog := reloadLog(t, dir, "keep")
	sameReload, sameLog := reloadLog(t, dir, "same")
	goneReload, _ := reloadLog(t, dir, "gone")
	out := func(name string, rl Reloader) Output {
		return Output{Name: name, Dir: filepath.Join(dir, name), Reloads: []Reloader{rl}, Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	}
	w := newWrites()
	m := newTestManager(t, e, []Output{out("keep", keepReload), out("same", sameReload), out("gone", goneReload)},
		withWriteHook(w.hook), WithRegisterer(reg))
	runManager(t, m)
	serial := currentSerial(e, "")
	for _, n := range []string{"keep", "same", "gone"} {
		waitSerial(t, filepath.Join(dir, n, "svid.pem"), serial)
	}
	require.Eventually(t, func() bool { return len(lines(keepLog)) == 1 && len(lines(sameLog)) == 1 }, waitFor, tick)
	keepTarget, err := os.Readlink(filepath.Join(dir, "keep", "..data"))
	require.NoError(t, err)
	// The counter is bumped just after the write the file shows.
	require.Eventually(t, func() bool {
		_, found, err := metricstest.Lookup(reg, "identity_agent_rotations_total", map[string]string{"output": "gone"})
		return err == nil && found
	}, waitFor, tick, "the removed output had a series before")

	keepEvents := w.count("keep", false)
	sameAgain, sameLog2 := reloadLog(t, dir, "same2")
	wider := out("mode", nil)
	wider.Reloads = nil
	wider.Formats = []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem", KeyMode: 0o640}}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, m.Apply(ctx, Change{
		Remove: []string{"same", "gone"},
		Add:    []Output{out("same", sameAgain), wider},
	}))

	// The added output is written at once, with its own mode.
	waitSerial(t, filepath.Join(dir, "mode", "svid.pem"), serial)
	// A first write makes the stable names one after another: wait until
	// the write returned before looking at the key.
	require.Eventually(t, func() bool { return w.count("mode", true) == 1 }, waitFor, tick)
	fi, err := os.Stat(filepath.Join(dir, "mode", "key.pem"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o640), fi.Mode().Perm())
	// The replaced output was synced (a write attempt after Apply) but its
	// files on disk were the same: no change, no reload by its new reloader.
	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		n := 0
		for _, ev := range w.evs {
			if ev.Output == "same" && ev.Err == nil {
				n++
			}
		}
		return n >= 2
	}, waitFor, tick, "the replaced output never synced after Apply")
	require.Equal(t, 1, w.count("same", true), "same files must not be written again")
	require.Empty(t, lines(sameLog2), "a replaced output with the same files must not reload")
	require.Len(t, lines(sameLog), 1)
	// The untouched output: same ..data version, no reload.
	target, err := os.Readlink(filepath.Join(dir, "keep", "..data"))
	require.NoError(t, err)
	require.Equal(t, keepTarget, target)
	require.Len(t, lines(keepLog), 1)
	require.Equal(t, keepEvents, w.count("keep", false), "an output the change does not name must not even be synced")

	// The removed output: its files stay, its series are gone, its name is
	// no longer in the state.
	require.FileExists(t, filepath.Join(dir, "gone", "svid.pem"))
	_, found, err := metricstest.Lookup(reg, "identity_agent_rotations_total", map[string]string{"output": "gone"})
	require.NoError(t, err)
	require.False(t, found, "a removed output's series must be deleted")
	var names []string
	for _, o := range m.Snapshot().Outputs {
		names = append(names, o.Name)
	}
	require.ElementsMatch(t, []string{"keep", "same", "mode"}, names)

	// A rotation after Apply reaches every current output, and the removed
	// one stays as it was.
	require.NoError(t, e.srv.RotateSVIDs())
	next := currentSerial(e, "")
	require.NotEqual(t, serial, next)
	for _, n := range []string{"keep", "same", "mode"} {
		waitSerial(t, filepath.Join(dir, n, "svid.pem"), next)
	}
	require.Eventually(t, func() bool { return len(lines(sameLog2)) == 1 && len(lines(keepLog)) == 2 }, waitFor, tick)
	require.Equal(t, 0, fileSerial(filepath.Join(dir, "gone", "svid.pem")).Cmp(serial), "a removed output must not be written")
}

// TestApplyIsAllOrNothing: a change that would leave two outputs on one
// directory, or names an output that does not exist, changes nothing.
func TestApplyIsAllOrNothing(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := t.TempDir()
	a := Output{Name: "a", Dir: filepath.Join(dir, "a"), Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	b := Output{Name: "b", Dir: filepath.Join(dir, "b"), Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	m := newTestManager(t, e, []Output{a, b})
	runManager(t, m)
	waitSerial(t, filepath.Join(dir, "b", "svid.pem"), currentSerial(e, ""))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	clash := Output{Name: "c", Dir: filepath.Join(dir, "a"), Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	err := m.Apply(ctx, Change{Remove: []string{"b"}, Add: []Output{clash}})
	require.ErrorContains(t, err, `dir `+filepath.Join(dir, "a")+` is also used by output "a"`)
	err = m.Apply(ctx, Change{Remove: []string{"nope"}})
	require.ErrorContains(t, err, `remove output "nope": no such output`)
	var names []string
	for _, o := range m.Snapshot().Outputs {
		names = append(names, o.Name)
	}
	require.Equal(t, []string{"a", "b"}, names, "a refused change must leave every output running")
	require.NoDirExists(t, filepath.Join(dir, "c"))

	// b still rotates: its loop was never stopped.
	require.NoError(t, e.srv.RotateSVIDs())
	waitSerial(t, filepath.Join(dir, "b", "svid.pem"), currentSerial(e, ""))
}

// TestApplyCreatesNothingWhenRefused: an added output whose directory
// cannot be created (its parent is a file) refuses the whole change, and
// the directories of the outputs added with it, parents included, are not
// left behind.
func TestApplyCreatesNothingWhenRefused(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := t.TempDir()
	a := Output{Name: "a", Dir: filepath.Join(dir, "a"), Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	m := newTestManager(t, e, []Output{a})
	runManager(t, m)
	waitSerial(t, filepath.Join(dir, "a", "svid.pem"), currentSerial(e, ""))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o600))
	fresh := Output{Name: "fresh", Dir: filepath.Join(dir, "new", "fresh"), Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	bad := Output{Name: "bad", Dir: filepath.Join(dir, "file", "bad"), Formats: []Format{&PEM{CertFile: "svid.pem", KeyFile: "key.pem"}}}
	err := m.Apply(ctx, Change{Add: []Output{fresh, bad}})
	require.ErrorContains(t, err, `output "bad"`)
	require.NoDirExists(t, filepath.Join(dir, "new"), "a refused change must not leave the directories it created")
	var names []string
	for _, o := range m.Snapshot().Outputs {
		names = append(names, o.Name)
	}
	require.Equal(t, []string{"a"}, names)
}
