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

func newWritten(t *testing.T) (string, *atomicdir.Writer, []atomicdir.File) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	files := fileSet("C", "K", "B")
	_, err = w.Write(files)
	require.NoError(t, err)
	return dir, w, files
}

// restoreOK runs Restore and checks the set is whole again and each moved
// path exists under a quarantine name.
func restoreOK(t *testing.T, dir string, w *atomicdir.Writer, files []atomicdir.File) []atomicdir.Moved {
	t.Helper()
	changed, moved, err := w.Restore(files, time.Now())
	require.NoError(t, err)
	assert.True(t, changed)
	diff, err := w.Diff(files)
	require.NoError(t, err)
	assert.Empty(t, diff)
	assert.Equal(t, map[string]string{"cert.pem": "C", "key.pem": "K", "bundle.pem": "B"},
		readVisible(t, dir, "cert.pem", "key.pem", "bundle.pem"))
	for _, m := range moved {
		assert.Equal(t, dir, filepath.Dir(m.To))
		assert.True(t, strings.HasPrefix(filepath.Base(m.To), ".quarantine-"+filepath.Base(m.From)+"-"), m.To)
		_, err := os.Lstat(m.To)
		require.NoError(t, err, "kept, not deleted")
	}
	return moved
}

// ..data replaced by a directory makes every stable name resolve into
// that directory. Write cannot rename a link over it; Restore moves it
// aside, intact, and restores the link.
func TestRestoreMovesADirectoryInPlaceOfData(t *testing.T) {
	dir, w, files := newWritten(t)
	require.NoError(t, os.Rename(filepath.Join(dir, "..data"), filepath.Join(dir, "old-link")))
	require.NoError(t, os.Remove(filepath.Join(dir, "old-link")))
	evil := filepath.Join(dir, "..data")
	require.NoError(t, os.Mkdir(evil, 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(evil, "cert.pem"), []byte("someone else's"), 0o640))
	assert.Equal(t, "someone else's", readVisible(t, dir, "cert.pem")["cert.pem"], "the hole: the stable name resolves into it")

	diff, err := w.Diff(files)
	require.NoError(t, err)
	assert.Equal(t, "..data: is a directory", diff)
	_, err = w.Write(files)
	require.Error(t, err, "a plain write cannot fix it")

	moved := restoreOK(t, dir, w, files)
	require.Len(t, moved, 1)
	assert.Equal(t, evil, moved[0].From)
	assert.Equal(t, "is a directory", moved[0].What)
	fi, err := os.Stat(moved[0].To)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o750), fi.Mode().Perm(), "modes untouched")
	b, err := os.ReadFile(filepath.Join(moved[0].To, "cert.pem"))
	require.NoError(t, err)
	assert.Equal(t, "someone else's", string(b))
}

// A stable name replaced by a directory (or a regular file) is moved
// aside and becomes our link again.
func TestRestoreMovesWhatStandsInPlaceOfAName(t *testing.T) {
	dir, w, files := newWritten(t)
	require.NoError(t, os.Remove(filepath.Join(dir, "key.pem")))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "key.pem"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.pem", "x"), []byte("x"), 0o600))
	require.NoError(t, os.Remove(filepath.Join(dir, "cert.pem")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("plain"), 0o644))
	diff, err := w.Diff(files)
	require.NoError(t, err)
	assert.NotEmpty(t, diff)

	moved := restoreOK(t, dir, w, files)
	require.Len(t, moved, 2)
	what := map[string]string{}
	for _, m := range moved {
		what[filepath.Base(m.From)] = m.What
	}
	assert.Equal(t, map[string]string{"key.pem": "is a directory", "cert.pem": "is a regular file"}, what)
}

// A version directory whose files were altered is moved aside once the new
// set is live, and narrowed to 0700: a key exposed in it by a chmod stays
// exposed under no name.
func TestRestoreQuarantinesAnAlteredVersion(t *testing.T) {
	dir, w, files := newWritten(t)
	ver, err := os.Readlink(filepath.Join(dir, "..data"))
	require.NoError(t, err)
	require.NoError(t, os.Chmod(filepath.Join(dir, "key.pem"), 0o644))

	moved := restoreOK(t, dir, w, files)
	require.Len(t, moved, 1)
	assert.Equal(t, filepath.Join(dir, ver), moved[0].From)
	fi, err := os.Stat(moved[0].To)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o700), fi.Mode().Perm())
	_, err = os.Lstat(filepath.Join(dir, ver))
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// With no owner configured, files must still have the owner the process
// gives them: a chown or chgrp of the key is a difference.
func TestDiffSeesOwnerAndGroupChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	for _, tc := range []struct {
		name     string
		uid, gid int
		want     string
	}{
		{"owner", 65534, -1, "key.pem: uid 65534, want 0"},
		{"group", -1, 65534, "key.pem: gid 65534, want 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, w, files := newWritten(t)
			require.NoError(t, os.Chown(filepath.Join(dir, "key.pem"), tc.uid, tc.gid))
			diff, err := w.Diff(files)
			require.NoError(t, err)
			assert.Equal(t, tc.want, diff)
			moved := restoreOK(t, dir, w, files)
			require.Len(t, moved, 1, "the altered version is quarantined")
			fi, err := os.Stat(filepath.Join(dir, "key.pem"))
			require.NoError(t, err)
			st := fi.Sys().(*syscall.Stat_t)
			assert.EqualValues(t, 0, st.Uid)
			assert.EqualValues(t, 0, st.Gid)
		})
	}
}
