package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// listen opens a real unixgram socket like systemd's and points
// $NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	t.Setenv("NOTIFY_SOCKET", p)
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func TestReadyStatusStopping(t *testing.T) {
	c := listen(t)
	n := New()

	ok, err := n.Status("waiting for the Workload API")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "STATUS=waiting for the Workload API", read(t, c))

	ok, err = n.Ready("3 outputs written\nsecond line")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "READY=1\nSTATUS=3 outputs written second line", read(t, c))

	ok, err = n.Stopping()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "STOPPING=1", read(t, c))
}

func TestNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	ok, err := New().Ready("x")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestDeadSocketIsAnError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens.sock"))
	ok, err := New().Ready("")
	require.Error(t, err)
	require.False(t, ok)
	require.Contains(t, err.Error(), "READY=1")
}

// TestReloadingCarriesMonotonicTime: Type=notify-reload matches RELOADING=1
// to the reload it asked for by MONOTONIC_USEC, which must be the
// CLOCK_MONOTONIC time at sending (never 0, never wall-clock time).
func TestReloadingCarriesMonotonicTime(t *testing.T) {
	c := listen(t)
	var before unix.Timespec
	require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &before))
	ok, err := New().Reloading("reloading /etc/identity-agent/config.yaml")
	require.NoError(t, err)
	require.True(t, ok)
	msg := read(t, c)
	lines := strings.Split(msg, "\n")
	require.Len(t, lines, 3, msg)
	require.Equal(t, "RELOADING=1", lines[0])
	require.Equal(t, "STATUS=reloading /etc/identity-agent/config.yaml", lines[2])
	usec, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	require.NoError(t, err, msg)
	lo := uint64(before.Sec)*1_000_000 + uint64(before.Nsec)/1_000
	require.GreaterOrEqual(t, usec, lo)
	require.Less(t, usec, lo+60_000_000, "MONOTONIC_USEC must be monotonic time, not wall-clock")
}

// TestWatchdog: WATCHDOG=1 reaches the socket, and the interval is the
// unit's WatchdogSec= ($WATCHDOG_USEC) only when $WATCHDOG_PID, if set, is
// this process.
func TestWatchdog(t *testing.T) {
	c := listen(t)
	n := New()
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	require.Zero(t, n.WatchdogInterval())
	t.Setenv("WATCHDOG_USEC", "60000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	require.Equal(t, time.Minute, n.WatchdogInterval())
	t.Setenv("WATCHDOG_PID", "1")
	require.Zero(t, n.WatchdogInterval(), "another process's watchdog")

	ok, err := n.Watchdog()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "WATCHDOG=1", read(t, c))
}
