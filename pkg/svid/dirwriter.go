package svid

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	dataLink    = "..data"
	dataTmpLink = "..data_tmp"
	linkTmpPfx  = "..link_tmp."
	tsLayout    = "2006_01_02_15_04_05"
)

// WriterOption configures a DirWriter.
type WriterOption func(*DirWriter)

// WithOwner sets the owner of written files and versioned directories.
// The default leaves ownership as the process creates it.
func WithOwner(o Owner) WriterOption {
	return func(w *DirWriter) { w.owner = o }
}

// WithDirMode sets the mode of the target directory (applied by
// NewDirWriter) and of each versioned directory. Default 0755: the files'
// own modes guard the secrets, the directories only need to be traversable
// by the service that reads them.
func WithDirMode(m fs.FileMode) WriterOption {
	return func(w *DirWriter) {
		w.dirMode = m.Perm()
		w.dirModeSet = true
	}
}

// DirWriter writes a set of files into one directory so that the whole set
// changes at once (the Kubernetes AtomicWriter layout):
//
//	dir/..2026_01_02_15_04_05.123456789/cert.pem   the data, one dir per version
//	dir/..data -> ..2026_01_02_15_04_05.123456789  swapped with one rename
//	dir/cert.pem -> ..data/cert.pem                 stable names for services
//
// A reader that resolves ..data once (filepath.EvalSymlinks) and reads all
// its files from the result always gets a matching certificate and key; the
// previous version is kept, so a reader that resolved just before a swap
// still finishes. Opening dir/cert.pem and then dir/key.pem separately can
// straddle a swap, as with any symlink-swapping scheme.
//
// A file name may also be "sub/name", one level deep: the subdirectory is
// part of the versioned directory and its stable name is one symlink,
// dir/sub -> ..data/sub, so a set of files whose names change (one bundle
// per trust domain) still swaps as a whole, and a file dropped from the
// set disappears with the swap.
//
// Only one DirWriter per directory may write at a time; Write is safe for
// concurrent use within one DirWriter.
type DirWriter struct {
	dir        string
	owner      Owner
	dirMode    fs.FileMode
	dirModeSet bool
	mu         sync.Mutex
}

