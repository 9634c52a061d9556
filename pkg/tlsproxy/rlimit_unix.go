//go:build unix

package tlsproxy

import "syscall"

// fdLimit returns the soft RLIMIT_NOFILE (`ulimit -n`). Go raises the soft
// limit to the hard one at start-up, so this is what the process can use.
func fdLimit() (uint64, bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, false
	}
	return uint64(l.Cur), true //nolint:unconvert // int64 on some platforms
}
