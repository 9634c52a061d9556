package service

import (
	"os"
	"path/filepath"
	"strings"
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

// TestLayoutTakesEveryReloadKindsNeeds: the layout asks each reload entry
// for its needs (config.ServiceNeeds, declared in the kind's own file) and
// names no kind itself. README's reference configuration shows every
// registered kind (config's TestREADMEConfigurationParses), so each one's
// needs are checked here, a new kind's included.
func TestLayoutTakesEveryReloadKindsNeeds(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	require.True(t, ok)
	_, block, ok := strings.Cut(section, "```yaml\n")
	require.True(t, ok)
	block, _, _ = strings.Cut(block, "```")
	c, err := config.Parse("README.md", []byte(block), func(string) string { return "" })
	require.NoError(t, err)

	l := LayoutFromConfig(c)
	seen := map[string]bool{}
	for _, o := range c.Outputs {
		for _, r := range o.Reload {
			seen[r.Kind()] = true
			needs := r.ServiceNeeds()
			for _, d := range needs.WritableDirs {
				if !under(d, RuntimeDir) && !under(d, StateDir) {
					require.Contains(t, l.WritableDirs, d, "%s reload", r.Kind())
				}
			}
			for _, cp := range needs.Capabilities {
				require.Contains(t, l.ExtraCapabilities, cp, "%s reload", r.Kind())
			}
		}
	}
	for _, k := range config.ReloadKinds() {
		require.True(t, seen[k], "README shows no %s reload", k)
	}

	// layout.go names no kind: its needs are the kind's to say.
	src, err := os.ReadFile("layout.go")
	require.NoError(t, err)
	for _, k := range config.ReloadKinds() {
		require.NotContains(t, string(src), `"`+k+`"`, "layout.go names the %s kind", k)
		require.NotContains(t, strings.ToLower(string(src)), "r."+k, "layout.go reads the %s kind's settings", k)
	}
}
