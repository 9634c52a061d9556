//go:build unix

package agent

import "syscall"

// rlimitNOFILE is RLIMIT_NOFILE as the process has it: Go raises the soft
// limit to the hard one at start-up, so soft is what the agent can use.
func rlimitNOFILE() (soft, hard uint64, ok bool) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, false
	}
	return uint64(l.Cur), uint64(l.Max), true //nolint:unconvert // int64 on some platforms
}
