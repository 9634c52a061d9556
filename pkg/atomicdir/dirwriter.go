package atomicdir

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
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

// Option configures NewWriter (go-spiffe style functional options).
type Option func(*config)

type config struct {
	owner      Owner
	dirMode    fs.FileMode
	dirModeSet bool
}

// WithOwner sets the owner of written files and versioned directories.
// The default leaves ownership as the process creates it.
func WithOwner(o Owner) Option {
	return func(c *config) { c.owner = o }
}

// WithDirMode sets the mode of the target directory (applied by
// NewWriter) and of each versioned directory. Default 0755: the files'
// own modes guard the secrets, the directories only need to be traversable
// by the service that reads them.
func WithDirMode(m fs.FileMode) Option {
	return func(c *config) {
		c.dirMode = m.Perm()
		c.dirModeSet = true
	}
}

// Writer writes a set of files into one directory so that the whole set
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
// Only one Writer per directory may write at a time; Write is safe for
// concurrent use within one Writer.
type Writer struct {
	dir string
	config
	mu sync.Mutex
}

// NewWriter returns a writer for dir, creating it when missing with
// MakeDir (the dir mode, the owner's group). An existing dir must be a
// real directory owned by the process's user (CheckDir's rule):
// someone else's directory, or a symlink to one, is refused here and on
// every later write.
func NewWriter(dir string, opts ...Option) (*Writer, error) {
	if dir == "" {
		return nil, errors.New("dir writer: directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dir writer %s: %w", dir, err)
	}
	w := &Writer{dir: abs, config: config{owner: KeepOwner(), dirMode: 0o755}}
	for _, o := range opts {
		if o != nil {
			o(&w.config)
		}
	}
	d, created, err := w.openOwnDir(true)
	if err != nil {
		return nil, fmt.Errorf("dir writer: %w", err)
	}
	defer d.close()
	if w.dirModeSet && !created {
		if err := w.prepareDir(d); err != nil {
			return nil, fmt.Errorf("dir writer: %w", err)
		}
	}
	return w, nil
}

// Dir returns the absolute target directory.
func (w *Writer) Dir() string { return w.dir }

// ownerName names the user the writer's directory must belong to.
const ownerName = "the writer's user"

// openOwnDir opens the writer's directory without following a symlink
// and checks it is a directory of the process's user; create makes it
// first (MakeDir) when it is missing. Everything the writer does happens
// through the returned handle.
func (w *Writer) openOwnDir(create bool) (d *dirFD, created bool, err error) {
	d, err = openDirPath(w.dir)
	if create && errors.Is(err, fs.ErrNotExist) {
		// Removed since NewWriter (an operator cleaning up, a tmpfs
		// remounted): the guard's rewrite must recover.
		if merr := MakeDir(w.dir, w.dirMode, -1, w.owner.GID); merr != nil && !errors.Is(merr, fs.ErrExist) {
			return nil, false, fmt.Errorf("create directory: %w", merr)
		}
		created = true
		d, err = openDirPath(w.dir)
	}
	if err != nil {
		if cerr := CheckDir(w.dir, os.Geteuid(), ownerName); cerr != nil {
			return nil, false, cerr
		}
		return nil, false, err
	}
	st, err := d.stat()
	if err == nil {
		if p := ownerProblem(st.uid, os.Geteuid(), ownerName); p != "" {
			err = &DirError{Path: w.dir, Problem: p}
		}
	}
	if err != nil {
		d.close()
		return nil, false, err
	}
	return d, created, nil
}

