package atomicdir

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// quarantinePfx starts the names Restore moves things to. One leading dot:
// names starting with ".." belong to the writer's own layout.
const quarantinePfx = ".quarantine-"

// quarantineTimeLayout is the UTC time in a quarantine name.
const quarantineTimeLayout = "20060102T150405.000000000Z"

// The quarantine is bounded: a guard fighting a chmod flood moves a
// key-bearing version directory aside on every restore, and nothing else
// would ever remove them.
const (
	// QuarantineKeep is how many quarantined entries an output directory
	// keeps at most: the newest ones.
	QuarantineKeep = 3
	// QuarantineMaxAge is how long a quarantined entry is kept at most.
	QuarantineMaxAge = 24 * time.Hour
)

// Moved is one thing Restore moved out of the way.
type Moved struct {
	From, To string // absolute paths, in the writer's directory
	What     string // e.g. "is a directory"
}

// expectedOwner is the uid and gid the writer's files must have: the
// configured ones, or else those the kernel gives a file the process
// creates (its euid; its egid on Linux, the directory's group on the BSDs
// and macOS); ver is the version directory the files are in.
func (w *Writer) expectedOwner(ver fileStat) (uid, gid int) {
	uid, gid = w.owner.UID, w.owner.GID
	if uid < 0 {
		uid = os.Geteuid()
	}
	if gid < 0 {
		gid = os.Getegid()
		if runtime.GOOS != "linux" {
			gid = ver.gid
		}
	}
	return uid, gid
}

