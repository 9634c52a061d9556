package main_test

import (
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nobodyDirs is a config (as root) whose output dir and admin socket dir
// exist and belong to uid 65534, as `service prepare --user NAME` leaves
// them after a first install; it returns the config, the output dir and
// the user's name.
func nobodyDirs(t *testing.T) (cfg, out, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to make directories owned by another user (uid 65534)")
	}
	u, err := user.LookupId("65534")
	if err != nil {
		t.Skip("needs a user with uid 65534 (nobody) in the user database")
	}
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg = writeConfig(t, dir, apiSock, "")
	run := filepath.Join(dir, "run")
	out = filepath.Join(dir, "out")
	for _, d := range []string{run, out} {
		require.NoError(t, os.Mkdir(d, 0o755))
		require.NoError(t, os.Chown(d, 65534, 65534))
	}
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	moved := strings.Replace(string(b), dir+"/admin.sock", run+"/admin.sock", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(moved), 0o600))
	return cfg, out, u.Username
}

// Root validating the config of a service that runs as another user:
// `config validate` refused every output dir the service's user owns (the
// Ansible role validates as root on each run, so its second run failed).
// With --user NAME it checks as the agent running as NAME: OK, and nothing
// is changed. Without it the refusal stays, one line that says how to check
// as the service's user. An unknown --user is one usage line.
func TestValidateAsTheServiceUser(t *testing.T) {
	cfg, out, name := nobodyDirs(t)
	require.NoError(t, os.Chmod(out, 0o777)) // validate must not narrow it

	r := runCLI(t, "config", "validate", "--user", name, cfg)
	assert.Equal(t, 0, r.code, "%+v", r)
	assert.Equal(t, cfg+": OK (1 outputs, 0 proxies)\n", r.stdout)
	fi, err := os.Lstat(out)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o777, fi.Mode(), "config validate --user changed the dir")

	r = runCLI(t, "config", "validate", cfg)
	assert.Equal(t, 2, r.code, "%+v", r)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	require.Len(t, lines, 1, "%q", r.stderr)
	assert.True(t, strings.HasSuffix(lines[0], `: outputs[0].dir: "`+out+`" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own`+
		`; validating as root: pass --user `+name+` to check as the service's user`), "%q", lines[0])

	r = runCLI(t, "config", "validate", "--user", "ia-no-such-user", cfg)
	assert.Equal(t, 2, r.code, "%+v", r)
	lines = strings.Split(strings.TrimSpace(r.stderr), "\n")
	require.Len(t, lines, 1, "%q", r.stderr)
	assert.Contains(t, lines[0], `--user: user "ia-no-such-user"`)
	assert.Empty(t, r.stdout)

	// --user checks as that user: root's own dir is now the foreign one.
	require.NoError(t, os.Chown(out, 0, 0))
	r = runCLI(t, "config", "validate", "--user", name, cfg)
	assert.Equal(t, 2, r.code, "%+v", r)
	assert.Contains(t, r.stderr, `: outputs[0].dir: "`+out+`" is owned by uid 0, not `+name+` (uid 65534): chown it to `+name+` or point the config at a directory of its own`+"\n")
	assert.NotContains(t, r.stderr, "validating as root")
}

// The unit's ExecStartPre (`service prepare --user NAME`, as root) checked
// the config for root, so every start after the first refused the output
// dir it had itself given to NAME. It checks for NAME now.
func TestServicePrepareChecksForItsUser(t *testing.T) {
	cfg, out, name := nobodyDirs(t)
	r := runCLI(t, "service", "prepare", "--config", cfg, "--user", name)
	assert.Equal(t, 0, r.code, "%+v", r)
	fi, err := os.Lstat(out)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o755, fi.Mode())

	r = runCLI(t, "service", "prepare", "--config", cfg, "--user", "ia-no-such-user")
	assert.Equal(t, 2, r.code, "%+v", r)
	assert.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "%q", r.stderr)
}

// `redis config --config` and `redis transition` read the config for its
// settings, and root runs them (the Redis example, the Ansible role) next
// to a service whose user owns the output dirs: they refused that config
// with the owner rule, a rule for whoever writes the dirs, not for them.
func TestRedisCommandsReadAServiceConfigAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make directories owned by another user (uid 65534)")
	}
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs/redis")
	require.NoError(t, os.MkdirAll(certs, 0o755))
	require.NoError(t, os.Chown(certs, 65534, 65534))
	pass := filepath.Join(dir, "redis.pass")
	require.NoError(t, os.WriteFile(pass, []byte("s3cret\n"), 0o600))
	b, err := os.ReadFile(filepath.Join(examplesDir, "redis/agent.yaml"))
	require.NoError(t, err)
	cfg := strings.NewReplacer("/etc/identity-agent/certs/redis", certs, "/etc/identity-agent/redis-admin.pass", pass,
		"/run/identity-agent/admin.sock", filepath.Join(dir, "admin.sock"), "/var/lib/identity-agent/", dir+"/").Replace(string(b))
	require.Contains(t, cfg, "dir: "+certs, "examples/redis/agent.yaml changed: update this test")
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))

	r := runCLI(t, "redis", "config", "--phase", "B", "--config", p)
	assert.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stdout, "tls-cert-file "+certs+"/svid.pem")
	// The same file is still judged for root by config validate.
	assert.Equal(t, 2, runCLI(t, "config", "validate", p).code)
}