// NewDirWriter returns a writer for dir, creating it when missing with
// MakeDir (the dir mode, the owner's group).
func NewDirWriter(dir string, opts ...WriterOption) (*DirWriter, error) {
	if dir == "" {
		return nil, errors.New("dir writer: directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dir writer %s: %w", dir, err)
	}
	w := &DirWriter{dir: abs, owner: KeepOwner(), dirMode: 0o755}
	for _, o := range opts {
		o(w)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := MakeDir(abs, w.dirMode, -1, w.owner.GID); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("dir writer: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("dir writer %s: %w", abs, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("dir writer %s: not a directory", abs)
	case w.dirModeSet:
		if err := w.prepareDir(abs); err != nil {
			return nil, fmt.Errorf("dir writer: %w", err)
		}
	}
	return w, nil
}

// Dir returns the absolute target directory.
func (w *DirWriter) Dir() string { return w.dir }

// prepareDir sets the mode first, while the directory is still the
// agent's, then hands only its group to the owner. The agent keeps the
// directory so that it can fill it and later prune it with CAP_CHOWN
// alone, never needing CAP_FOWNER or CAP_DAC_OVERRIDE (which would let it
// read every service's keys).
func (w *DirWriter) prepareDir(path string) error {
	if err := os.Chmod(path, w.dirMode); err != nil {
		return fmt.Errorf("chmod %s to %04o: %w", path, w.dirMode, err)
	}
	if w.owner.GID >= 0 {
		if err := os.Lchown(path, -1, w.owner.GID); err != nil {
			return fmt.Errorf("chgrp %s to %d: %w", path, w.owner.GID, err)
		}
	}
	return nil
}

// Write makes files the directory's current set. It returns changed=false
// and writes nothing when the set on disk already equals files (content,
// mode, owner, links). On an error before the swap, the new version is
// removed and the previous set stays exactly as it was; errors after the
// swap (fsync of the directory, links for new names) return changed=true,
// because the new set is already what ..data shows.
func (w *DirWriter) Write(files []File) (changed bool, err error) {
	if err := checkFiles(files); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(files)
}

func (w *DirWriter) writeLocked(files []File) (changed bool, err error) {
	// The directory may have been removed since NewDirWriter (an operator
	// cleaning up, a tmpfs remounted); the guard's rewrite must recover.
	if _, err := os.Lstat(w.dir); errors.Is(err, fs.ErrNotExist) {
		if err := MakeDir(w.dir, w.dirMode, -1, w.owner.GID); err != nil && !errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("write %s: recreate directory: %w", w.dir, err)
		}
	}

	// Refuse before touching anything when a stable name cannot become a
	// link, so this failure too leaves the previous set intact.
	tops := topNames(files)
	for _, n := range tops {
		fi, err := os.Lstat(filepath.Join(w.dir, n))
		if err == nil && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0 {
			return false, fmt.Errorf("write %s: %s exists and is not a file or symlink (%s)", w.dir, n, fi.Mode().Type())
		}
	}
	if diff, err := w.diff(files); err == nil && diff == "" {
		return false, nil
	}

	prev, _ := os.Readlink(filepath.Join(w.dir, dataLink))
	tsDir, err := os.MkdirTemp(w.dir, ".."+time.Now().UTC().Format(tsLayout)+".")
	if err != nil {
		return false, fmt.Errorf("write %s: create version directory: %w", w.dir, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.RemoveAll(tsDir)
		}
	}()
	if err := w.prepareDir(tsDir); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}
	subs := subDirs(files)
	for _, sub := range subs {
		p := filepath.Join(tsDir, sub)
		if err := os.Mkdir(p, w.dirMode); err != nil {
			return false, fmt.Errorf("write %s: create %s: %w", w.dir, sub, err)
		}
		if err := w.prepareDir(p); err != nil {
			return false, fmt.Errorf("write %s: %w", w.dir, err)
		}
	}
	for _, f := range files {
		if err := createExact(filepath.Join(tsDir, f.Name), f.Data, f.Mode, w.owner); err != nil {
			return false, fmt.Errorf("write %s: file %s: %w", w.dir, f.Name, err)
		}
	}
	for _, sub := range subs {
		if err := syncDir(filepath.Join(tsDir, sub)); err != nil {
			return false, fmt.Errorf("write %s: %w", w.dir, err)
		}
	}
	if err := syncDir(tsDir); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}

	tmpLink := filepath.Join(w.dir, dataTmpLink)
	// A leftover from a crash between symlink and rename; os.Remove (not
	// RemoveAll) so that anything but a stale link or file makes us stop.
	if err := os.Remove(tmpLink); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("write %s: remove stale %s: %w", w.dir, dataTmpLink, err)
	}
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}
	if err := os.Rename(tmpLink, filepath.Join(w.dir, dataLink)); err != nil {
		_ = os.Remove(tmpLink)
		return false, fmt.Errorf("write %s: swap %s: %w", w.dir, dataLink, err)
	}
	committed = true

	if err := syncDir(w.dir); err != nil {
		return true, fmt.Errorf("write %s: new set is live: %w", w.dir, err)
	}
	for _, n := range tops {
		if err := w.ensureLink(n); err != nil {
			return true, fmt.Errorf("write %s: new set is live but %s: %w", w.dir, n, err)
		}
	}
	w.removeStaleLinks(prev, tops)
	if err := syncDir(w.dir); err != nil {
		return true, fmt.Errorf("write %s: new set is live: %w", w.dir, err)
	}
	w.removeOldVersions(filepath.Base(tsDir), prev)
	return true, nil
}

// Check reports whether the set on disk, read through the stable names,
// equals files in content and mode (and owner, when set), so a guard can
// notice a deleted, edited or chmod-ed file and rewrite the set. ok=false
// with a nil error means "differs"; an error means the check itself failed.
func (w *DirWriter) Check(files []File) (ok bool, err error) {
	diff, err := w.Diff(files)
	if err != nil {
		return false, err
	}
	return diff == "", nil
}