// prepareDir sets the mode of an opened directory of ours first, while it
// is still the agent's, then hands only its group to the owner. The agent
// keeps the directory so that it can fill it and later prune it with
// CAP_CHOWN alone, never needing CAP_FOWNER or CAP_DAC_OVERRIDE (which
// would let it read every service's keys).
func (w *Writer) prepareDir(d *dirFD) error {
	if err := d.chmod(w.dirMode); err != nil {
		return fmt.Errorf("chmod %s to %04o: %w", d.path, w.dirMode, err)
	}
	if w.owner.GID >= 0 {
		if err := d.chown(-1, w.owner.GID); err != nil {
			return fmt.Errorf("chgrp %s to %d: %w", d.path, w.owner.GID, err)
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
func (w *Writer) Write(files []File) (changed bool, err error) {
	if err := checkFiles(files); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	d, _, err := w.openOwnDir(true)
	if err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}
	defer d.close()
	changed, err = w.writeAt(d, files)
	w.pruneQuarantine(d, time.Now(), QuarantineKeep)
	return changed, err
}

func (w *Writer) writeAt(d *dirFD, files []File) (changed bool, err error) {
	// Refuse before touching anything when a stable name cannot become a
	// link, so this failure too leaves the previous set intact.
	tops := topNames(files)
	for _, n := range tops {
		st, err := d.lstat(n)
		if err == nil && !st.mode.IsRegular() && st.mode&fs.ModeSymlink == 0 {
			return false, fmt.Errorf("write %s: %s exists and is not a file or symlink (%s)", w.dir, n, st.mode.Type())
		}
	}
	if diff, err := w.diffAt(d, files); err == nil && diff == "" {
		return false, nil
	}

	prev, _ := d.readlink(dataLink)
	ver, vd, err := w.makeVersionDir(d)
	if err != nil {
		return false, fmt.Errorf("write %s: create version directory: %w", w.dir, err)
	}
	committed := false
	defer func() {
		vd.close()
		if !committed {
			_ = w.removeOwnTree(d, ver, 2)
		}
	}()
	subs := subDirs(files)
	parents := map[string]*dirFD{"": vd}
	for _, sub := range subs {
		sd, err := w.makeDir(vd, sub)
		if err != nil {
			return false, fmt.Errorf("write %s: create %s: %w", w.dir, sub, err)
		}
		defer sd.close()
		parents[sub] = sd
	}
	for _, f := range files {
		sub, base := splitName(f.Name)
		fh, err := parents[sub].create(base)
		if err == nil {
			err = fillFile(fh, f.Data, f.Mode, w.owner)
		}
		if err != nil {
			return false, fmt.Errorf("write %s: file %s: %w", w.dir, f.Name, err)
		}
	}
	for _, sub := range subs {
		if err := parents[sub].sync(); err != nil {
			return false, fmt.Errorf("write %s: %w", w.dir, err)
		}
	}
	if err := vd.sync(); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}

	// A leftover of ours from a crash between symlink and rename is
	// removed; anything else in its place is not ours to delete (Restore
	// moves it aside).
	if st, err := d.lstat(dataTmpLink); err == nil {
		if !w.ownLink(st) {
			return false, fmt.Errorf("write %s: stale %s %s, not a link of the writer's; not removed", w.dir, dataTmpLink, st.describe())
		}
		if err := d.unlink(dataTmpLink); err != nil {
			return false, fmt.Errorf("write %s: remove stale %s: %w", w.dir, dataTmpLink, err)
		}
	}
	if err := d.symlink(ver, dataTmpLink); err != nil {
		return false, fmt.Errorf("write %s: %w", w.dir, err)
	}
	if err := d.rename(dataTmpLink, dataLink); err != nil {
		_ = d.unlink(dataTmpLink)
		return false, fmt.Errorf("write %s: swap %s: %w", w.dir, dataLink, err)
	}
	committed = true

	if err := d.sync(); err != nil {
		return true, fmt.Errorf("write %s: new set is live: %w", w.dir, err)
	}
	for _, n := range tops {
		if err := w.ensureLink(d, n); err != nil {
			return true, fmt.Errorf("write %s: new set is live but %s: %w", w.dir, n, err)
		}
	}
	w.removeStaleLinks(d, prev, tops)
	if err := d.sync(); err != nil {
		return true, fmt.Errorf("write %s: new set is live: %w", w.dir, err)
	}
	w.removeOldVersions(d, ver, prev)
	return true, nil
}

// makeVersionDir creates a new, empty version directory
// "..<timestamp>.<random>" in d and returns it opened, with the writer's
// mode and group.
func (w *Writer) makeVersionDir(d *dirFD) (string, *dirFD, error) {
	pfx := ".." + time.Now().UTC().Format(tsLayout) + "."
	for range 100 {
		var rnd [4]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return "", nil, fmt.Errorf("random name: %w", err)
		}
		name := pfx + strconv.FormatUint(uint64(binary.BigEndian.Uint32(rnd[:])), 10)
		vd, err := w.makeDir(d, name)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		return name, vd, nil
	}
	return "", nil, errors.New("too many name collisions")
}

