package atomicdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// MakeDir creates the directory an output is written into: the one place
// such a directory is made, by NewWriter and Write for a library user,
// and by the agent's service prepare step before the agent starts.
//
// The ownership rule: the directory belongs to the user who writes the
// set (it swaps the ..data link and prunes old versions, so it must own
// the directory; uid -1 keeps the creating user), its group is the group
// that reads the files (the output owner's group; gid -1 keeps the
// creator's), and its mode is exactly mode (0755 by default: the files
// carry their own modes). Missing parents are created 0755 (under the
// umask). The mode is set before the owner, so that the creator never
// needs CAP_FOWNER for a directory it already gave away; both are set on
// the opened directory, never through a path that could meanwhile have
// become a symlink. An existing path is left alone and reported with
// fs.ErrExist. CheckDir is the same rule for a directory that
// already exists.
func MakeDir(path string, mode fs.FileMode, uid, gid int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("directory %s: create parent: %w", path, err)
	}
	// 0700 until the mode is set: no moment with more than mode allows.
	if err := os.Mkdir(path, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		return fmt.Errorf("directory %s: %w", path, err)
	}
	d, err := openDirPath(path)
	if err != nil {
		return fmt.Errorf("directory %s: open what was just created: %w", path, err)
	}
	defer d.close()
	// Someone who can write the parent may have swapped the new
	// directory for one of theirs already; that one is not changed.
	st, err := d.stat()
	if err != nil {
		return fmt.Errorf("directory %s: %w", path, err)
	}
	if st.uid != os.Geteuid() {
		return &DirError{Path: path, Problem: fmt.Sprintf("was replaced while being created (now owned by uid %d)", st.uid)}
	}
	if err := d.chmod(mode.Perm()); err != nil {
		return fmt.Errorf("directory %s: chmod %04o: %w", path, mode.Perm(), err)
	}
	if uid >= 0 || gid >= 0 {
		if err := d.chown(uid, gid); err != nil {
			return fmt.Errorf("directory %s: chown %d:%d: %w", path, uid, gid, err)
		}
	}
	return nil
}

// DirError is an output directory the writer must not use: Problem says
// why, in words that follow the path ("is a symlink; ...").
type DirError struct {
	Path    string
	Problem string
}

func (e *DirError) Error() string { return "directory " + e.Path + " " + e.Problem }

// CheckDir is MakeDir's ownership rule for a directory that already
// exists at path: it must be a real directory (not a symlink to one) owned
// by uid, the user that writes the set; who names that user in the message
// ("the agent's user", or a user name). A directory owned by anyone else
// is refused, because its owner could swap the version directories and
// links the writer relies on, and whatever the writer then did by name
// (chmod, remove) would land on what they point to. A missing path is
// fine (MakeDir creates it); a refusal is a *DirError, and any other
// error means the path could not be looked at.
//
// The agent applies it at `config validate`, `run` and reload (one check,
// agent.NewPlan), at `service prepare`, and the Writer again on every
// write, on the directory it has opened.
func CheckDir(path string, uid int, who string) error {
	fi, err := lstatRealDir(path)
	if fi == nil || err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &DirError{Path: path, Problem: "has no owner information"}
	}
	if p := ownerProblem(int(st.Uid), uid, who); p != "" {
		return &DirError{Path: path, Problem: p}
	}
	return nil
}

// ownerProblem is the ownership rule's verdict on a directory owned by
// have when want must write it; "" when fine.
func ownerProblem(have, want int, who string) string {
	if have == want {
		return ""
	}
	return fmt.Sprintf("is owned by uid %d, not %s (uid %d): chown it to %s or point the config at a directory of its own", have, who, want, who)
}

const symlinkProblem = "is a symlink; configure the directory it points to"

// lstatRealDir is where CheckDir and CheckLinkDir start: nil, nil for a
// missing path; a *DirError for a symlink or something not a directory;
// any other error when the path cannot be looked at (e.g. a parent this
// user may not search), which is not a verdict on the directory.
func lstatRealDir(path string) (fs.FileInfo, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("directory %s: %w", path, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, &DirError{Path: path, Problem: symlinkProblem}
	case !fi.IsDir():
		return nil, &DirError{Path: path, Problem: "exists and is not a directory"}
	}
	return fi, nil
}
