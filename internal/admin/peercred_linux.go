package admin

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerUID is the uid of the process at the other end of a unix socket, as
// the kernel recorded it when the socket was created (SO_PEERCRED).
func peerUID(c syscall.RawConn) (int, bool, error) {
	var cred *unix.Ucred
	var err error
	if cerr := c.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil {
		return 0, false, cerr
	}
	if err != nil {
		return 0, false, err
	}
	return int(cred.Uid), true, nil
}

// PeerPID is the pid of the process that created the unix socket at the
// other end of c (SO_PEERCRED), as the kernel recorded it: which process
// serves the admin socket, before `reload` signals it.
func PeerPID(c syscall.RawConn) (int, error) {
	var cred *unix.Ucred
	var err error
	if cerr := c.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); cerr != nil {
		return 0, cerr
	}
	if err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}
