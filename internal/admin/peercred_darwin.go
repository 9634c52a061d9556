package admin

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerUID is the effective uid of the process at the other end of a unix
// socket (LOCAL_PEERCRED, what getpeereid(3) reads).
func peerUID(c syscall.RawConn) (int, bool, error) {
	var cred *unix.Xucred
	var err error
	if cerr := c.Control(func(fd uintptr) { cred, err = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED) }); cerr != nil {
		return 0, false, cerr
	}
	if err != nil {
		return 0, false, err
	}
	return int(cred.Uid), true, nil
}
