package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/config"
)

func noEnv(string) string { return "" }

// issueExample is the shape issue #2 says must work as written.
const issueExample = `workload_api:
  socket: unix:///tmp/ia/agent.sock     # default $SPIFFE_ENDPOINT_SOCKET
admin:
  socket: /tmp/ia/admin.sock
outputs:
  - name: redis
    spiffe_id: spiffe://example.org/redis   # or hint:, or neither = first
    dir: /tmp/ia/redis
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    include_federated: true
    cert_mode: "0644"
    key_mode: "0600"
    reload:
      - signal: {pid_file: /run/redis.pid, name: SIGHUP}
  - name: api
    dir: /tmp/ia/api
    jwt:
      - audience: [redis, api]
        file: token.jwt
    jwt_bundle_file: jwks.json
proxies:
  - name: ollama
    mode: server
    spiffe_id: spiffe://example.org/model-server
    listen: 127.0.0.1:6701
    target: 127.0.0.1:11434
    allow: [spiffe://example.org/traefik]
  - name: to-ollama
    mode: client
    spiffe_id: spiffe://example.org/traefik
    listen: 127.0.0.1:16701
    target: 127.0.0.1:6701
    allow: [spiffe://example.org/model-server]
`

func TestIssueExampleParses(t *testing.T) {
	cfg, err := config.Parse("agent.yaml", []byte(issueExample), noEnv)
	require.NoError(t, err)
	require.Len(t, cfg.Outputs, 2)
	r := cfg.Outputs[0]
	assert.Equal(t, "spiffe://example.org/redis", r.SpiffeID)
	assert.Equal(t, config.FileMode(0o644), r.CertMode)
	assert.Equal(t, config.FileMode(0o600), r.KeyMode)
	assert.Equal(t, config.FileMode(0o644), r.BundleMode, "default")
	require.Len(t, r.Reload, 1)
	assert.Equal(t, "signal", r.Reload[0].Kind())
	assert.Equal(t, "/run/redis.pid", r.Reload[0].Spec().(*config.SignalReload).PidFile)
	api := cfg.Outputs[1]
	assert.Equal(t, []string{"redis", "api"}, api.JWT[0].Audience)
	assert.Equal(t, config.FileMode(0o600), api.JWT[0].Mode, "JWT tokens are secrets by default")
	require.Len(t, cfg.Proxies, 2)
	assert.Equal(t, "client", cfg.Proxies[1].Mode)
	assert.Equal(t, time.Duration(0), cfg.Rotation.ExpiryWindow.D(0), "unset: a third of the SVID's lifetime")
	assert.True(t, *cfg.Rotation.Guard)
}

func TestSocketDefaultsToSPIFFEEndpointSocket(t *testing.T) {
	env := func(k string) string {
		if k == "SPIFFE_ENDPOINT_SOCKET" {
			return "unix:///run/spire/agent.sock"
		}
		return ""
	}
	cfg, err := config.Parse("a.yaml", []byte("outputs:\n  - {name: x, dir: /tmp/x, bundle_file: b.pem}\n"), env)
	require.NoError(t, err)
	assert.Equal(t, "unix:///run/spire/agent.sock", cfg.WorkloadAPI.Socket)
	assert.Equal(t, config.DefaultAdminSocket, cfg.Admin.Socket)

	_, err = config.Parse("a.yaml", []byte("outputs:\n  - {name: x, dir: /tmp/x, bundle_file: b.pem}\n"), noEnv)
	require.EqualError(t, err, "a.yaml:1: workload_api.socket: no Workload API address: set it or export SPIFFE_ENDPOINT_SOCKET")
}

// Every bad input is one line, with the file and the line of the field.
func TestAdminSocketDefaultPerOS(t *testing.T) {
	assert.Equal(t, "/run/identity-agent/admin.sock", config.AdminSocketFor("linux"))
	assert.Equal(t, "/var/db/identity-agent/admin.sock", config.AdminSocketFor("darwin"), "macOS has no /run")
}