// makeDir creates name in d and returns it opened and prepared: created
// 0700, checked to be the one just made (a directory of ours), then given
// the writer's mode and group through the handle.
func (w *Writer) makeDir(d *dirFD, name string) (*dirFD, error) {
	if err := d.mkdir(name); err != nil {
		return nil, err
	}
	sd, err := d.openDir(name)
	if err != nil {
		return nil, err
	}
	st, err := sd.stat()
	if err == nil && st.uid != os.Geteuid() {
		err = fmt.Errorf("%s was replaced while being created (owned by uid %d)", sd.path, st.uid)
	}
	if err == nil {
		err = w.prepareDir(sd)
	}
	if err != nil {
		sd.close()
		return nil, err
	}
	return sd, nil
}

// ownLink reports whether st describes a symlink the writer made: links
// are never chowned, so the writer's own have its uid.
func (w *Writer) ownLink(st fileStat) bool {
	return st.mode&fs.ModeSymlink != 0 && st.uid == os.Geteuid()
}

// ownDir reports whether st describes a real directory of the writer's.
func ownDir(st fileStat) bool {
	return st.mode.IsDir() && st.uid == os.Geteuid()
}

// splitName splits "sub/name" into its directory and base; "" for a file
// at the top.
func splitName(name string) (sub, base string) {
	if s, b, ok := strings.Cut(name, "/"); ok {
		return s, b
	}
	return "", name
}

// Check reports whether the set on disk, read through the stable names,
// equals files in content and mode (and owner, when set), so a guard can
// notice a deleted, edited or chmod-ed file and rewrite the set. ok=false
// with a nil error means "differs"; an error means the check itself failed.
func (w *Writer) Check(files []File) (ok bool, err error) {
	diff, err := w.Diff(files)
	if err != nil {
		return false, err
	}
	return diff == "", nil
}

// Diff is Check with the reason: "" when the set on disk equals files,
// otherwise the first difference found, e.g. "key.pem: mode 0644, want 0600".
func (w *Writer) Diff(files []File) (string, error) {
	if err := checkFiles(files); err != nil {
		return "", fmt.Errorf("check %s: %w", w.dir, err)
	}
	// Serialized with Write so a guard never mistakes our own swap in
	// progress for tampering.
	w.mu.Lock()
	defer w.mu.Unlock()
	d, _, err := w.openOwnDir(false)
	if errors.Is(err, fs.ErrNotExist) {
		return dataLink + ": missing", nil
	}
	if err != nil {
		return "", fmt.Errorf("check %s: %w", w.dir, err)
	}
	defer d.close()
	diff, err := w.diffAt(d, files)
	if err != nil {
		return "", fmt.Errorf("check %s: %w", w.dir, err)
	}
	return diff, nil
}

