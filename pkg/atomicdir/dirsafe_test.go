package atomicdir_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// victim is a directory outside the output directory, mode 0751, holding
// one file (mode 0640): what an attacker points a planted symlink at.
// check asserts that nothing about it changed.
func victim(t *testing.T) (dir string, check func()) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.Chmod(dir, 0o751))
	f := filepath.Join(dir, "cert.pem")
	require.NoError(t, os.WriteFile(f, []byte("victim's"), 0o600))
	require.NoError(t, os.Chmod(f, 0o640))
	return dir, func() {
		t.Helper()
		fi, err := os.Lstat(dir)
		require.NoError(t, err)
		assert.Equal(t, fs.ModeDir|0o751, fi.Mode(), "the symlink's target directory keeps its mode")
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, ents, 1, "nothing created or removed in the target")
		fi, err = os.Lstat(f)
		require.NoError(t, err)
		assert.Equal(t, fs.FileMode(0o640), fi.Mode(), "the target's file keeps its mode")
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		assert.Equal(t, "victim's", string(b))
	}
}

// The current version directory swapped for a symlink to a directory of
// someone else's (the attack: a root-owned 0751 directory ended
// up 0700). Restore moves the symlink aside and never chmods, writes or
// removes through it.
func TestRestoreNeverFollowsASymlinkedVersionDir(t *testing.T) {
	dir, w, files := newWritten(t)
	target, check := victim(t)
	ver, err := os.Readlink(filepath.Join(dir, "..data"))
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(filepath.Join(dir, ver)))
	require.NoError(t, os.Symlink(target, filepath.Join(dir, ver)))

	diff, err := w.Diff(files)
	require.NoError(t, err)
	assert.Equal(t, "..data: version directory "+ver+" is a symlink", diff)
	moved := restoreOK(t, dir, w, files)
	check()
	require.Len(t, moved, 1)
	assert.Equal(t, filepath.Join(dir, ver), moved[0].From)
	fi, err := os.Lstat(moved[0].To)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeSymlink, fi.Mode().Type(), "the link itself is what moved")
	// Later writes prune old versions; the link is not a version of ours.
	for _, c := range []string{"C2", "C3", "C4"} {
		_, err := w.Write(fileSet(c, "K", "B"))
		require.NoError(t, err)
	}
	check()
}

// The same for a symlink planted in place of ..data, of a stable name, of
// a file inside the version directory and of a subdirectory of it.
func TestRestoreNeverFollowsPlantedSymlinks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir, ver, target string)
	}{
		{"..data", func(t *testing.T, dir, _, target string) {
			replaceWithLink(t, filepath.Join(dir, "..data"), target)
		}},
		{"..data to a version name", func(t *testing.T, dir, _, target string) {
			fake := "..2026_01_01_00_00_00.1"
			require.NoError(t, os.Symlink(target, filepath.Join(dir, fake)))
			replaceWithLink(t, filepath.Join(dir, "..data"), fake)
		}},
		{"stable name", func(t *testing.T, dir, _, target string) {
			replaceWithLink(t, filepath.Join(dir, "cert.pem"), filepath.Join(target, "cert.pem"))
		}},
		{"file in the version", func(t *testing.T, dir, ver, target string) {
			replaceWithLink(t, filepath.Join(dir, ver, "cert.pem"), filepath.Join(target, "cert.pem"))
		}},
		{"subdirectory of the version", func(t *testing.T, dir, ver, target string) {
			replaceWithLink(t, filepath.Join(dir, ver, "bundles"), target)
		}},
		{"..data_tmp", func(t *testing.T, dir, _, target string) {
			require.NoError(t, os.Symlink(target, filepath.Join(dir, "..data_tmp")))
			require.NoError(t, os.Chmod(filepath.Join(dir, "key.pem"), 0o644))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "tls")
			w, err := atomicdir.NewWriter(dir)
			require.NoError(t, err)
			files := append(fileSet("C", "K", "B"), atomicdir.File{Name: "bundles/a.pem", Data: []byte("A"), Mode: 0o644})
			_, err = w.Write(files)
			require.NoError(t, err)
			ver, err := os.Readlink(filepath.Join(dir, "..data"))
			require.NoError(t, err)
			target, check := victim(t)
			tc.plant(t, dir, ver, target)

			diff, err := w.Diff(files)
			require.NoError(t, err)
			assert.NotEmpty(t, diff)
			check()
			_, _, err = w.Restore(files, time.Now())
			require.NoError(t, err)
			diff, err = w.Diff(files)
			require.NoError(t, err)
			assert.Empty(t, diff, "restored")
			check()
			for _, c := range []string{"C2", "C3", "C4"} {
				_, err := w.Write(append(fileSet(c, "K", "B"), atomicdir.File{Name: "bundles/a.pem", Data: []byte("A"), Mode: 0o644}))
				require.NoError(t, err)
			}
			check()
		})
	}
}

