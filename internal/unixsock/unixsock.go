// Package unixsock listens on unix sockets that are never reachable with
// wider permissions than asked, whatever the process umask.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Errors for a path that cannot be taken over.
var (
	ErrNotSocket = errors.New("exists and is not a socket; refusing to replace it")
	ErrInUse     = errors.New("is in use by another running process")
)

// Listen binds a unix socket at path with the given mode. It binds under
// a temporary name in the same directory, sets the mode, then renames the
// socket into place, so no client can connect while the mode is still the
// umask's. A stale socket (nobody answering) is replaced; a live one, or
// a path that is not a socket, is an error wrapping ErrInUse or
// ErrNotSocket. Closing the listener removes the socket.
func Listen(path string, mode fs.FileMode) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s %w", path, ErrNotSocket)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s %w", path, ErrInUse)
		}
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d.tmp", filepath.Base(path), os.Getpid()))
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	// The bound name is tmp, which will not exist; Close removes path.
	ul.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, mode); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("chmod socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("rename socket into %s: %w", path, err)
	}
	return &listener{UnixListener: ul, path: path}, nil
}

type listener struct {
	*net.UnixListener
	path string
}

// Close stops listening and removes the socket file.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
		err = rerr
	}
	return err
}