func (w *Writer) diffAt(d *dirFD, files []File) (string, error) {
	target, err := d.readlink(dataLink)
	if errors.Is(err, fs.ErrNotExist) {
		return dataLink + ": missing", nil
	}
	if errors.Is(err, syscall.EINVAL) {
		// A directory (or file) in its place: the stable names would
		// resolve into whatever it holds.
		return dataLink + ": " + w.describeAt(d, dataLink), nil
	}
	if err != nil {
		return "", err
	}
	if !isVersionDir(target) {
		return fmt.Sprintf("%s: points to %q, not a version directory", dataLink, target), nil
	}
	vd, err := d.openDir(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s: version directory %s missing", dataLink, target), nil
	case err != nil && isSymlinkErr(err):
		return fmt.Sprintf("%s: version directory %s %s", dataLink, target, w.describeAt(d, target)), nil
	case err != nil:
		return "", err
	}
	defer vd.close()
	vst, err := vd.stat()
	if err != nil {
		return "", err
	}
	if vst.uid != os.Geteuid() {
		return fmt.Sprintf("%s: version directory %s is owned by uid %d, not the writer's", dataLink, target, vst.uid), nil
	}
	for _, n := range topNames(files) {
		link, err := d.readlink(n)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return n + ": missing", nil
		case errors.Is(err, syscall.EINVAL):
			return n + ": " + w.describeAt(d, n) + ", not a symlink to " + dataLink, nil
		case err != nil:
			return "", err
		case link != dataLink+"/"+n:
			return fmt.Sprintf("%s: points to %q", n, link), nil
		}
	}
	return w.versionDiff(vd, vst, target, files)
}

// describeAt says what stands at name in d instead of a symlink.
func (w *Writer) describeAt(d *dirFD, name string) string {
	st, err := d.lstat(name)
	if err != nil {
		return "unreadable"
	}
	return st.describe()
}

// versionDiff compares the files of one opened version directory with
// files: entries, type, mode, owner and content. Nothing is followed: a
// symlink in place of a file or subdirectory is a difference.
func (w *Writer) versionDiff(vd *dirFD, vst fileStat, target string, files []File) (string, error) {
	entries, err := vd.names()
	if err != nil {
		return "", err
	}
	want := map[string]bool{}
	for _, n := range topNames(files) {
		want[n] = true
	}
	for _, e := range entries {
		if !want[e] {
			return fmt.Sprintf("%s: unexpected file %s", target, e), nil
		}
	}
	parents := map[string]*dirFD{"": vd}
	for _, sub := range subDirs(files) {
		sd, err := vd.openDir(sub)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || isSymlinkErr(err) {
				return fmt.Sprintf("%s: %s is not a directory", target, sub), nil
			}
			return "", err
		}
		defer sd.close()
		parents[sub] = sd
		subEntries, err := sd.names()
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
			if !inSub[e] {
				return fmt.Sprintf("%s: unexpected file %s/%s", target, sub, e), nil
			}
		}
	}
	uid, gid := w.expectedOwner(vst)
	for _, f := range files {
		sub, base := splitName(f.Name)
		pd := parents[sub]
		st, err := pd.lstat(base)
		if errors.Is(err, fs.ErrNotExist) {
			return f.Name + ": missing in " + target, nil
		}
		if err != nil {
			return "", err
		}
		if !st.mode.IsRegular() {
			return f.Name + ": not a regular file", nil
		}
		if st.mode.Perm() != f.Mode.Perm() || st.mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			return fmt.Sprintf("%s: mode %04o, want %04o", f.Name, st.mode.Perm(), f.Mode.Perm()), nil
		}
		if uid >= 0 && st.uid != uid {
			return fmt.Sprintf("%s: uid %d, want %d", f.Name, st.uid, uid), nil
		}
		if gid >= 0 && st.gid != gid {
			return fmt.Sprintf("%s: gid %d, want %d", f.Name, st.gid, gid), nil
		}
		if st.size != int64(len(f.Data)) {
			return fmt.Sprintf("%s: size %d, want %d", f.Name, st.size, len(f.Data)), nil
		}
		data, err := pd.readFile(base, int64(len(f.Data))+1)
		if err != nil {
			if isSymlinkErr(err) {
				return f.Name + ": not a regular file", nil
			}
			return "", err
		}
		if !bytes.Equal(data, f.Data) {
			return f.Name + ": content differs", nil
		}
	}
	return "", nil
}

