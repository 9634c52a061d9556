package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// TestProxyUnixSocketIsPrivate: a proxy listening on a unix socket gets it
// from unixsock at mode 0600, whatever the umask, and removes it on close.
func TestProxyUnixSocketIsPrivate(t *testing.T) {
	dir, err := os.MkdirTemp("", "ap") // short: unix socket paths are limited
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "cli.sock")
	src := svid.NewSource(svid.WithAddr("unix://" + filepath.Join(dir, "none.sock"))) // never started: listening needs no SVID
	p, err := agent.NewProxy(config.Proxy{Name: "cli", Mode: "client", Listen: "unix://" + sock, Target: "127.0.0.1:1",
		MaxHandshakes: 7, Authorizers: config.Authorizers{AllowKeys: config.AllowKeys{Allow: []string{"spiffe://example.org/server"}}}}, src)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.Equal(t, 7, p.Stats().MaxHandshakes)
	require.NoError(t, p.Close())
	assert.NoFileExists(t, sock)
}
