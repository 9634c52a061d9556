package atomicdir_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

const helperEnv = "SVID_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "efbig-write" {
		os.Exit(efbigWriteHelper(os.Getenv("SVID_TEST_DIR")))
	}
	os.Exit(m.Run())
}

// efbigWriteHelper runs in a child process whose file size limit is 4 KiB,
// so writing a larger file fails part-way with EFBIG, as a full disk fails
// with ENOSPC: a real kernel error in the middle of writing a set, with
// no mount or loop device needed. The limit is set here, in the child,
// because it is per process and would break the parent's own writes.
func efbigWriteHelper(dir string) int {
	signal.Ignore(syscall.SIGXFSZ) // get EFBIG from write(2) instead of being killed
	lim := syscall.Rlimit{Cur: 4096, Max: 4096}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		return 2
	}
	w, err := atomicdir.NewWriter(dir)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	_, err = w.Write([]atomicdir.File{
		{Name: "cert.pem", Data: []byte("new cert"), Mode: 0o644},
		{Name: "key.pem", Data: bytes.Repeat([]byte("k"), 64<<10), Mode: 0o600},
	})
	fmt.Println(err)
	switch {
	case err == nil:
		return 3
	case !errors.Is(err, syscall.EFBIG):
		return 4
	}
	return 0
}

func fileSet(cert, key, bundle string) []atomicdir.File {
	return []atomicdir.File{
		{Name: "cert.pem", Data: []byte(cert), Mode: 0o644},
		{Name: "key.pem", Data: []byte(key), Mode: 0o600},
		{Name: "bundle.pem", Data: []byte(bundle), Mode: 0o644},
	}
}

// entries lists dir's names, sorted, for debris checks.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	sort.Strings(out)
	return out
}

func versionDirs(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range entries(t, dir) {
		if strings.HasPrefix(n, "..") && n != "..data" && n != "..data_tmp" {
			out = append(out, n)
		}
	}
	return out
}

func readVisible(t *testing.T, dir string, names ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		require.NoError(t, err)
		out[n] = string(b)
	}
	return out
}

// withUmask runs f under umask m; the umask is per process, so tests using
// this are not parallel.
func withUmask(m int, f func()) {
	old := syscall.Umask(m)
	defer syscall.Umask(old)
	f()
}

func TestDirWriterContentModesAndLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	w, err := atomicdir.NewWriter(dir, atomicdir.WithDirMode(0o750))
	require.NoError(t, err)
	assert.Equal(t, dir, w.Dir())

	var changed bool
	// A restrictive umask must not narrow the modes asked for: they are set
	// with fchmod, not taken from open(2).
	withUmask(0o077, func() { changed, err = w.Write(fileSet("C1", "K1", "B1")) })
	require.NoError(t, err)
	assert.True(t, changed)

	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o750), fi.Mode().Perm(), "dir mode")
	for _, f := range fileSet("", "", "") {
		p := filepath.Join(dir, f.Name)
		lfi, err := os.Lstat(p)
		require.NoError(t, err)
		require.Equal(t, fs.ModeSymlink, lfi.Mode().Type(), "%s is a symlink", f.Name)
		target, err := os.Readlink(p)
		require.NoError(t, err)
		assert.Equal(t, "..data/"+f.Name, target)
		fi, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, f.Mode, fi.Mode().Perm(), "%s mode", f.Name)
	}
	assert.Equal(t, map[string]string{"cert.pem": "C1", "key.pem": "K1", "bundle.pem": "B1"},
		readVisible(t, dir, "cert.pem", "key.pem", "bundle.pem"))
	vd := versionDirs(t, dir)
	require.Len(t, vd, 1)
	assert.Regexp(t, `^\.\.\d{4}_\d\d_\d\d_\d\d_\d\d_\d\d\.\d+$`, vd[0])
	vfi, err := os.Stat(filepath.Join(dir, vd[0]))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o750), vfi.Mode().Perm(), "version dir mode")

	// Identical content and modes: nothing is written.
	before := entries(t, dir)
	changed, err = w.Write(fileSet("C1", "K1", "B1"))
	require.NoError(t, err)
	assert.False(t, changed)
	assert.Equal(t, before, entries(t, dir))

	// A mode change alone is a change.
	set := fileSet("C1", "K1", "B1")
	set[1].Mode = 0o640
	changed, err = w.Write(set)
	require.NoError(t, err)
	assert.True(t, changed)
	fi, err = os.Stat(filepath.Join(dir, "key.pem"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())

	// Previous version is kept, older ones are removed.
	for i := range 5 {
		_, err := w.Write(fileSet(fmt.Sprint("C", i+2), "K", "B"))
		require.NoError(t, err)
	}
	assert.Len(t, versionDirs(t, dir), 2)
	assert.Equal(t, "C6", readVisible(t, dir, "cert.pem")["cert.pem"])

	// A name dropped from the set disappears; user files are not touched.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "README"), []byte("mine"), 0o644))
	changed, err = w.Write(fileSet("C7", "K", "B")[:2])
	require.NoError(t, err)
	assert.True(t, changed)
	assert.NoFileExists(t, filepath.Join(dir, "bundle.pem"))
	assert.FileExists(t, filepath.Join(dir, "README"))
	assert.NotContains(t, entries(t, dir), "..data_tmp")
}

