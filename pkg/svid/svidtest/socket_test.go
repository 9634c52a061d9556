package svidtest_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// The dev Workload API hands out identities to whoever connects, so its
// socket is the owner's only, whatever the umask, and Start never
// replaces a file that is not a socket.
func TestStartSocketIsPrivateAndRefusesNonSockets(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	srv, err := svidtest.New(svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	require.NoError(t, err)
	sock := filepath.Join(dir, "api.sock")
	require.NoError(t, srv.Start(sock))
	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	srv.Stop()

	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("keep"), 0o644))
	srv2, err := svidtest.New(svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	require.NoError(t, err)
	require.ErrorContains(t, srv2.Start(plain), "not a socket")
	b, err := os.ReadFile(plain)
	require.NoError(t, err)
	assert.Equal(t, "keep", string(b))
}
