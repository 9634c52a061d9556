package unixsock_test

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/unixsock"
)

func TestListenModeIgnoresUmaskAndCloseRemoves(t *testing.T) {
	old := syscall.Umask(0) // the widest umask: the mode must still hold
	defer syscall.Umask(old)
	p := filepath.Join(t.TempDir(), "s.sock")
	ln, err := unixsock.Listen(p, 0o600)
	require.NoError(t, err)
	fi, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	c, err := net.Dial("unix", p)
	require.NoError(t, err, "reachable at its final name")
	_ = c.Close()
	entries, _ := os.ReadDir(filepath.Dir(p))
	assert.Len(t, entries, 1, "no temporary name left behind")
	require.NoError(t, ln.Close())
	_, err = os.Stat(p)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestListenReplacesStaleRefusesLiveAndNonSockets(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.sock")
	stale, err := net.Listen("unix", p)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, stale.Close())
	ln, err := unixsock.Listen(p, 0o600)
	require.NoError(t, err, "a stale socket is replaced")
	defer ln.Close()

	_, err = unixsock.Listen(p, 0o600)
	require.ErrorIs(t, err, unixsock.ErrInUse)

	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("keep"), 0o644))
	_, err = unixsock.Listen(plain, 0o600)
	require.ErrorIs(t, err, unixsock.ErrNotSocket)
	b, _ := os.ReadFile(plain)
	assert.Equal(t, "keep", string(b))
}