func TestDirWriterReplacesPlainFiles(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("old plain"), 0o644))
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	changed, err := w.Write(fileSet("C", "K", "B"))
	require.NoError(t, err)
	assert.True(t, changed)
	target, err := os.Readlink(filepath.Join(dir, "cert.pem"))
	require.NoError(t, err)
	assert.Equal(t, "..data/cert.pem", target)
	assert.Equal(t, "C", readVisible(t, dir, "cert.pem")["cert.pem"])
	for _, n := range entries(t, dir) {
		assert.False(t, strings.HasPrefix(n, "..link_tmp"), "debris %s", n)
	}

	// A directory where a file should go is refused before anything changes.
	require.NoError(t, os.Mkdir(filepath.Join(dir, "ca.pem"), 0o755))
	before := entries(t, dir)
	_, err = w.Write(append(fileSet("C2", "K2", "B2"), atomicdir.File{Name: "ca.pem", Data: []byte("x"), Mode: 0o644}))
	require.ErrorContains(t, err, "ca.pem exists and is not a file or symlink")
	assert.Equal(t, before, entries(t, dir))
	assert.Equal(t, "C", readVisible(t, dir, "cert.pem")["cert.pem"])
}

func TestDirWriterOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir, atomicdir.WithOwner(atomicdir.Owner{UID: 1234, GID: 2345}))
	require.NoError(t, err)
	_, err = w.Write(fileSet("C", "K", "B"))
	require.NoError(t, err)
	for _, n := range []string{"cert.pem", "key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, n))
		require.NoError(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		assert.Equal(t, uint32(1234), st.Uid, n)
		assert.Equal(t, uint32(2345), st.Gid, n)
	}
	// The versioned directory stays the agent's (so it can prune it with
	// CAP_CHOWN alone); only its group is the owner's.
	fi, err := os.Stat(filepath.Join(dir, "..data"))
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, uint32(os.Geteuid()), st.Uid, "..data")
	assert.Equal(t, uint32(2345), st.Gid, "..data")
	ok, err := w.Check(fileSet("C", "K", "B"))
	require.NoError(t, err)
	assert.True(t, ok)
	// Ownership changed behind our back is a difference too.
	require.NoError(t, os.Chown(filepath.Join(dir, "key.pem"), 0, 2345))
	diff, err := w.Diff(fileSet("C", "K", "B"))
	require.NoError(t, err)
	assert.Equal(t, "key.pem: uid 0, want 1234", diff)
}