// Diff is Check with the reason: "" when the set on disk equals files,
// otherwise the first difference found, e.g. "key.pem: mode 0644, want 0600".
func (w *DirWriter) Diff(files []File) (string, error) {
	if err := checkFiles(files); err != nil {
		return "", fmt.Errorf("check %s: %w", w.dir, err)
	}
	// Serialized with Write so a guard never mistakes our own swap in
	// progress for tampering.
	w.mu.Lock()
	d, err := w.diff(files)
	w.mu.Unlock()
	if err != nil {
		return "", fmt.Errorf("check %s: %w", w.dir, err)
	}
	return d, nil
}

func (w *DirWriter) diff(files []File) (string, error) {
	target, err := os.Readlink(filepath.Join(w.dir, dataLink))
	if errors.Is(err, fs.ErrNotExist) {
		return dataLink + ": missing", nil
	}
	if errors.Is(err, syscall.EINVAL) {
		// A directory (or file) in its place: the stable names would
		// resolve into whatever it holds.
		return dataLink + ": " + notALink(filepath.Join(w.dir, dataLink)), nil
	}
	if err != nil {
		return "", err
	}
	if strings.ContainsRune(target, '/') || !strings.HasPrefix(target, "..") {
		return fmt.Sprintf("%s: points to %q, not a version directory", dataLink, target), nil
	}
	verDir := filepath.Join(w.dir, target)
	if _, err := os.Stat(verDir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("%s: version directory %s missing", dataLink, target), nil
	}
	for _, n := range topNames(files) {
		link, err := os.Readlink(filepath.Join(w.dir, n))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return n + ": missing", nil
		case errors.Is(err, syscall.EINVAL):
			return n + ": " + notALink(filepath.Join(w.dir, n)) + ", not a symlink to " + dataLink, nil
		case err != nil:
			return "", err
		case link != dataLink+"/"+n:
			return fmt.Sprintf("%s: points to %q", n, link), nil
		}
	}
	return w.versionDiff(verDir, files)
}

// notALink describes what stands at p instead of a symlink.
func notALink(p string) string {
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return "unreadable"
	case fi.IsDir():
		return "is a directory"
	case fi.Mode().IsRegular():
		return "is a regular file"
	default:
		return "is a " + fi.Mode().Type().String() + " file"
	}
}

// versionDiff compares the files of one version directory with files:
// entries, type, mode, owner and content.
func (w *DirWriter) versionDiff(verDir string, files []File) (string, error) {
	target := filepath.Base(verDir)
	entries, err := os.ReadDir(verDir)
	if err != nil {
		return "", err
	}
	tops := topNames(files)
	want := make(map[string]bool, len(files))
	for _, n := range tops {
		want[n] = true
	}
	for _, e := range entries {
		if !want[e.Name()] {
			return fmt.Sprintf("%s: unexpected file %s", target, e.Name()), nil
		}
	}
	for _, sub := range subDirs(files) {
		fi, err := os.Lstat(filepath.Join(verDir, sub))
		if err != nil || !fi.IsDir() {
			return fmt.Sprintf("%s: %s is not a directory", target, sub), nil
		}
		subEntries, err := os.ReadDir(filepath.Join(verDir, sub))
		if err != nil {
			return "", err
		}
		inSub := map[string]bool{}
		for _, f := range files {
			if d, n, ok := strings.Cut(f.Name, "/"); ok && d == sub {
				inSub[n] = true
			}
		}
		for _, e := range subEntries {
			if !inSub[e.Name()] {
				return fmt.Sprintf("%s: unexpected file %s/%s", target, sub, e.Name()), nil
			}
		}
	}
	uid, gid := w.expectedOwner(verDir)
	for _, f := range files {
		p := filepath.Join(verDir, f.Name)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return f.Name + ": missing in " + target, nil
		}
		if err != nil {
			return "", err
		}
		if !fi.Mode().IsRegular() {
			return f.Name + ": not a regular file", nil
		}
		if fi.Mode().Perm() != f.Mode.Perm() {
			return fmt.Sprintf("%s: mode %04o, want %04o", f.Name, fi.Mode().Perm(), f.Mode.Perm()), nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			if uid >= 0 && int(st.Uid) != uid {
				return fmt.Sprintf("%s: uid %d, want %d", f.Name, st.Uid, uid), nil
			}
			if gid >= 0 && int(st.Gid) != gid {
				return fmt.Sprintf("%s: gid %d, want %d", f.Name, st.Gid, gid), nil
			}
		}
		if fi.Size() != int64(len(f.Data)) {
			return fmt.Sprintf("%s: size %d, want %d", f.Name, fi.Size(), len(f.Data)), nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(data, f.Data) {
			return f.Name + ": content differs", nil
		}
	}
	return "", nil
}

