//go:build unix

package admin

import (
	"os"
	"path/filepath"
	"syscall"
)

// servedFromItsOwnDir reports whether uid owns the directory the socket
// sock lives in, on a path nobody else can change: the directory (symlinks
// resolved) belongs to uid and is writable by nobody else, and every
// ancestor belongs to root and is writable by nobody else or is sticky
// (/tmp: others' entries cannot be replaced there). That is the layout of
// a service run as its own user (/run/identity-agent, 0755, the agent's
// user), so root's `status` may trust that user's agent, while a socket a
// third user planted in a shared place is still refused: such a user can
// own a directory only where it can write its parent, which the ancestor
// rule rules out.
func servedFromItsOwnDir(sock string, uid int) bool {
	dir, err := filepath.EvalSymlinks(filepath.Dir(sock))
	if err != nil {
		return false
	}
	if !ownedSafely(dir, uid, false) {
		return false
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if !ownedSafely(p, 0, true) {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// ownedSafely: p is a directory of uid that group and other cannot write
// (or, with stickyOK, can only add entries of their own to).
func ownedSafely(p string, uid int, stickyOK bool) bool {
	fi, err := os.Lstat(p)
	if err != nil || !fi.IsDir() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != uid {
		return false
	}
	if fi.Mode().Perm()&0o022 == 0 {
		return true
	}
	return stickyOK && fi.Mode()&os.ModeSticky != 0
}
