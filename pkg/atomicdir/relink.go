package atomicdir

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// Relink points name, an entry of the directory dir, at target: a new
// symlink under a hidden random name, renamed over name. A reader of name
// sees the old target or the new one, never neither, and the directory
// sees one rename event named name, which is what a file watcher that
// filters by name (Traefik's file provider) reloads on. A regular file or
// symlink at name is replaced; a directory is not.
//
// dir is someone else's directory (the one a consumer watches), not a
// Writer's own, so the owner rule of CheckDir does not apply; the rule is
// CheckLinkDir's, applied again to the opened directory. Like the Writer,
// Relink works only through that opened directory: dir's last component
// must not be a symlink, and neither the new link nor the rename follows
// one, so a local user who swaps dir or the temporary name for a link gets
// an error, not a link made where theirs points.
func Relink(dir, name, target string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, filepath.Separator) {
		return fmt.Errorf("link %q in %s: not a file name", name, dir)
	}
	d, err := openDirPath(dir)
	if err != nil {
		// Say what stands there (a symlink, a file) when it is a verdict.
		if cerr := CheckLinkDir(dir); cerr != nil {
			return cerr
		}
		return fmt.Errorf("link %s: %w", filepath.Join(dir, name), err)
	}
	defer d.close()
	st, err := d.stat()
	if err != nil {
		return err
	}
	if p := linkDirProblem(st.mode); p != "" {
		return &DirError{Path: dir, Problem: p}
	}
	// No extension of name's: a watcher that loads *.yml skips it.
	tmp, err := tempName("." + name + ".link-")
	if err != nil {
		return fmt.Errorf("link %s: %w", d.join(name), err)
	}
	if err := d.symlink(target, tmp); err != nil {
		return err
	}
	if err := d.rename(tmp, name); err != nil {
		_ = d.unlink(tmp)
		return err
	}
	return d.sync()
}

// CheckLinkDir is Relink's rule for the directory a link is made in, for
// a check before the first Relink (`config validate`, `run`, reload): it
// must be a real directory, not a symlink to one, and not writable by every
// user. In a directory such as /tmp another local user could put a file of
// theirs at the link's name before the agent's first write (and the
// consumer would load it), or a directory there, which no rename replaces.
// A missing path is fine (Relink reports it when it gets there); a
// refusal is a *DirError, and any other error means the path could not be
// looked at.
func CheckLinkDir(path string) error {
	fi, err := lstatRealDir(path)
	if fi == nil || err != nil {
		return err
	}
	if p := linkDirProblem(fi.Mode()); p != "" {
		return &DirError{Path: path, Problem: p}
	}
	return nil
}

// linkDirProblem is CheckLinkDir's verdict on a directory's mode; "" when
// fine. Group-writable is allowed: the group that may write a consumer's
// directory is the consumer's own, which reads the linked file anyway.
func linkDirProblem(mode fs.FileMode) string {
	if mode.Perm()&0o002 == 0 {
		return ""
	}
	perm := mode.Perm()
	if mode&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	return fmt.Sprintf("is writable by every user (mode %04o): another local user could put a file or a directory at the link's name; use a directory only the agent and the consumer can write", uint32(perm))
}