// ensureLink makes name a symlink to ..data/name, replacing a regular file
// (a pre-existing plain file from before the agent) with one rename so the
// name never disappears.
func (w *DirWriter) ensureLink(name string) error {
	p := filepath.Join(w.dir, name)
	want := dataLink + "/" + name
	if cur, err := os.Readlink(p); err == nil && cur == want {
		return nil
	}
	tmp := filepath.Join(w.dir, linkTmpPfx+name)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", filepath.Base(tmp), err)
	}
	if err := os.Symlink(want, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// removeStaleLinks removes stable names that the previous set had and the
// new one does not, but only links that are ours (pointing into ..data).
func (w *DirWriter) removeStaleLinks(prev string, tops []string) {
	if prev == "" || strings.ContainsRune(prev, '/') {
		return
	}
	entries, err := os.ReadDir(filepath.Join(w.dir, prev))
	if err != nil {
		return
	}
	keep := make(map[string]bool, len(tops))
	for _, n := range tops {
		keep[n] = true
	}
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		p := filepath.Join(w.dir, e.Name())
		if link, err := os.Readlink(p); err == nil && link == dataLink+"/"+e.Name() {
			_ = os.Remove(p)
		}
	}
}

// removeOldVersions deletes version directories other than the current
// and the previous one. Only names of the form ..<timestamp>.<random> are
// considered, so nothing a user put into the directory is touched.
func (w *DirWriter) removeOldVersions(current, prev string) {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if n == current || n == prev || !e.IsDir() || !isVersionDir(n) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(w.dir, n))
	}
}

func isVersionDir(name string) bool {
	if !strings.HasPrefix(name, "..") || len(name) <= 2+len(tsLayout)+1 {
		return false
	}
	if _, err := time.Parse(tsLayout, name[2:2+len(tsLayout)]); err != nil {
		return false
	}
	return name[2+len(tsLayout)] == '.'
}

func checkFiles(files []File) error {
	if len(files) == 0 {
		return errors.New("no files to write")
	}
	seen := make(map[string]bool, len(files))
	kind := make(map[string]string, len(files)) // top-level name -> "file" | "dir"
	for _, f := range files {
		parts := strings.Split(f.Name, "/")
		if len(parts) > 2 {
			return fmt.Errorf("file name %q: at most one directory level (sub/name)", f.Name)
		}
		for _, p := range parts {
			switch {
			case (p == "" || p == "." || p == "..") && len(parts) > 1:
				return fmt.Errorf("file name %q: must be a base name or sub/name", f.Name)
			case p == "" || p == "." || p == "..":
				return fmt.Errorf("file name %q: not a file name", f.Name)
			case strings.ContainsRune(p, 0):
				return fmt.Errorf("file name %q: must be a base name", f.Name)
			case strings.HasPrefix(p, ".."):
				return fmt.Errorf("file name %q: names starting with \"..\" are reserved for the writer", f.Name)
			}
		}
		k := "file"
		if len(parts) == 2 {
			k = "dir"
		}
		switch {
		case f.Mode.Perm() == 0:
			return fmt.Errorf("file %s: mode 0000 leaves it unreadable", f.Name)
		case seen[f.Name]:
			return fmt.Errorf("file name %q: given twice", f.Name)
		case kind[parts[0]] != "" && kind[parts[0]] != k:
			return fmt.Errorf("file name %q: %s is both a file and a directory", f.Name, parts[0])
		}
		seen[f.Name] = true
		kind[parts[0]] = k
	}
	return nil
}

// topNames lists the stable names in dir: each file's name, or for
// "sub/name" the subdirectory, once, in first-seen order.
func topNames(files []File) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range files {
		top, _, _ := strings.Cut(f.Name, "/")
		if !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	return out
}

// subDirs lists the subdirectories the files live in, once each.
func subDirs(files []File) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range files {
		if sub, _, ok := strings.Cut(f.Name, "/"); ok && !seen[sub] {
			seen[sub] = true
			out = append(out, sub)
		}
	}
	return out
}
