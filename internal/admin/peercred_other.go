//go:build !linux && !darwin

package admin

import (
	"errors"
	"syscall"
)

// peerUID cannot ask the kernel here; the socket's 0600 mode is the only check.
func peerUID(syscall.RawConn) (int, bool, error) { return 0, false, nil }

// PeerPID cannot ask the kernel here.
func PeerPID(syscall.RawConn) (int, error) {
	return 0, errors.New("the peer of a unix socket cannot be asked on this system")
}