// Running as root, a read-only directory (chmod 0555) does not stop
// writes, and mounting a full tmpfs is not allowed here. This failure is
// injected honestly instead: "..data_tmp", the name the new link must take
// just before the swap, is occupied by a non-empty directory (what a crash
// plus a confused operator could leave behind). Every file of the new
// version has been written by then, so this exercises the cleanup of a
// complete-but-unpublished version.
func TestDirWriterFailureBeforeSwapKeepsPreviousSet(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	_, err = w.Write(fileSet("C1", "K1", "B1"))
	require.NoError(t, err)

	obstacle := filepath.Join(dir, "..data_tmp")
	require.NoError(t, os.MkdirAll(filepath.Join(obstacle, "sub"), 0o755))
	before := entries(t, dir)
	dataBefore, err := os.Readlink(filepath.Join(dir, "..data"))
	require.NoError(t, err)

	changed, err := w.Write(fileSet("C2", "K2", "B2"))
	require.Error(t, err)
	assert.False(t, changed)
	assert.Contains(t, err.Error(), "stale ..data_tmp is a directory, not a link of the writer's; not removed")
	assert.Contains(t, err.Error(), dir)

	assert.Equal(t, before, entries(t, dir), "no new version directory left behind")
	dataAfter, err := os.Readlink(filepath.Join(dir, "..data"))
	require.NoError(t, err)
	assert.Equal(t, dataBefore, dataAfter)
	assert.Equal(t, map[string]string{"cert.pem": "C1", "key.pem": "K1", "bundle.pem": "B1"},
		readVisible(t, dir, "cert.pem", "key.pem", "bundle.pem"))
	ok, err := w.Check(fileSet("C1", "K1", "B1"))
	require.NoError(t, err)
	assert.True(t, ok, "previous set intact")

	// Once the obstacle is gone the next write goes through.
	require.NoError(t, os.RemoveAll(obstacle))
	changed, err = w.Write(fileSet("C2", "K2", "B2"))
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, "K2", readVisible(t, dir, "key.pem")["key.pem"])
}

// A write that fails in the middle of a file (EFBIG from the kernel in a
// child process with a 4 KiB file size limit, standing in for ENOSPC)
// leaves the previous set and no partial version directory.
func TestDirWriterFailureMidWriteKeepsPreviousSet(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	_, err = w.Write([]atomicdir.File{
		{Name: "cert.pem", Data: []byte("old cert"), Mode: 0o644},
		{Name: "key.pem", Data: []byte("old key"), Mode: 0o600},
	})
	require.NoError(t, err)
	before := entries(t, dir)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=efbig-write", "SVID_TEST_DIR="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "helper: %s", out)
	assert.Contains(t, string(out), "file key.pem")
	assert.Contains(t, string(out), "file too large")

	assert.Equal(t, before, entries(t, dir))
	assert.Equal(t, map[string]string{"cert.pem": "old cert", "key.pem": "old key"},
		readVisible(t, dir, "cert.pem", "key.pem"))
}

func TestDirWriterCheck(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	files := fileSet("C", "K", "B")

	diff, err := w.Diff(files)
	require.NoError(t, err)
	assert.Equal(t, "..data: missing", diff)

	_, err = w.Write(files)
	require.NoError(t, err)
	ok, err := w.Check(files)
	require.NoError(t, err)
	assert.True(t, ok)

	expect := func(want string) {
		t.Helper()
		diff, err := w.Diff(files)
		require.NoError(t, err)
		assert.Equal(t, want, diff)
		ok, err := w.Check(files)
		require.NoError(t, err)
		assert.Equal(t, want == "", ok)
		// Write repairs whatever was found.
		changed, err := w.Write(files)
		require.NoError(t, err)
		assert.Equal(t, want != "", changed)
		diff, err = w.Diff(files)
		require.NoError(t, err)
		assert.Empty(t, diff)
	}
	expect("")

	// Edited through the stable name (follows the link into the version dir).
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("XX"), 0o644))
	expect("cert.pem: size 2, want 1")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("Z"), 0o644))
	expect("cert.pem: content differs")
	require.NoError(t, os.Chmod(filepath.Join(dir, "key.pem"), 0o644))
	expect("key.pem: mode 0644, want 0600")
	require.NoError(t, os.Remove(filepath.Join(dir, "bundle.pem")))
	expect("bundle.pem: missing")
	require.NoError(t, os.Remove(filepath.Join(dir, "cert.pem")))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("C"), 0o644))
	expect("cert.pem: is a regular file, not a symlink to ..data")
	data, err := filepath.EvalSymlinks(filepath.Join(dir, "..data"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(data, "extra"), nil, 0o644))
	expect(fmt.Sprintf("%s: unexpected file extra", filepath.Base(data)))

	_, err = w.Check([]atomicdir.File{{Name: "../x", Mode: 0o644}})
	require.ErrorContains(t, err, `file name "../x": must be a base name`)
}

func TestDirWriterRecreatesRemovedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	w, err := atomicdir.NewWriter(dir, atomicdir.WithDirMode(0o710))
	require.NoError(t, err)
	files := fileSet("C", "K", "B")
	_, err = w.Write(files)
	require.NoError(t, err)
	require.NoError(t, os.RemoveAll(dir))
	ok, err := w.Check(files)
	require.NoError(t, err)
	assert.False(t, ok)
	changed, err := w.Write(files)
	require.NoError(t, err)
	assert.True(t, changed)
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o710), fi.Mode().Perm())
	assert.Equal(t, "K", readVisible(t, dir, "key.pem")["key.pem"])
}

func TestDirWriterRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	for _, tc := range []struct {
		files []atomicdir.File
		want  string
	}{
		{nil, "no files to write"},
		{[]atomicdir.File{{Name: "..data", Mode: 0o644}}, `file name "..data": names starting with ".." are reserved`},
		{[]atomicdir.File{{Name: "a/b/c", Mode: 0o644}}, `file name "a/b/c": at most one directory level`},
		{[]atomicdir.File{{Name: "a/..b", Mode: 0o644}}, `file name "a/..b": names starting with ".." are reserved`},
		{[]atomicdir.File{{Name: "a/", Mode: 0o644}}, `file name "a/": must be a base name or sub/name`},
		{[]atomicdir.File{{Name: "a", Mode: 0o644}, {Name: "a/b", Mode: 0o644}}, `file name "a/b": a is both a file and a directory`},
		{[]atomicdir.File{{Name: "a", Mode: 0}}, "file a: mode 0000"},
		{[]atomicdir.File{{Name: "a", Mode: 0o644}, {Name: "a", Mode: 0o644}}, `file name "a": given twice`},
	} {
		_, err := w.Write(tc.files)
		require.ErrorContains(t, err, tc.want)
	}
	assert.Empty(t, entries(t, dir))

	f := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(f, nil, 0o644))
	_, err = atomicdir.NewWriter(f)
	require.ErrorContains(t, err, f+" exists and is not a directory")
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "dynamic.yml")
	withUmask(0o077, func() { require.NoError(t, atomicdir.WriteFile(p, []byte("one"), 0o644, atomicdir.KeepOwner())) })
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm())
	ino := fi.Sys().(*syscall.Stat_t).Ino

	require.NoError(t, atomicdir.WriteFile(p, []byte("two"), 0o600, atomicdir.KeepOwner()))
	fi, err = os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	assert.NotEqual(t, ino, fi.Sys().(*syscall.Stat_t).Ino, "replaced by rename, not rewritten in place")
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "two", string(b))
	assert.Equal(t, []string{"dynamic.yml"}, entries(t, dir), "no temp debris")

	if os.Geteuid() == 0 {
		require.NoError(t, atomicdir.WriteFile(p, []byte("three"), 0o640, atomicdir.Owner{UID: 4321, GID: -1}))
		fi, err = os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, uint32(4321), fi.Sys().(*syscall.Stat_t).Uid)
		assert.Equal(t, uint32(0), fi.Sys().(*syscall.Stat_t).Gid)
	}

	missing := filepath.Join(dir, "nope", "x")
	err = atomicdir.WriteFile(missing, []byte("x"), 0o644, atomicdir.KeepOwner())
	require.ErrorContains(t, err, "write "+missing)
	require.ErrorContains(t, atomicdir.WriteFile(p, nil, 0, atomicdir.KeepOwner()), "mode 0000")
}

