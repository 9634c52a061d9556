package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// peerPID is the pid of the process at the other end of the unix socket c
// (LOCAL_PEERPID), as the kernel recorded it.
func peerPID(c syscall.RawConn) (int, error) {
	var pid int
	var err error
	if cerr := c.Control(func(fd uintptr) { pid, err = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID) }); cerr != nil {
		return 0, cerr
	}
	return pid, err
}
