package prometheus_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

const rulesFile = "identity-agent.rules.yml"

var agentBin string

func TestMain(m *testing.M) { fleettest.MainWithAgent(m, "ia-prom-", &agentBin) }

// promtool checks the rules' syntax and runs the unit tests: synthetic
// series for which each alert must fire, and ordinary ones for which it
// must not.
func TestRulesPassPromtool(t *testing.T) {
	promtool := fleettest.NeedBinary(t, "promtool")
	r := fleettest.Run(t, time.Minute, ".", nil, promtool, "check", "rules", rulesFile)
	require.Equal(t, 0, r.Code, r.String())
	r = fleettest.Run(t, time.Minute, ".", nil, promtool, "test", "rules", "identity-agent.rules.test.yml")
	require.Equal(t, 0, r.Code, r.String())

	// Every alert has at least one test that expects it to fire.
	tests, err := os.ReadFile("identity-agent.rules.test.yml")
	require.NoError(t, err)
	for _, a := range alerts(t) {
		assert.Regexp(t, regexp.MustCompile(`alertname: `+a.Alert+`\n\s+exp_alerts:\n\s+- exp_labels`), string(tests),
			"alert %s has no promtool test in which it fires", a.Alert)
	}
}

type rule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

func alerts(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	var f struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(b, &f))
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	require.NotEmpty(t, out)
	return out
}

var metricName = regexp.MustCompile(`\bidentity_agent_[a-z0-9_]+`)

// Every identity_agent_* metric a rule names is one the agent binary
// really serves on /metrics (or, for the dual_auth client metrics, one
// pkg/redisclient registers): a renamed metric must not leave an alert
// that can never fire. Several metrics exist only once their feature is
// configured or has failed once, so the agent here runs with a proxy, a
// Redis transition, an output whose SVID the Workload API never offers
// (write failures), one whose reload always fails and one whose reload is
// verified against a port nobody serves.
func TestRulesNameOnlyExportedMetrics(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := fleettest.DevAPI(t, agentBin, dir, time.Hour, "spiffe://example.org/redis", "spiffe://example.org/api")
	plain, tlsPort, metricsPort := fleettest.FreePort(t), fleettest.FreePort(t), fleettest.FreePort(t)
	pw := filepath.Join(dir, "redis.pass")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	_, redisSock := fleettest.Redis(t, dir, "--port", fmt.Sprint(plain), "--requirepass", "s3cret")
	for _, d := range []string{"redis", "api", "nobody"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o700))
	}
	cfg := fmt.Sprintf(`workload_api: {socket: "unix://%[1]s"}
admin: {socket: "%[2]s/admin.sock", metrics_listen: "127.0.0.1:%[3]d"}
rotation: {retry_min: 100ms, retry_max: 500ms}
outputs:
  - name: redis
    spiffe_id: spiffe://example.org/redis
    dir: %[2]s/redis
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - redis: {addr: "unix://%[4]s", password_file: "%[5]s"}
    # Phase A: Redis has no TLS port yet, so this reload is never verified.
    verify: {address: "tcp://127.0.0.1:%[7]d", timeout: 500ms}
  - name: api
    spiffe_id: spiffe://example.org/api
    dir: %[2]s/api
    cert_file: svid.pem
    key_file: key.pem
    reload:
      - exec: {command: ["/bin/false"]}
  - name: nobody
    spiffe_id: spiffe://example.org/nobody
    dir: %[2]s/nobody
    cert_file: svid.pem
    key_file: key.pem
proxies:
  - name: api
    mode: server
    spiffe_id: spiffe://example.org/api
    listen: 127.0.0.1:%[8]d
    target: 127.0.0.1:%[9]d
    allow: [spiffe://example.org/redis]
    max_conns: 4
redis:
  transition:
    admin: {addr: "unix://%[4]s", password_file: "%[5]s"}
    plain_port: %[6]d
    tls_port: %[7]d
    server_id: spiffe://example.org/redis
    cert_file: %[2]s/redis/svid.pem
    key_file: %[2]s/redis/key.pem
    ca_cert_file: %[2]s/redis/bundle.pem
    state_file: %[2]s/transition.json
    sample_interval: 200ms
`, apiSock, dir, metricsPort, redisSock, pw, plain, tlsPort, fleettest.FreePort(t), fleettest.FreePort(t))
	cfgPath := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
	fleettest.Start(t, "identity-agent run", agentBin, "run", "--config", cfgPath)

	exported := map[string]bool{}
	want := []string{"identity_agent_write_failures_total", "identity_agent_reload_failures_total",
		"identity_agent_redis_transition_phase", "identity_agent_proxy_connections_refused_total",
		"identity_agent_svid_expiry_timestamp_seconds", "identity_agent_reload_verified"}
	fleettest.WaitFor(t, 30*time.Second, "metrics of every configured feature", func() (bool, string) {
		names, err := scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
		if err != nil {
			return false, err.Error()
		}
		exported = names
		for _, w := range want {
			if !names[w] {
				return false, "missing " + w
			}
		}
		return true, ""
	})

	// The client-side metrics live in the applications that use
	// pkg/redisclient, not in the agent.
	reg := prometheus.NewRegistry()
	c, err := redisclient.New(redisclient.ModeDisabled, redisclient.WithPlaintext(fmt.Sprintf("127.0.0.1:%d", plain)),
		redisclient.WithPasswordFile(pw), redisclient.WithName("names"), redisclient.WithRegisterer(reg))
	require.NoError(t, err)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	require.NoError(t, c.Close())
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}

	var unknown []string
	for _, a := range alerts(t) {
		for _, m := range metricName.FindAllString(a.Expr, -1) {
			if !exported[m] {
				unknown = append(unknown, a.Alert+": "+m)
			}
		}
	}
	var have []string
	for n := range exported {
		if strings.HasPrefix(n, "identity_agent_") {
			have = append(have, n)
		}
	}
	sort.Strings(have)
	assert.Empty(t, unknown, "rules name metrics nobody exports; exported:\n%s", strings.Join(have, "\n"))
}

// scrape returns the metric family names a /metrics page declares.
func scrape(url string) (map[string]bool, error) {
	resp, err := http.Get(url) //nolint:noctx // loopback, test only
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
		}
	}
	return names, nil
}
