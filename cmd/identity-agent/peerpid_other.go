//go:build !linux && !darwin

package main

import (
	"errors"
	"syscall"
)

func peerPID(syscall.RawConn) (int, error) {
	return 0, errors.New("the peer of a unix socket cannot be asked on this system")
}
