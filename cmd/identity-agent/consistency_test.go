package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// `version` and `--version` print the same line.
func TestVersionFlagAndCommandAgree(t *testing.T) {
	cmd, flag := runCLI(t, "version"), runCLI(t, "--version")
	require.Equal(t, 0, cmd.code)
	require.Equal(t, 0, flag.code)
	assert.True(t, strings.HasPrefix(cmd.stdout, "identity-agent "), cmd.stdout)
	assert.Equal(t, cmd.stdout, flag.stdout)
}

// status cannot read its target: exit 3 with UNKNOWN on stdout, as for an
// unreachable agent, whatever the cause.
func TestStatusUnknownWhenTargetUnusable(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("outputs: [\n"), 0o600))
	for name, args := range map[string][]string{
		"missing config": {"status", "--config", filepath.Join(dir, "nope.yaml")},
		"bad config":     {"status", "--config", bad},
		"no agent":       {"status", "--admin", filepath.Join(dir, "admin.sock")},
		"tcp address":    {"status", "--admin", "http://127.0.0.1:9464"},
	} {
		r := runCLI(t, args...)
		assert.Equal(t, 3, r.code, name)
		assert.True(t, strings.HasPrefix(r.stdout, "UNKNOWN: "), "%s: %q", name, r.stdout)
		assert.Equal(t, 1, strings.Count(r.stdout, "\n"), "%s: one line: %q", name, r.stdout)
	}
	// status --help offers only what exists: no TCP admin address.
	r := runCLI(t, "status", "--help")
	assert.NotContains(t, r.stdout, "http://")
}

// redis config accepts exactly the phases its help names.
func TestRedisConfigPhasesMatchHelp(t *testing.T) {
	help := runCLI(t, "redis", "config", "--help")
	require.Equal(t, 0, help.code)
	assert.Contains(t, help.stdout, "--phase A|B|C|D")
	for _, p := range []string{"A", "B", "C", "D"} {
		r := runCLI(t, "redis", "config", "--phase", p)
		assert.Equal(t, 0, r.code, "phase %s: %s", p, r.stderr)
		assert.Contains(t, r.stdout, "phase "+p, p)
	}
	r := runCLI(t, "redis", "config", "--phase", "E")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "--phase")
}

// The standalone proxy has no config file: its errors name its flags.
func TestProxyErrorsNameFlags(t *testing.T) {
	base := []string{"--workload-api", "unix:///nonexistent/agent.sock", "--allow", "spiffe://example.org/x"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "--listen", "127.0.0.1:0", "--target", "192.0.2.1:80"}, `identity-agent: --target: "192.0.2.1:80": plaintext target must be a loopback IP, localhost or a unix socket (set --unsafe-allow-non-loopback-plaintext to override)`},
		{[]string{"client", "--listen", "0.0.0.0:0", "--target", "127.0.0.1:80"}, `identity-agent: --listen: "0.0.0.0:0": plaintext listener must be a loopback IP, localhost or a unix socket (set --unsafe-allow-non-loopback-plaintext to override)`},
		{[]string{"server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:80", "--rewrite-host"}, `identity-agent: --rewrite-host: needs --http`},
		{[]string{"server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:80", "--max-conns", "-1"}, `identity-agent: --max-conns: -1: must not be negative`},
		{[]string{"server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:80", "--idle-timeout=-1s"}, `identity-agent: --idle-timeout: -1s: must not be negative`},
		{[]string{"server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:80", "--allow", "bad"}, `identity-agent: --allow: "bad": want spiffe://trust-domain/path, spiffe://trust-domain/prefix/* or spiffe://trust-domain`},
	} {
		r := runCLI(t, append(append([]string{"proxy"}, c.args...), base...)...)
		assert.Equal(t, 2, r.code, "%v", c.args)
		assert.Equal(t, c.want+"\n", r.stderr, "%v", c.args)
	}
}

// examples/redis/redis-phase-A.conf, where try.sh and the README's walk
// start, ends with exactly what `redis config --phase A` prints.
func TestRedisPhaseAConfigMatchesGenerator(t *testing.T) {
	r := runCLI(t, "redis", "config", "--phase", "A")
	require.Equal(t, 0, r.code, r.stderr)
	b, err := os.ReadFile(filepath.Join(examplesDir, "redis", "redis-phase-A.conf"))
	require.NoError(t, err)
	assert.True(t, strings.HasSuffix(string(b), r.stdout), "examples/redis/redis-phase-A.conf must end with:\n%s", r.stdout)
	assert.NotContains(t, string(b), "bind 0.0.0.0")
}
