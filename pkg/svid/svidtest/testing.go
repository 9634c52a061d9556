package svidtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain Start and NewUnstarted use when the
// Config leaves it zero.
const DefaultTrustDomain = "example.org"

// ShortDir creates a temporary directory with a short path, removed when
// the test ends. Put unix sockets here rather than in t.TempDir(): a socket
// path is limited to about 108 bytes (104 on macOS), and t.TempDir() paths,
// which embed the test's name, can exceed that.
func ShortDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("svidtest: short temporary directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// NewUnstarted creates a Server from cfg without starting it, for tests
// that start it later (srv.Start(path)). A zero cfg.TrustDomain means
// DefaultTrustDomain. The server is stopped when the test ends; Stop on a
// server that never started does nothing. Errors end the test.
func NewUnstarted(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("svidtest: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// Start creates a Server as NewUnstarted does and starts it on a socket in
// a fresh ShortDir, like httptest.NewServer. Clients reach it at
// srv.Addr(); srv.SocketPath() gives the bare path, to restart it after a
// Stop. The server is stopped and the directory removed when the test ends.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	// The directory first, so that its removal is the later cleanup.
	sock := filepath.Join(ShortDir(t, "svidtest"), "api.sock")
	srv := NewUnstarted(t, cfg)
	if err := srv.Start(sock); err != nil {
		t.Fatalf("svidtest: %v", err)
	}
	return srv
}