// ensureLink makes name a symlink to ..data/name, replacing a regular file
// (a pre-existing plain file from before the agent) or a wrong link with
// one rename so the name never disappears.
func (w *Writer) ensureLink(d *dirFD, name string) error {
	want := dataLink + "/" + name
	if cur, err := d.readlink(name); err == nil && cur == want {
		return nil
	}
	tmp := linkTmpPfx + name
	if st, err := d.lstat(tmp); err == nil {
		if !w.ownLink(st) {
			return fmt.Errorf("stale %s %s, not a link of the writer's; not removed", tmp, st.describe())
		}
		if err := d.unlink(tmp); err != nil {
			return fmt.Errorf("remove stale %s: %w", tmp, err)
		}
	}
	if err := d.symlink(want, tmp); err != nil {
		return err
	}
	if err := d.rename(tmp, name); err != nil {
		_ = d.unlink(tmp)
		return err
	}
	return nil
}

// removeStaleLinks removes stable names that the previous set had and the
// new one does not, but only links that are ours (made by the writer,
// pointing into ..data).
func (w *Writer) removeStaleLinks(d *dirFD, prev string, tops []string) {
	if !isVersionDir(prev) {
		return
	}
	pd, err := d.openDir(prev)
	if err != nil {
		return
	}
	entries, err := pd.names()
	pd.close()
	if err != nil {
		return
	}
	keep := make(map[string]bool, len(tops))
	for _, n := range tops {
		keep[n] = true
	}
	for _, e := range entries {
		if keep[e] {
			continue
		}
		st, err := d.lstat(e)
		if err != nil || !w.ownLink(st) {
			continue
		}
		if link, err := d.readlink(e); err == nil && link == dataLink+"/"+e {
			_ = d.unlink(e)
		}
	}
}

// removeOldVersions deletes version directories other than the current
// and the previous one. Only real directories of ours named
// ..<timestamp>.<random> are considered, so nothing a user put into the
// directory is touched, and a symlink under such a name is left alone.
func (w *Writer) removeOldVersions(d *dirFD, current, prev string) {
	entries, err := d.names()
	if err != nil {
		return
	}
	for _, n := range entries {
		if n == current || n == prev || !isVersionDir(n) {
			continue
		}
		if st, err := d.lstat(n); err == nil && ownDir(st) {
			_ = w.removeOwnTree(d, n, 2)
		}
	}
}

// removeOwnTree removes the directory name from d and what it holds,
// depth levels of directories deep, through handles and without following
// a symlink. It descends only into directories of the writer's own (the
// version directories and their subdirectories it made); files and links
// inside them are unlinked, which changes the writer's directory, never
// the file. A directory of someone else's, or one nested deeper than
// depth, stops the removal with an error and stays.
func (w *Writer) removeOwnTree(d *dirFD, name string, depth int) error {
	sd, err := d.openDir(name)
	if err != nil {
		return err
	}
	defer sd.close()
	st, err := sd.stat()
	if err != nil {
		return err
	}
	if !ownDir(st) {
		return fmt.Errorf("%s is owned by uid %d, not the writer's; not removed", sd.path, st.uid)
	}
	entries, err := sd.names()
	if err != nil {
		return err
	}
	for _, e := range entries {
		est, err := sd.lstat(e)
		if err != nil {
			return err
		}
		if est.mode.IsDir() {
			if depth <= 0 {
				return fmt.Errorf("%s: nested too deep; not removed", sd.join(e))
			}
			if err := w.removeOwnTree(sd, e, depth-1); err != nil {
				return err
			}
			continue
		}
		if err := sd.unlink(e); err != nil {
			return err
		}
	}
	return d.rmdir(name)
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