func TestErrorsNameFileAndLine(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "workload_api: {socket: unix:///s}\noutptus: []\nallow_empty: true\n",
			`bad.yaml:2: outptus: unknown field in the top level`},
		{"unknown output key", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    cert_mod: \"0644\"\n",
			`bad.yaml:6: outputs[0].cert_mod: unknown field in an output`},
		{"bad mode", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    bundle_mode: \"0999\"\n",
			`bad.yaml:6: outputs[0].bundle_mode: "0999" is not a file mode (use an octal string such as "0640")`},
		{"bad duration", "workload_api: {socket: unix:///s}\nrotation:\n  debounce: 10\nallow_empty: true\n",
			`bad.yaml:3: rotation.debounce: "10" is not a duration (use e.g. 30s, 10m, 24h)`},
		{"bad socket scheme", "workload_api:\n  socket: /tmp/agent.sock\nallow_empty: true\n",
			`bad.yaml:2: workload_api.socket: "/tmp/agent.sock" must start with unix:// (or tcp://)`},
		{"bad spiffe id", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    spiffe_id: http://x/y\n",
			`bad.yaml:6: outputs[0].spiffe_id: "http://x/y": scheme is missing or invalid`},
		{"cert without key", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    cert_file: c.pem\n",
			`bad.yaml:5: outputs[0].cert_file: needs key_file too: cert_file and key_file go together`},
		{"two reload kinds in one entry", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - {exec: {command: [true]}, systemd: {unit: x}}\n",
			`bad.yaml:7: outputs[0].reload[0]: sets exec and systemd: one action per list entry`},
		{"reload entry names no kind", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - {}\n",
			`bad.yaml:7: outputs[0].reload[0]: names no action: use one of signal, exec, systemd, launchd, redis, traefik`},
		{"unknown reload kind", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - exec: {command: [true]}\n        sighup: {pid: 3}\n",
			`bad.yaml:8: outputs[0].reload[0].sighup: unknown field in a reload entry`},
		{"unknown key in a reload kind", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - signal:\n          pid: 3\n          pidfile: /x\n",
			`bad.yaml:9: outputs[0].reload[0].signal.pidfile: unknown field in SignalReload`},
		{"reload entry not a section", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - signal\n",
			`bad.yaml:7: outputs[0].reload[0]: "signal" is not a section (use key: value lines)`},
		{"reload kind not a section", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - exec: [true]\n",
			`bad.yaml:7: outputs[0].reload[0].exec: cannot unmarshal !!seq into ExecReload`},
		{"bad value in a reload kind", "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    reload:\n      - exec: {command: [true], timeout: 5}\n",
			`bad.yaml:7: outputs[0].reload[0].exec.timeout: "5" is not a duration (use e.g. 30s, 10m, 24h)`},
		{"metrics on a public address", "workload_api: {socket: unix:///s}\nadmin: {metrics_listen: \"0.0.0.0:9090\"}\nallow_empty: true\n",
			`bad.yaml:2: admin.metrics_listen: "0.0.0.0:9090" must be a loopback address`},
		{"syntax error", "outputs: [\n", `bad.yaml:1: outputs: did not find expected node content`},
		{"empty", "", `bad.yaml:1: config: the file is empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(tc.yaml), noEnv)
			require.Error(t, err)
			if strings.HasSuffix(tc.want, ": ") {
				assert.True(t, strings.HasPrefix(err.Error(), tc.want), err.Error())
			} else {
				assert.Equal(t, tc.want, err.Error())
			}
			assert.NotContains(t, err.Error(), "\n", "one line per error")
		})
	}
}

func TestAllErrorsReportedOnePerLine(t *testing.T) {
	// Decoding problems do not hide the others: all come at once, in file
	// order, and a field that failed to decode is not reported again.
	y := "workload_api: {socket: unix:///s}\noutputs:\n  - name: a\n    dir: /d\n    bundle_file: b\n    key_mode: \"x\"\n    bogus: 1\n  - name: a\n    dir: d\n    bundle_file: b\nlog: {level: loud}\n"
	_, err := config.Parse("m.yaml", []byte(y), noEnv)
	require.Error(t, err)
	assert.Equal(t, `m.yaml:6: outputs[0].key_mode: "x" is not a file mode (use an octal string such as "0640")`+"\n"+
		`m.yaml:7: outputs[0].bogus: unknown field in an output`+"\n"+
		`m.yaml:8: outputs[1].name: "a" is also the name of outputs[0]`+"\n"+
		`m.yaml:9: outputs[1].dir: "d" must be an absolute path`+"\n"+
		`m.yaml:11: log.level: "loud" is not one of debug, info, warn, error`, err.Error())
	var ps config.Problems
	require.ErrorAs(t, err, &ps)
	assert.Len(t, ps, 5)
}

// A mis-indented key is reported where it is, not where yaml.v3 says the
// enclosing block began, and with the key path leading to it.
func TestIndentationErrorAtItsLine(t *testing.T) {
	cases := []struct{ name, yaml, want string }{
		{"key under-indented in an item", "workload_api:\n  socket: unix:///s\noutputs:\n  - name: a\n   dir: /d\n    bundle_file: b\n",
			"bad.yaml:5: outputs[0].dir: this line is indented more than the one above, which opens no block"},
		{"key at the list's column", "workload_api:\n  socket: unix:///s\noutputs:\n  - name: a\n    dir: /d\n  bundle_file: b\n",
			"bad.yaml:6: outputs[0].bundle_file: a key where the block above holds list items"},
		{"key between two levels", "rotation:\n  debounce: 1s\n retry_min: 1s\n",
			"bad.yaml:3: retry_min: this line is indented more than the one above"},
		{"tab", "rotation:\n\tdebounce: 1s\n", "bad.yaml:2: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(tc.yaml), noEnv)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), tc.want), err.Error())
			assert.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := config.Load(p, noEnv)
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), p)
}

// TestREADMEConfigurationParses: the reference configuration in README.md
// is what operators copy; it must stay valid as the schema changes, and it
// must keep showing every output field, reload kind and proxy.
func TestREADMEConfigurationParses(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	require.True(t, ok, "README.md has no ## Configuration section")
	_, block, ok := strings.Cut(section, "```yaml\n")
	require.True(t, ok, "no yaml block in README's Configuration section")
	block, _, ok = strings.Cut(block, "```")
	require.True(t, ok, "unterminated yaml block")

	cfg, err := config.Parse("README.md", []byte(block), noEnv)
	require.NoError(t, err)
	require.Len(t, cfg.Outputs, 3)
	f := cfg.Outputs[2].Formats
	assert.True(t, f.CombinedFile != "" && f.CombinedOrder != "" && f.BundleDir != "" && f.Verify != nil,
		"the formats and verify are shown: %+v", f)
	var kinds []string
	for _, r := range cfg.Outputs[0].Reload {
		kinds = append(kinds, r.Kind())
	}
	assert.ElementsMatch(t, config.ReloadKinds(), kinds, "every reload kind is shown")
	require.Len(t, cfg.Proxies, 1)
}