func replaceWithLink(t *testing.T, p, target string) {
	t.Helper()
	require.NoError(t, os.RemoveAll(p))
	require.NoError(t, os.Symlink(target, p))
}

// An output directory that is a symlink is refused: before, the writer
// wrote its versions into the link's target and, with a dir mode set,
// chmod-ed it.
func TestDirWriterRefusesASymlinkedDir(t *testing.T) {
	target, check := victim(t)
	link := filepath.Join(t.TempDir(), "tls")
	require.NoError(t, os.Symlink(target, link))
	_, err := atomicdir.NewWriter(link, atomicdir.WithDirMode(0o700))
	require.EqualError(t, err, "dir writer: directory "+link+" is a symlink; configure the directory it points to")
	check()

	// Swapped in after the writer was made: every write refuses it.
	dir := filepath.Join(t.TempDir(), "tls")
	w, err := atomicdir.NewWriter(dir, atomicdir.WithDirMode(0o750))
	require.NoError(t, err)
	require.NoError(t, os.Remove(dir))
	require.NoError(t, os.Symlink(target, dir))
	_, err = w.Write(fileSet("C", "K", "B"))
	require.ErrorContains(t, err, "is a symlink")
	_, _, err = w.Restore(fileSet("C", "K", "B"), time.Now())
	require.ErrorContains(t, err, "is a symlink")
	check()
}

// A directory of another user (here nobody, in a sticky 1777 directory as
// /tmp is) is refused when the writer is made and on every write, and
// nothing in it is changed: its owner could swap what the writer relies on.
func TestDirWriterRefusesSomeoneElsesDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another user (uid 65534)")
	}
	shared := filepath.Join(t.TempDir(), "shared")
	require.NoError(t, os.Mkdir(shared, 0o700))
	require.NoError(t, os.Chmod(shared, 0o777|fs.ModeSticky))
	dir := filepath.Join(shared, "tls")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.Chown(dir, 65534, 65534))
	require.NoError(t, os.Chmod(dir, 0o777))

	_, err := atomicdir.NewWriter(dir, atomicdir.WithDirMode(0o755))
	require.EqualError(t, err, "dir writer: directory "+dir+" is owned by uid 65534, not the writer's user (uid 0): chown it to the writer's user or point the config at a directory of its own")
	require.EqualError(t, atomicdir.CheckDir(dir, 0, "the agent's user"), "directory "+dir+" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own")
	fi, err := os.Lstat(dir)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o777, fi.Mode(), "not chmod-ed")

	// Our directory handed to someone else after the writer was made.
	own := filepath.Join(shared, "own")
	w, err := atomicdir.NewWriter(own)
	require.NoError(t, err)
	require.NoError(t, os.Chown(own, 65534, -1))
	_, err = w.Write(fileSet("C", "K", "B"))
	require.ErrorContains(t, err, "is owned by uid 65534")
	ents, err := os.ReadDir(own)
	require.NoError(t, err)
	assert.Empty(t, ents, "nothing written into it")
}

