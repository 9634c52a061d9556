package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerPID is the pid of the process that created the unix socket at the
// other end of c (SO_PEERCRED), as the kernel recorded it.
func peerPID(c syscall.RawConn) (int, error) {
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