func BenchmarkWriterWrite(b *testing.B) {
	dir := b.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(b, err)
	cert := bytes.Repeat([]byte("c"), 1500)
	key := bytes.Repeat([]byte("k"), 250)
	bundle := bytes.Repeat([]byte("b"), 1500)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		cert[0] = byte(i) // every iteration is a real change, not the no-op path
		changed, err := w.Write([]atomicdir.File{
			{Name: "cert.pem", Data: cert, Mode: 0o644},
			{Name: "key.pem", Data: key, Mode: 0o600},
			{Name: "bundle.pem", Data: bundle, Mode: 0o644},
		})
		if err != nil || !changed {
			b.Fatalf("write %d: changed=%v err=%v", i, changed, err)
		}
	}
}

// One bundle per trust domain lives in a subdirectory of the set: the set
// still swaps as one, a trust domain dropped from it disappears with the
// swap, and a file altered inside the subdirectory is noticed.
func TestDirWriterSubdirectory(t *testing.T) {
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir, atomicdir.WithDirMode(0o750))
	require.NoError(t, err)
	set := []atomicdir.File{
		{Name: "cert.pem", Data: []byte("C1"), Mode: 0o644},
		{Name: "bundles/a.test.pem", Data: []byte("A1"), Mode: 0o644},
		{Name: "bundles/b.test.pem", Data: []byte("B1"), Mode: 0o640},
	}
	changed, err := w.Write(set)
	require.NoError(t, err)
	require.True(t, changed)
	link, err := os.Readlink(filepath.Join(dir, "bundles"))
	require.NoError(t, err)
	assert.Equal(t, "..data/bundles", link)
	got, err := os.ReadFile(filepath.Join(dir, "bundles", "b.test.pem"))
	require.NoError(t, err)
	assert.Equal(t, "B1", string(got))
	fi, err := os.Stat(filepath.Join(dir, "bundles"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o750), fi.Mode().Perm(), "subdirectory gets the dir mode, never wider")
	fi, err = os.Stat(filepath.Join(dir, "bundles", "b.test.pem"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())

	changed, err = w.Write(set)
	require.NoError(t, err)
	assert.False(t, changed, "an equal set is a no-op")

	// De-federation: b.test leaves the set.
	changed, err = w.Write(set[:2])
	require.NoError(t, err)
	require.True(t, changed)
	_, err = os.Stat(filepath.Join(dir, "bundles", "b.test.pem"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	ok, err := w.Check(set[:2])
	require.NoError(t, err)
	assert.True(t, ok)

	// Something else drops a file into the subdirectory.
	real, err := filepath.EvalSymlinks(filepath.Join(dir, "bundles"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(real, "evil.pem"), []byte("x"), 0o644))
	diff, err := w.Diff(set[:2])
	require.NoError(t, err)
	assert.Contains(t, diff, "unexpected file bundles/evil.pem")
	require.NoError(t, os.Remove(filepath.Join(real, "evil.pem")))
	require.NoError(t, os.WriteFile(filepath.Join(real, "a.test.pem"), []byte("tampered"), 0o644))
	diff, err = w.Diff(set[:2])
	require.NoError(t, err)
	assert.Equal(t, "bundles/a.test.pem: size 8, want 2", diff)

	// The subdirectory leaves the set entirely: its stable link goes too.
	changed, err = w.Write(set[:1])
	require.NoError(t, err)
	require.True(t, changed)
	_, err = os.Lstat(filepath.Join(dir, "bundles"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
}
