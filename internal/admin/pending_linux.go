package admin

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// canPeek: pendingBytes asks the kernel.
const canPeek = true

// pendingBytes reports whether c has received bytes not read yet
// (SIOCINQ, as TIOCINQ): a request already sent.
func pendingBytes(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	if cerr := raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); cerr != nil || err != nil {
		return false
	}
	return n > 0
}
