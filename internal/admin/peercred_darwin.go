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

// PeerPID is the pid of the process at the other end of the unix socket c
// (LOCAL_PEERPID), as the kernel recorded it: which process serves the
// admin socket, before `reload` signals it.
func PeerPID(c syscall.RawConn) (int, error) {
	var pid int
	var err error
	if cerr := c.Control(func(fd uintptr) { pid, err = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID) }); cerr != nil {
		return 0, cerr
	}
	return pid, err
}
