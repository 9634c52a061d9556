package service

import (
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func mode(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Mode()
}

func TestEnsureDirsCreatesWithMode(t *testing.T) {
	base := t.TempDir()
	out := filepath.Join(base, "a", "b", "redis")
	sock := filepath.Join(base, "run", "ia", "admin.sock")
	require.NoError(t, EnsureDirs(OutputDir(out, "", ""), SocketDir("unix://"+sock, ""), Dir{Path: filepath.Join(base, "state"), Mode: 0o750}))
	require.Equal(t, fs.ModeDir|0o755, mode(t, out))
	require.Equal(t, fs.ModeDir|0o755, mode(t, filepath.Dir(sock)))
	require.Equal(t, fs.ModeDir|0o750, mode(t, filepath.Join(base, "state")))
	// Idempotent.
	require.NoError(t, EnsureDirs(OutputDir(out, "", "")))
}

func TestEnsureDirsFixesModeOfOwnDir(t *testing.T) {
	d := filepath.Join(t.TempDir(), "out")
	require.NoError(t, os.Mkdir(d, 0o700))
	require.NoError(t, os.Chmod(d, 0o777))
	require.NoError(t, EnsureDirs(OutputDir(d, "", "")))
	require.Equal(t, fs.ModeDir|0o755, mode(t, d))
}

func TestEnsureDirsRefuses(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(base, link))

	require.ErrorContains(t, EnsureDirs(OutputDir(file, "", "")), "exists and is not a directory")
	require.ErrorContains(t, EnsureDirs(OutputDir(link, "", "")), "is a symlink")
	require.ErrorContains(t, EnsureDirs(OutputDir("relative/dir", "", "")), "absolute, clean path")
	require.ErrorContains(t, EnsureDirs(Dir{Path: filepath.Join(base, "x"), Mode: fs.ModeSticky | 0o755}), "permission bits only")
	require.ErrorContains(t, EnsureDirs(OutputDir(filepath.Join(base, "y"), "no-such-user-ia", "")), `user "no-such-user-ia"`)
}

// A sticky shared directory (like /tmp) is used as it is, never chmodded.
func TestEnsureDirsLeavesStickyDirs(t *testing.T) {
	d := filepath.Join(t.TempDir(), "shared")
	require.NoError(t, os.Mkdir(d, 0o700))
	require.NoError(t, os.Chmod(d, fs.ModeSticky|0o777))
	require.NoError(t, EnsureDirs(Dir{Path: d, Mode: 0o700}))
	require.Equal(t, fs.ModeDir|fs.ModeSticky|0o777, mode(t, d))
}

func TestEnsureDirsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown to another user")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base := t.TempDir()
	d := filepath.Join(base, "redis")
	require.NoError(t, EnsureDirs(OutputDir(d, "nobody", "")))
	st, _ := mustStat(t, d)
	require.Equal(t, uint32(uid), st.Uid)
	require.Equal(t, uint32(gid), st.Gid)
	require.Equal(t, fs.ModeDir|0o755, mode(t, d))

	// A directory of somebody else is never taken over.
	other := filepath.Join(base, "owned-by-root")
	require.NoError(t, os.Mkdir(other, 0o700))
	err = EnsureDirs(OutputDir(other, "nobody", ""))
	require.ErrorContains(t, err, "is owned by uid 0, not nobody")
	st, fi := mustStat(t, other)
	require.Equal(t, uint32(0), st.Uid)
	require.Equal(t, fs.ModeDir|0o700, fi.Mode())
}

func mustStat(t *testing.T, p string) (*syscall.Stat_t, fs.FileInfo) {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t), fi
}

func TestPrepare(t *testing.T) {
	base := t.TempDir()
	out := filepath.Join(base, "etc", "certs", "redis")
	sock := filepath.Join(base, "run", "ia", "proxy.sock")
	require.NoError(t, Prepare("", []string{out}, []string{"unix://" + sock}))
	require.Equal(t, fs.ModeDir|OutputDirMode, mode(t, out))
	require.Equal(t, fs.ModeDir|SocketDirMode, mode(t, filepath.Dir(sock)))
	_, err := os.Lstat(sock)
	require.ErrorIs(t, err, fs.ErrNotExist, "only the directory is made; the listener creates the socket")
}

func TestEnsureDirsNeverWidensAnExistingDirectory(t *testing.T) {
	base := t.TempDir()
	tight := filepath.Join(base, "tight")
	loose := filepath.Join(base, "loose")
	require.NoError(t, os.Mkdir(tight, 0o700))
	require.NoError(t, os.Chmod(tight, 0o750))
	require.NoError(t, os.Mkdir(loose, 0o700))
	require.NoError(t, os.Chmod(loose, 0o777))
	require.NoError(t, EnsureDirs(OutputDir(tight, "", ""), OutputDir(loose, "", "")))
	fi, err := os.Stat(tight)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o750), fi.Mode().Perm(), "an operator's tighter mode is kept")
	fi, err = os.Stat(loose)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "bits beyond OutputDirMode are removed")
}

// An output's directory takes the output owner's group, through the one
// function that creates output directories (atomicdir.MakeDir), and nothing
// else of the layout does.
func TestLayoutPrepareGivesOutputDirsTheOwnersGroup(t *testing.T) {
	groups, err := os.Getgroups()
	require.NoError(t, err)
	gid := os.Getgid()
	for _, g := range groups {
		if g != gid {
			gid = g // a group we may chgrp to that is not the default
			break
		}
	}
	if os.Geteuid() == 0 {
		gid = 4242 // root may give any group
	}
	base := t.TempDir()
	out := filepath.Join(base, "out", "redis")
	state := filepath.Join(base, "state")
	l := Layout{OutputDirs: []string{out}, OutputGroups: map[string]string{out: strconv.Itoa(gid)}, WritableDirs: []string{out, state}}
	require.NoError(t, l.Prepare(""))
	st, _ := mustStat(t, out)
	assert.Equal(t, uint32(gid), st.Gid)
	assert.Equal(t, fs.ModeDir|OutputDirMode, mode(t, out))
	st, _ = mustStat(t, state)
	assert.Equal(t, uint32(os.Getegid()), st.Gid, "not an output: the user's group")
}

// run's prepare step (no --user) refuses an output directory another user
// made, as `config validate` does: the same rule (atomicdir.CheckDir).
// Before, it was used as it was. A socket directory of someone else's is
// still used as it is.
func TestEnsureDirsRefusesAnOutputDirOfAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another user (uid 65534)")
	}
	shared := filepath.Join(t.TempDir(), "shared")
	require.NoError(t, os.Mkdir(shared, 0o700))
	require.NoError(t, os.Chmod(shared, 0o777|fs.ModeSticky))
	d := filepath.Join(shared, "tls")
	require.NoError(t, os.Mkdir(d, 0o700))
	require.NoError(t, os.Chown(d, 65534, 65534))
	require.NoError(t, os.Chmod(d, 0o777))

	err := Layout{OutputDirs: []string{d}}.Prepare("")
	require.EqualError(t, err, "service: directory "+d+" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own")
	assert.Equal(t, fs.ModeDir|0o777, mode(t, d), "not chmod-ed")
	require.NoError(t, EnsureDirs(SocketDir(filepath.Join(d, "proxy.sock"), "")))
	assert.Equal(t, fs.ModeDir|0o777, mode(t, d))
}
