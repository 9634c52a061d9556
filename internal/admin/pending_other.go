//go:build !linux

package admin

import "net"

// canPeek: no unread-byte count here. At the cap a new connection then
// replaces the one that has waited longest for a request, whatever it sent.
const canPeek = false

func pendingBytes(net.Conn) bool { return false }
