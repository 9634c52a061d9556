package atomicdir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// File is one file of a set written by Writer.
type File struct {
	Name string      // base name inside the directory; must not start with ".."
	Data []byte      // written as is
	Mode fs.FileMode // permission bits; the file never has wider ones, not even while written
}

// Owner is the numeric owner given to written files. -1 leaves that part
// as the process creates it. Note that the zero value means root:root.
type Owner struct {
	UID, GID int
}

// KeepOwner returns the Owner that changes nothing (-1, -1).
func KeepOwner() Owner { return Owner{UID: -1, GID: -1} }

func (o Owner) isKeep() bool { return o.UID < 0 && o.GID < 0 }

// WriteFile replaces path with data so that a reader sees either the
// old or the new content, never a mix: it writes a temporary file in the
// same directory (same filesystem, so rename is atomic), gives it its final
// owner and mode before any data goes in, fsyncs it, renames it over path
// and fsyncs the directory so the rename survives a crash.
//
// Use Writer when several files (certificate and key) must change
// together: two WriteFile calls leave a window with a new certificate
// and an old key.
func WriteFile(path string, data []byte, mode fs.FileMode, owner Owner) error {
	if mode.Perm() == 0 {
		return fmt.Errorf("write %s: mode %04o leaves the file unreadable", path, mode.Perm())
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if base == "" {
		return fmt.Errorf("write %q: not a file path", path)
	}
	f, tmp, err := createPrivate(dir, "."+base+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := fillFile(f, data, mode, owner); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: file replaced but directory not synced: %w", path, err)
	}
	return nil
}

// createPrivate creates a new file named prefix+random in dir with mode
// 0000. The creating descriptor is writable regardless of the mode, so no
// other user can open the file before fillFile sets the final mode, and
// the umask plays no part in what the file ends up with.
func createPrivate(dir, prefix string) (*os.File, string, error) {
	for range 10 {
		base, err := tempName(prefix)
		if err != nil {
			return nil, "", err
		}
		name := filepath.Join(dir, base)
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create temp file in %s: %w", dir, err)
		}
		return f, name, nil
	}
	return nil, "", fmt.Errorf("create temp file in %s: too many name collisions", dir)
}

// tempName is prefix followed by 16 random hex digits: a name no one can
// guess before it exists, for an entry that is then renamed into place.
func tempName(prefix string) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("random temp name: %w", err)
	}
	return prefix + hex.EncodeToString(rnd[:]), nil
}

// fillFile sets mode, then owner, then writes, fsyncs and closes f; f is
// closed in all cases. The mode comes first because changing the mode of
// a file another user owns needs CAP_FOWNER, and the agent runs with
// CAP_CHOWN only; the file is still empty when either happens, and chown
// clears only set-id bits, which modes here never carry.
func fillFile(f *os.File, data []byte, mode fs.FileMode, owner Owner) error {
	err := func() error {
		if err := f.Chmod(mode.Perm()); err != nil {
			return fmt.Errorf("chmod %04o: %w", mode.Perm(), err)
		}
		if !owner.isKeep() {
			if err := f.Chown(owner.UID, owner.GID); err != nil {
				return fmt.Errorf("chown %d:%d: %w", owner.UID, owner.GID, err)
			}
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
		return nil
	}()
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
