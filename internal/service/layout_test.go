package service

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/config"
)

const layoutYAML = `
workload_api:
  socket: unix:///tmp/spire-agent/public/api.sock
admin:
  socket: /run/identity-agent/admin.sock
outputs:
  - name: redis
    dir: /etc/identity-agent/certs/redis
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - signal: {pid_file: /run/redis/redis-server.pid}
  - name: traefik
    dir: /etc/identity-agent/certs/traefik
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - traefik: {file: /etc/traefik/dynamic/identity-agent.yml, peer_spiffe_id: spiffe://example.org/model}
  - name: state
    dir: /var/lib/identity-agent/jwt
    jwt_bundle_file: jwks.json
proxies:
  - name: celery
    mode: client
    listen: unix:///run/celery-proxy/redis.sock
    target: redis.internal:6380
    allow: [spiffe://example.org/redis]
  - name: web
    mode: server
    listen: 0.0.0.0:443
    target: 127.0.0.1:8080
    allow: [spiffe://example.org/traefik]
`

func TestLayoutFromConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(layoutYAML), 0o644))
	c, err := config.Load(p, func(string) string { return "" })
	require.NoError(t, err)
	l := LayoutFromConfig(c)
	require.Equal(t, []string{
		"/etc/identity-agent/certs/redis", "/etc/identity-agent/certs/traefik",
		"/etc/traefik/dynamic", "/run/celery-proxy",
	}, l.WritableDirs)
	require.Equal(t, []string{"/run/identity-agent/admin.sock", "/run/celery-proxy/redis.sock"}, l.ListenSockets)
	require.Equal(t, []string{"CAP_KILL", "CAP_NET_BIND_SERVICE"}, l.ExtraCapabilities)

	unit, err := RenderSystemdUnit(l.InstallConfig(p, "identity-agent"))
	require.NoError(t, err)
	s := string(unit)
	require.Contains(t, s, "\nReadWritePaths=/etc/identity-agent/certs/redis\nReadWritePaths=/etc/identity-agent/certs/traefik\nReadWritePaths=/etc/traefik/dynamic\nReadWritePaths=/run/celery-proxy\n")
	require.Contains(t, s, "\nBindReadOnlyPaths=-/tmp/spire-agent/public\n")
	require.Contains(t, s, "\nCapabilityBoundingSet=CAP_CHOWN CAP_KILL CAP_NET_BIND_SERVICE\n")
}
