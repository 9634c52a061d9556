package svid

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

// quarantinePfx starts the names Restore moves things to. One leading dot:
// names starting with ".." belong to the writer's own layout.
const quarantinePfx = ".quarantine-"

// Moved is one thing Restore moved out of the way.
type Moved struct {
	From, To string // absolute paths, in the writer's directory
	What     string // e.g. "is a directory"
}

// expectedOwner is the uid and gid the writer's files must have: the
// configured ones, or else those the kernel gives a file the process
// creates (its euid; its egid on Linux, the directory's group on the BSDs
// and macOS). -1 means "not checked" (no Stat_t on this system).
func (w *DirWriter) expectedOwner(verDir string) (uid, gid int) {
	uid, gid = w.owner.UID, w.owner.GID
	if uid < 0 {
		uid = os.Geteuid()
	}
	if gid < 0 {
		gid = os.Getegid()
		if runtime.GOOS != "linux" {
			gid = -1
			if fi, err := os.Stat(verDir); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					gid = int(st.Gid)
				}
			}
		}
	}
	return uid, gid
}

// Restore is Write for a guard that found the set on disk altered. What
// stands in the way of the set and is not the writer's own is moved aside
// to ".quarantine-<name>-<UTC time>" in the same directory, same file
// system, with its contents and modes untouched: a directory or file in
// place of ..data (through which every stable name would resolve into it),
// and a directory, special file or regular file in place of a stable name.
// Write refuses those, and would leave the names resolving into someone
// else's files. A version directory whose files were altered (content,
// mode, owner, extra files) is moved aside too once the new set is live,
// and its own mode narrowed to 0700, so that a key exposed in it is not
// left readable under its old name. Nothing is deleted; moved lists what
// was moved, for the caller to log.
func (w *DirWriter) Restore(files []File, now time.Time) (changed bool, moved []Moved, err error) {
	if err := checkFiles(files); err != nil {
		return false, nil, fmt.Errorf("restore %s: %w", w.dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := os.Lstat(w.dir); errors.Is(err, fs.ErrNotExist) {
		changed, err := w.writeLocked(files)
		return changed, nil, err
	}

	altered := ""
	if target, err := os.Readlink(filepath.Join(w.dir, dataLink)); err == nil && isVersionDir(target) {
		if d, err := w.versionDiff(filepath.Join(w.dir, target), files); err == nil && d != "" {
			altered = target
		}
	}
	for _, n := range append([]string{dataLink, dataTmpLink}, topNames(files)...) {
		p := filepath.Join(w.dir, n)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 {
			continue
		}
		m, err := w.quarantine(p, notALink(p), now)
		if err != nil {
			return false, moved, fmt.Errorf("restore %s: %w", w.dir, err)
		}
		moved = append(moved, m)
	}

	changed, err = w.writeLocked(files)
	if err != nil || altered == "" {
		return changed, moved, err
	}
	if cur, _ := os.Readlink(filepath.Join(w.dir, dataLink)); cur == altered {
		return changed, moved, nil
	}
	p := filepath.Join(w.dir, altered)
	if _, serr := os.Lstat(p); serr != nil {
		return changed, moved, nil // pruned already
	}
	// Narrow first: once renamed, the old name no longer reaches it, but
	// a reader already inside must not keep traversing either.
	if cerr := os.Chmod(p, 0o700); cerr != nil {
		return changed, moved, fmt.Errorf("restore %s: new set is live but narrowing the altered version %s: %w", w.dir, altered, cerr)
	}
	m, qerr := w.quarantine(p, "version directory with altered files", now)
	if qerr != nil {
		return changed, moved, fmt.Errorf("restore %s: new set is live: %w", w.dir, qerr)
	}
	return changed, append(moved, m), nil
}

// quarantine renames p to a fresh quarantine name beside it.
func (w *DirWriter) quarantine(p, what string, now time.Time) (Moved, error) {
	base := quarantinePfx + filepath.Base(p) + "-" + now.UTC().Format("20060102T150405.000000000Z")
	to := filepath.Join(w.dir, base)
	for i := 1; ; i++ {
		if _, err := os.Lstat(to); errors.Is(err, fs.ErrNotExist) {
			break
		}
		to = filepath.Join(w.dir, fmt.Sprintf("%s.%d", base, i))
	}
	if err := os.Rename(p, to); err != nil {
		return Moved{}, fmt.Errorf("move %s out of the way: %w", filepath.Base(p), err)
	}
	return Moved{From: p, To: to, What: what}, nil
}