// Restore is Write for a guard that found the set on disk altered. What
// stands in the way of the set and is not the writer's own is moved aside
// to ".quarantine-<name>-<UTC time>" in the same directory, same file
// system, with its contents, mode and owner untouched: anything but a
// symlink of the writer's in place of ..data (through which every stable
// name would resolve into it) or of a stable name. Write refuses those, and
// would leave the names resolving into someone else's files. The version
// directory ..data pointed to is moved aside too once the new set is live
// when its files were altered (content, mode, owner, extra files) - and
// then, being the writer's own, its mode is narrowed to 0700 first, so
// that a key exposed in it is not left readable - or when it is not the
// writer's directory at all (a symlink, someone else's directory: moved,
// never changed). Every step works on the opened output directory and
// follows no symlink.
//
// The quarantine is bounded: after each Restore and Write, entries beyond
// the newest QuarantineKeep, and any older than QuarantineMaxAge, are
// removed - only names the writer gave, only files, links and directories
// of its own (a directory of someone else's stays; removing what it holds
// would change it). moved lists what was moved, for the caller to log.
func (w *Writer) Restore(files []File, now time.Time) (changed bool, moved []Moved, err error) {
	if err := checkFiles(files); err != nil {
		return false, nil, fmt.Errorf("restore %s: %w", w.dir, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	d, created, err := w.openOwnDir(true)
	if err != nil {
		return false, nil, fmt.Errorf("restore %s: %w", w.dir, err)
	}
	defer d.close()
	if created {
		changed, err := w.writeAt(d, files)
		return changed, nil, err
	}

	// The version ..data points to, when it must go once the new set is
	// live: ours and altered (narrowed, then moved), or not ours (moved).
	stale, staleOurs := "", false
	if target, err := d.readlink(dataLink); err == nil && isVersionDir(target) {
		st, err := d.lstat(target)
		switch {
		case err != nil:
		case ownDir(st):
			if vd, err := d.openDir(target); err == nil {
				if vst, err := vd.stat(); err == nil && ownDir(vst) {
					if diff, err := w.versionDiff(vd, vst, target, files); err == nil && diff != "" {
						stale, staleOurs = target, true
					}
				}
				vd.close()
			}
		default:
			stale = target
		}
	}
	for _, n := range append([]string{dataLink, dataTmpLink}, topNames(files)...) {
		st, err := d.lstat(n)
		if err != nil || w.ownLink(st) {
			continue
		}
		m, err := w.quarantine(d, n, st.describe(), now)
		if err != nil {
			return false, moved, fmt.Errorf("restore %s: %w", w.dir, err)
		}
		moved = append(moved, m)
	}

	changed, err = w.writeAt(d, files)
	defer w.pruneQuarantine(d, now, QuarantineKeep)
	if err != nil || stale == "" {
		return changed, moved, err
	}
	if cur, _ := d.readlink(dataLink); cur == stale {
		return changed, moved, nil
	}
	st, serr := d.lstat(stale)
	if serr != nil {
		return changed, moved, nil // pruned already
	}
	what := "version directory with altered files"
	if staleOurs && ownDir(st) {
		// Narrow first: once renamed, the old name no longer reaches it,
		// but a reader already inside must not keep traversing either.
		// On the opened directory, checked to be ours: never on what a
		// name may have been swapped for.
		vd, err := d.openDir(stale)
		if err == nil {
			if vst, serr := vd.stat(); serr != nil || !ownDir(vst) {
				err = fmt.Errorf("%s changed while being narrowed", stale)
			} else {
				err = vd.chmod(0o700)
			}
			vd.close()
		}
		if err != nil {
			return changed, moved, fmt.Errorf("restore %s: new set is live but narrowing the altered version %s: %w", w.dir, stale, err)
		}
	} else {
		what = "version name that " + st.describe() + " not of the writer's"
		if ownDir(st) {
			what = "version directory replaced"
		}
	}
	m, qerr := w.quarantine(d, stale, what, now)
	if qerr != nil {
		return changed, moved, fmt.Errorf("restore %s: new set is live: %w", w.dir, qerr)
	}
	return changed, append(moved, m), nil
}

// quarantine renames name in d to a fresh quarantine name beside it,
// first pruning the quarantine to leave room for it: there are never more
// than QuarantineKeep entries of the writer's, not even for a moment.
func (w *Writer) quarantine(d *dirFD, name, what string, now time.Time) (Moved, error) {
	w.pruneQuarantine(d, now, QuarantineKeep-1)
	base := quarantinePfx + name + "-" + now.UTC().Format(quarantineTimeLayout)
	to := base
	for i := 1; ; i++ {
		if _, err := d.lstat(to); err != nil {
			break
		}
		to = fmt.Sprintf("%s.%d", base, i)
	}
	if err := d.rename(name, to); err != nil {
		return Moved{}, fmt.Errorf("move %s out of the way: %w", name, err)
	}
	return Moved{From: filepath.Join(w.dir, name), To: filepath.Join(w.dir, to), What: what}, nil
}

// quarantineTime is the time in a name quarantine gave; ok=false for any
// other name.
func quarantineTime(name string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(name, quarantinePfx)
	if !ok {
		return time.Time{}, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return time.Time{}, false
	}
	ts := rest[i+1:]
	if j := strings.Index(ts, "Z."); j >= 0 { // a ".N" to make the name unique
		ts = ts[:j+1]
	}
	t, err := time.Parse(quarantineTimeLayout, ts)
	return t, err == nil
}

// pruneQuarantine keeps the newest keep quarantined entries not older
// than QuarantineMaxAge and removes the others: a file or link is
// unlinked, a directory of the writer's removed with what it holds; a
// directory of someone else's stays (see Restore).
func (w *Writer) pruneQuarantine(d *dirFD, now time.Time, keep int) {
	names, err := d.names()
	if err != nil {
		return
	}
	type entry struct {
		name string
		at   time.Time
	}
	var q []entry
	for _, n := range names {
		if t, ok := quarantineTime(n); ok {
			q = append(q, entry{n, t})
		}
	}
	if len(q) == 0 {
		return
	}
	slices.SortFunc(q, func(a, b entry) int { return b.at.Compare(a.at) })
	for i, e := range q {
		if i < keep && now.Sub(e.at) <= QuarantineMaxAge {
			continue
		}
		st, err := d.lstat(e.name)
		switch {
		case err != nil:
		case st.mode.IsDir():
			_ = w.removeOwnTree(d, e.name, 2)
		default:
			_ = d.unlink(e.name)
		}
	}
}
