//go:build !unix

package tlsproxy

import "net"

// hasInput cannot peek here: handshakes count as idle until read.
func hasInput(net.Conn) bool { return false }
