//go:build unix

package atomicdir

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The directory writer works on opened directories, never on paths below
// them: every operation here is an *at system call relative to a
// directory handle, and none follows a symlink in the name it is given
// (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, fchmod/fchown on a descriptor rather
// than chmod/chown on a path). A local user who swaps a name for a
// symlink between two steps therefore gets an error (ELOOP, ENOTDIR), not
// an operation on the link's target. The path of the directory itself is
// resolved once, at open, with O_NOFOLLOW on its last component, and the
// opened directory's owner is checked before anything is done in it.

// dirFD is an opened directory.
type dirFD struct {
	fd   int
	path string // for messages only; never used to reach the directory
}

const dirOpenFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openDirPath opens the directory at path; a symlink as its last
// component is refused (ELOOP, or ENOTDIR on some systems).
func openDirPath(path string) (*dirFD, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, dirOpenFlags, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return &dirFD{fd: fd, path: path}, nil
}

// openDir opens the directory name inside d without following a symlink.
func (d *dirFD) openDir(name string) (*dirFD, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Openat(d.fd, name, dirOpenFlags, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	return &dirFD{fd: fd, path: d.join(name)}, nil
}

func (d *dirFD) join(name string) string { return filepath.Join(d.path, name) }

func (d *dirFD) close() { _ = unix.Close(d.fd) }

// stat describes the opened directory itself.
func (d *dirFD) stat() (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fileStat{}, &fs.PathError{Op: "fstat", Path: d.path, Err: err}
	}
	return toFileStat(&st), nil
}

// lstat describes the entry name in d; a symlink is described, not its
// target.
func (d *dirFD) lstat(name string) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fileStat{}, &fs.PathError{Op: "lstat", Path: d.join(name), Err: err}
	}
	return toFileStat(&st), nil
}

func (d *dirFD) readlink(name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(d.fd, name, buf)
		if err != nil {
			return "", &fs.PathError{Op: "readlink", Path: d.join(name), Err: err}
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// mkdir creates name in d with mode 0700 (under the umask): no moment
// with more than the caller then sets with chmod on the opened directory.
func (d *dirFD) mkdir(name string) error {
	if err := unix.Mkdirat(d.fd, name, 0o700); err != nil {
		return &fs.PathError{Op: "mkdir", Path: d.join(name), Err: err}
	}
	return nil
}

func (d *dirFD) symlink(target, name string) error {
	if err := unix.Symlinkat(target, d.fd, name); err != nil {
		return &fs.PathError{Op: "symlink", Path: d.join(name), Err: err}
	}
	return nil
}

// rename moves from (in d) to name in d: one directory, so the move never
// leaves the file system and never needs write permission on what moves.
func (d *dirFD) rename(from, to string) error {
	if err := unix.Renameat(d.fd, from, d.fd, to); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(from), New: d.join(to), Err: err}
	}
	return nil
}

// unlink removes the non-directory name from d (a symlink itself, never
// its target).
func (d *dirFD) unlink(name string) error {
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &fs.PathError{Op: "unlink", Path: d.join(name), Err: err}
	}
	return nil
}

// rmdir removes the empty directory name from d.
func (d *dirFD) rmdir(name string) error {
	if err := unix.Unlinkat(d.fd, name, unix.AT_REMOVEDIR); err != nil {
		return &fs.PathError{Op: "rmdir", Path: d.join(name), Err: err}
	}
	return nil
}

// create makes the new file name in d with mode 0000, open for writing
// (fillFile sets its mode and owner on the descriptor).
func (d *dirFD) create(name string) (*os.File, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: d.join(name), Err: err}
	}
	return os.NewFile(uintptr(fd), d.join(name)), nil
}

// readFile reads the regular file name in d, at most limit bytes, without
// following a symlink and without blocking on a FIFO put in its place.
func (d *dirFD) readFile(name string, limit int64) ([]byte, error) {
	fd, err := retryEINTR(func() (int, error) {
		return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	f := os.NewFile(uintptr(fd), d.join(name))
	defer func() { _ = f.Close() }()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: d.join(name), Err: err}
	}
	if !toFileStat(&st).mode.IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: d.join(name), Err: errors.New("not a regular file")}
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

// names lists the entries of d (without "." and "..").
func (d *dirFD) names() ([]string, error) {
	// A fresh descriptor: reading a directory moves its offset.
	fd, err := retryEINTR(func() (int, error) { return unix.Openat(d.fd, ".", dirOpenFlags, 0) })
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer func() { _ = f.Close() }()
	return f.Readdirnames(-1)
}

// chmod and chown change the opened directory itself.
func (d *dirFD) chmod(mode fs.FileMode) error {
	if err := unix.Fchmod(d.fd, uint32(mode.Perm())); err != nil {
		return &fs.PathError{Op: "chmod", Path: d.path, Err: err}
	}
	return nil
}

func (d *dirFD) chown(uid, gid int) error {
	if err := unix.Fchown(d.fd, uid, gid); err != nil {
		return &fs.PathError{Op: "chown", Path: d.path, Err: err}
	}
	return nil
}

func (d *dirFD) sync() error {
	if err := unix.Fsync(d.fd); err != nil {
		return fmt.Errorf("fsync directory %s: %w", d.path, err)
	}
	return nil
}

// fileStat is the part of stat(2) the writer looks at.
type fileStat struct {
	mode     fs.FileMode
	uid, gid int
	size     int64
}

func toFileStat(st *unix.Stat_t) fileStat {
	m := fs.FileMode(uint32(st.Mode) & 0o777) //nolint:unconvert // Mode is uint16 on darwin
	switch uint32(st.Mode) & unix.S_IFMT {    //nolint:unconvert // Mode is uint16 on darwin
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	}
	if uint32(st.Mode)&unix.S_ISUID != 0 { //nolint:unconvert // Mode is uint16 on darwin
		m |= fs.ModeSetuid
	}
	if uint32(st.Mode)&unix.S_ISGID != 0 { //nolint:unconvert // Mode is uint16 on darwin
		m |= fs.ModeSetgid
	}
	if uint32(st.Mode)&unix.S_ISVTX != 0 { //nolint:unconvert // Mode is uint16 on darwin
		m |= fs.ModeSticky
	}
	return fileStat{mode: m, uid: int(st.Uid), gid: int(st.Gid), size: st.Size}
}

// describe says what stands at an entry instead of what was expected.
func (s fileStat) describe() string {
	switch {
	case s.mode.IsDir():
		return "is a directory"
	case s.mode&fs.ModeSymlink != 0:
		return "is a symlink"
	case s.mode.IsRegular():
		return "is a regular file"
	default:
		return "is a " + s.mode.Type().String() + " file"
	}
}

// isSymlinkErr reports whether err is what opening a symlink with
// O_NOFOLLOW (and O_DIRECTORY) gives: ELOOP on Linux and macOS, ENOTDIR
// when the kernel checks the directory flag first, EMLINK on FreeBSD.
func isSymlinkErr(err error) bool {
	return errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EMLINK)
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}
