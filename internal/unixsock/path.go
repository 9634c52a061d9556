package unixsock

import (
	"fmt"
	"runtime"
)

// MaxPathLen is the longest unix socket path this OS can bind or dial:
// sockaddr_un's sun_path holds 108 bytes on Linux and 104 on macOS, the
// terminating NUL included.
func MaxPathLen() int {
	if runtime.GOOS == "darwin" {
		return 103
	}
	return 107
}

// CheckPath refuses a socket path the kernel would refuse at listen or
// dial time, so that a config check can say so before anything starts.
func CheckPath(path string) error {
	if n := len(path); n > MaxPathLen() {
		return fmt.Errorf("%q is %d bytes; a unix socket path holds at most %d here", path, n, MaxPathLen())
	}
	return nil
}
