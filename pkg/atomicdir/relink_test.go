package atomicdir_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// TestRelink: the link is made, then re-pointed, replacing a regular file
// left at its name; a directory at the name, and a name that is not one,
// are refused; no temporary link is left behind either way.
func TestRelink(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "watched")
	require.NoError(t, os.Mkdir(dir, 0o755))
	link := filepath.Join(dir, "dyn.yml")
	require.NoError(t, os.WriteFile(link, []byte("left by an older version"), 0o600))

	require.NoError(t, atomicdir.CheckLinkDir(dir))
	require.NoError(t, atomicdir.Relink(dir, "dyn.yml", "/srv/set/a.yml"))
	got, err := os.Readlink(link)
	require.NoError(t, err)
	require.Equal(t, "/srv/set/a.yml", got)
	require.NoError(t, atomicdir.Relink(dir, "dyn.yml", "/srv/set/b.yml"))
	got, err = os.Readlink(link)
	require.NoError(t, err)
	require.Equal(t, "/srv/set/b.yml", got)

	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.yml"), 0o755))
	require.Error(t, atomicdir.Relink(dir, "sub.yml", "/srv/set/a.yml"))
	fi, err := os.Lstat(filepath.Join(dir, "sub.yml"))
	require.NoError(t, err)
	require.True(t, fi.IsDir(), "a directory at the name stays")

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	var de *atomicdir.DirError
	require.ErrorAs(t, atomicdir.Relink(file, "dyn.yml", "/srv/set/a.yml"), &de)
	require.Equal(t, "exists and is not a directory", de.Problem)

	for _, bad := range []string{"", ".", "..", "a/b.yml"} {
		require.ErrorContains(t, atomicdir.Relink(dir, bad, "/srv/set/a.yml"), "not a file name", "name %q", bad)
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"dyn.yml", "sub.yml"}, names, "no temporary link left")
}

// TestRelinkRefusesADirEveryoneCanWrite: in a directory every user can
// write (even with the sticky bit, as /tmp), a local user could have put
// their own file or a directory at the link's name before the first
// write. Both the check and Relink refuse it, naming the mode, and Relink
// makes nothing there.
func TestRelinkRefusesADirEveryoneCanWrite(t *testing.T) {
	for _, mode := range []os.FileMode{0o777, 0o777 | os.ModeSticky, 0o703} {
		dir := filepath.Join(t.TempDir(), "watched")
		require.NoError(t, os.Mkdir(dir, 0o700))
		require.NoError(t, os.Chmod(dir, mode))

		var de *atomicdir.DirError
		err := atomicdir.CheckLinkDir(dir)
		require.ErrorAs(t, err, &de, "mode %v", mode)
		require.Contains(t, err.Error(), "is writable by every user")
		err = atomicdir.Relink(dir, "dyn.yml", "/srv/set/a.yml")
		require.ErrorAs(t, err, &de, "mode %v", mode)
		require.Contains(t, err.Error(), "is writable by every user")
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Empty(t, ents, "mode %v: nothing made in the directory", mode)
	}
	// Group-writable is the consumer's group: allowed.
	dir := filepath.Join(t.TempDir(), "watched")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.Chmod(dir, 0o770|os.ModeSetgid))
	require.NoError(t, atomicdir.CheckLinkDir(dir))
	require.NoError(t, atomicdir.Relink(dir, "dyn.yml", "/srv/set/a.yml"))
}

// TestRelinkNeverFollowsASymlinkedDir: the watched directory swapped for a
// symlink to another directory is refused by the check and by Relink, and
// nothing is made where the symlink points; a missing directory is not a
// verdict for the check, and an error for Relink.
func TestRelinkNeverFollowsASymlinkedDir(t *testing.T) {
	target, unchanged := victim(t)
	dir := filepath.Join(t.TempDir(), "watched")
	require.NoError(t, os.Symlink(target, dir))

	var de *atomicdir.DirError
	require.ErrorAs(t, atomicdir.CheckLinkDir(dir), &de)
	require.Contains(t, de.Problem, "is a symlink")
	require.ErrorAs(t, atomicdir.Relink(dir, "cert.pem", "/srv/set/a.yml"), &de)
	require.Contains(t, de.Problem, "is a symlink")
	require.ErrorAs(t, atomicdir.Relink(dir, "dyn.yml", "/srv/set/a.yml"), &de)
	unchanged()

	missing := filepath.Join(t.TempDir(), "missing")
	require.NoError(t, atomicdir.CheckLinkDir(missing))
	err := atomicdir.Relink(missing, "dyn.yml", "/srv/set/a.yml")
	require.ErrorIs(t, err, os.ErrNotExist)
	require.False(t, errors.As(err, &de), "a missing directory is not a refusal: %v", err)
}

// TestRelinkRacingASwappedDir: a local user who owns the parent swaps the
// watched directory for a symlink to a victim directory and back, as fast
// as they can, while the agent relinks: every Relink either links inside
// the real directory or fails, and the victim never gets an entry.
func TestRelinkRacingASwappedDir(t *testing.T) {
	target, unchanged := victim(t)
	parent := t.TempDir()
	dir, real, evil := filepath.Join(parent, "watched"), filepath.Join(parent, "real"), filepath.Join(parent, "evil")
	require.NoError(t, os.Mkdir(real, 0o755))
	require.NoError(t, os.Symlink(target, evil))
	require.NoError(t, os.Rename(real, dir))

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Swap "watched" between the real directory and the symlink by
		// renames, so that it always exists as one or the other.
		for !stop.Load() {
			_ = os.Rename(dir, real)
			_ = os.Rename(evil, dir)
			_ = os.Rename(dir, evil)
			_ = os.Rename(real, dir)
		}
	}()
	var ok, refused int
	for i := 0; i < 2000; i++ {
		if err := atomicdir.Relink(dir, "cert.pem", "/srv/set/a.yml"); err != nil {
			refused++
			continue
		}
		ok++
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("2000 relinks against a swapping directory: %d made in the real one, %d refused", ok, refused)
	unchanged()
}
