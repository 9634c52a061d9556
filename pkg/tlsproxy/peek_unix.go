//go:build unix

package tlsproxy

import (
	"net"
	"syscall"
)

// hasInput reports whether c's receive queue holds bytes nobody has read
// yet: a peek that neither blocks nor consumes them.
func hasInput(c net.Conn) bool {
	rc := rawConn(c)
	if rc == nil {
		return false
	}
	var n int
	var b [1]byte
	_ = rc.Control(func(fd uintptr) {
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	})
	return n > 0
}
