package devapitest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/devapi"
)

// DefaultTrustDomain is the trust domain New and Start use when the Config
// leaves it zero.
const DefaultTrustDomain = "example.org"

// ShortDir creates a temporary directory with a short path, removed when
// the test ends. Put unix sockets here rather than in t.TempDir(): a socket
// path is limited to about 108 bytes, and t.TempDir() paths, which embed
// the test's name, can exceed that.
func ShortDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// New creates a dev Workload API server from cfg without starting it, for
// tests that start it later (srv.Start(path)). A zero cfg.TrustDomain means
// DefaultTrustDomain. The server is stopped when the test ends; Stop on a
// server that never started does nothing.
func New(t testing.TB, cfg devapi.Config) *devapi.Server {
	t.Helper()
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	srv, err := devapi.New(cfg)
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	return srv
}

// Start creates a dev Workload API server as New does and starts it on a
// socket in a fresh ShortDir. Clients reach it at srv.Addr(); SocketPath
// gives the bare path, to restart it after a Stop.
func Start(t testing.TB, cfg devapi.Config) *devapi.Server {
	t.Helper()
	// The directory first, so that its removal is the later cleanup.
	sock := filepath.Join(ShortDir(t, "devapi"), "api.sock")
	srv := New(t, cfg)
	require.NoError(t, srv.Start(sock))
	return srv
}

// SocketPath is the file system path of the socket srv was started on:
// srv.Addr() without its unix:// scheme. It stays valid after srv.Stop, so
// srv.Start(SocketPath(srv)) restarts the server where its clients expect it.
func SocketPath(srv *devapi.Server) string {
	return strings.TrimPrefix(srv.Addr(), "unix://")
}
