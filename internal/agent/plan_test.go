package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
)

func parseConfig(t *testing.T, y string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("agent.yaml", []byte(y), noEnv)
	require.NoError(t, err)
	return cfg
}

// TestPlanBuildsEveryReloaderComparably: a plan builds every reload kind
// (redis and traefik too, with no source: `config validate`), and two
// plans of one file have Equal outputs, so a reload of an unchanged file
// replaces nothing; a changed reload setting makes the output unequal.
func TestPlanBuildsEveryReloaderComparably(t *testing.T) {
	dir := t.TempDir()
	y := head + "outputs:\n" + out("svc", filepath.Join(dir, "svc"), "bundle_file: bundle.pem", "reload:",
		"  - redis: {addr: \"unix:///run/redis.sock\", password_file: /etc/redis/pw}",
		"  - traefik: {file: "+filepath.Join(dir, "dyn.yaml")+"}",
		"  - exec: {command: [\"true\"]}",
		"  - systemd: {unit: x.service}")
	cfg := parseConfig(t, y)
	p1, err := agent.NewPlan(cfg, agent.Env{})
	require.NoError(t, err)
	require.Len(t, p1.Outputs[0].Reloads, 4)
	for _, rl := range p1.Outputs[0].Reloads {
		require.NotNil(t, rl, "every reloader is built by the plan")
	}
	p2, err := agent.NewPlan(parseConfig(t, y), agent.Env{})
	require.NoError(t, err)
	assert.True(t, p1.Outputs[0].Equal(p2.Outputs[0]), "two plans of one file")

	for _, edit := range [][2]string{
		{"/etc/redis/pw", "/etc/redis/other"},
		{"dyn.yaml}", "dyn2.yaml}"},
		{`["true"]`, `["false"]`},
		{"x.service", "y.service"},
	} {
		p3, err := agent.NewPlan(parseConfig(t, strings.Replace(y, edit[0], edit[1], 1)), agent.Env{})
		require.NoError(t, err)
		assert.False(t, p1.Outputs[0].Equal(p3.Outputs[0]), "%s -> %s is not seen", edit[0], edit[1])
	}
}

// TestPlanPolicyFingerprint: a planned proxy's policy fingerprint (what
// the reload diff compares, through tlsproxy.Config.Equal) follows the
// content of its authorization policy (the allow entries, in order) and
// nothing else.
func TestPlanPolicyFingerprint(t *testing.T) {
	y := head + "proxies:\n" + px("a", "127.0.0.1:6701")
	hash := func(y string) string {
		t.Helper()
		p, err := agent.NewPlan(parseConfig(t, y), agent.Env{})
		require.NoError(t, err)
		return p.Proxies[0].Config.PolicyFingerprint()
	}
	base := hash(y)
	require.NotEmpty(t, base)
	assert.Equal(t, base, hash(strings.Replace(y, "11434", "11435", 1)), "the target is no policy")
	assert.NotEqual(t, base, hash(strings.Replace(y, "/traefik]", "/traefik, spiffe://example.org/b]", 1)))
	assert.NotEqual(t, base, hash(strings.Replace(y, "/traefik]", "/other]", 1)))
}

// TestNewRefusesACheckOnlyPlan: a plan made to be checked (no source, no
// registry: `config validate`, `status`) cannot be run, and Apply takes
// only a plan made with the agent's own Env.
func TestNewRefusesACheckOnlyPlan(t *testing.T) {
	cfg, dir := setup(t, "127.0.0.1:0")
	p, err := agent.Load(filepath.Join(dir, "agent.yaml"), noEnv)
	require.NoError(t, err)
	_, err = agent.New(p, agent.Options{})
	require.ErrorContains(t, err, "only to be checked")

	a := startAgent(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := a.Apply(ctx, p)
	require.ErrorContains(t, res.Err, "not made with this agent's Env")
	other, err := agent.NewPlan(cfg, agent.NewEnv(cfg, nil))
	require.NoError(t, err)
	require.ErrorContains(t, a.Apply(ctx, other).Err, "not made with this agent's Env")

	same, err := agent.NewPlan(cfg, a.Env())
	require.NoError(t, err)
	res = a.Apply(ctx, same)
	require.NoError(t, res.Err)
	require.Empty(t, res.Changes, "the same file planned again changes nothing")
}

// TestReloadRefusesRestartOnlySettings: each setting a running agent
// cannot change is refused at its own line and key, and nothing changes;
// the same value spelled out (the default) is no change.
func TestReloadRefusesRestartOnlySettings(t *testing.T) {
	addr := freeAddr(t)
	a, dir, orig := startReloadable(t, addr)
	for _, c := range []struct{ add, want string }{
		{"rotation: {debounce: 5s}\n", "agent.yaml:7: rotation.debounce: cannot change while the agent runs"},
		{"rotation: {guard: false}\n", "agent.yaml:7: rotation.guard: cannot change while the agent runs"},
		{"log: {format: console}\n", "agent.yaml:7: log.format: cannot change while the agent runs"},
	} {
		res := reloadWith(t, a, dir, orig+c.add)
		require.Error(t, res.Err, c.add)
		assert.Contains(t, res.Err.Error(), c.want)
	}
	res := reloadWith(t, a, dir, orig+"rotation: {guard: true}\n")
	require.NoError(t, res.Err, "the default spelled out is the same setting")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(orig), 0o600))
}