// quarantineEntries lists dir's .quarantine- entries.
func quarantineEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range entries(t, dir) {
		if strings.HasPrefix(n, ".quarantine-") {
			out = append(out, n)
		}
	}
	return out
}

// A chmod flood makes every restore quarantine a key-bearing version; at
// most atomicdir.QuarantineKeep stay, each 0700, and none outlives
// atomicdir.QuarantineMaxAge.
func TestQuarantineIsBounded(t *testing.T) {
	dir, w, files := newWritten(t)
	t0 := time.Now()
	for i := range 10 {
		require.NoError(t, os.Chmod(filepath.Join(dir, "key.pem"), 0o644))
		_, moved, err := w.Restore(files, t0.Add(time.Duration(i)*time.Second))
		require.NoError(t, err)
		require.Len(t, moved, 1)
		assert.LessOrEqual(t, len(quarantineEntries(t, dir)), atomicdir.QuarantineKeep)
	}
	q := quarantineEntries(t, dir)
	require.Len(t, q, atomicdir.QuarantineKeep)
	for _, n := range q {
		fi, err := os.Lstat(filepath.Join(dir, n))
		require.NoError(t, err)
		assert.Equal(t, fs.ModeDir|0o700, fi.Mode(), n)
	}
	assert.Contains(t, strings.Join(q, " "), t0.Add(9*time.Second).UTC().Format("20060102T150405"), "the newest is kept")

	// A day later, the next write (nothing to change) clears them.
	_, err := w.Write(files)
	require.NoError(t, err)
	assert.Len(t, quarantineEntries(t, dir), atomicdir.QuarantineKeep, "not yet a day old")
	_, _, err = w.Restore(files, t0.Add(atomicdir.QuarantineMaxAge+10*time.Second))
	require.NoError(t, err)
	assert.Empty(t, quarantineEntries(t, dir))
}

// Pruning removes only what the writer put there: a quarantined directory
// of someone else's stays, with what it holds, and files or directories
// that merely look like quarantine entries without its name shape stay.
func TestQuarantinePruneKeepsWhatIsNotTheWriters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another user (uid 65534)")
	}
	dir, w, files := newWritten(t)
	t0 := time.Now()
	// Someone else's directory in place of ..data.
	require.NoError(t, os.Remove(filepath.Join(dir, "..data")))
	evil := filepath.Join(dir, "..data")
	require.NoError(t, os.Mkdir(evil, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(evil, "cert.pem"), []byte("theirs"), 0o644))
	require.NoError(t, os.Chown(filepath.Join(evil, "cert.pem"), 65534, 65534))
	require.NoError(t, os.Chown(evil, 65534, 65534))
	_, moved, err := w.Restore(files, t0)
	require.NoError(t, err)
	require.Len(t, moved, 1)
	foreign := moved[0].To
	notOurs := filepath.Join(dir, ".quarantine-note")
	require.NoError(t, os.WriteFile(notOurs, []byte("operator's"), 0o600))

	for i := range 6 {
		require.NoError(t, os.Chmod(filepath.Join(dir, "key.pem"), 0o644))
		_, _, err := w.Restore(files, t0.Add(time.Duration(i+1)*time.Second))
		require.NoError(t, err)
	}
	_, _, err = w.Restore(files, t0.Add(atomicdir.QuarantineMaxAge+time.Hour))
	require.NoError(t, err)
	q := quarantineEntries(t, dir)
	assert.ElementsMatch(t, []string{filepath.Base(foreign), ".quarantine-note"}, q)
	b, err := os.ReadFile(filepath.Join(foreign, "cert.pem"))
	require.NoError(t, err)
	assert.Equal(t, "theirs", string(b), "someone else's directory is kept whole")
	st := mustLstat(t, foreign)
	assert.EqualValues(t, 65534, st.Uid)
}

func mustLstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t)
}
