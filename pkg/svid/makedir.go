package svid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MakeDir creates the directory an output is written into: the one place
// such a directory is made, by NewDirWriter and Write for a library user,
// and by the agent's service prepare step before the agent starts.
//
// The ownership rule: the directory belongs to the user who writes the
// set (it swaps the ..data link and prunes old versions, so it must own
// the directory; uid -1 keeps the creating user), its group is the group
// that reads the files (the output owner's group; gid -1 keeps the
// creator's), and its mode is exactly mode (0755 by default: the files
// carry their own modes). Missing parents are created 0755 (under the
// umask). The mode is set before the owner, so that the creator never
// needs CAP_FOWNER for a directory it already gave away. An existing path
// is left alone and reported with fs.ErrExist.
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
	if err := os.Chmod(path, mode.Perm()); err != nil {
		return fmt.Errorf("directory %s: chmod %04o: %w", path, mode.Perm(), err)
	}
	if uid >= 0 || gid >= 0 {
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("directory %s: chown %d:%d: %w", path, uid, gid, err)
		}
	}
	return nil
}
