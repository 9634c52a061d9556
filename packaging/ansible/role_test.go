package ansible_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/fleettest"
)

var agentBin string

func TestMain(m *testing.M) { fleettest.MainWithAgent(m, "ia-ansible-", &agentBin) }

// host is one inventory host: localhost with connection local, its own
// temporary root, and its own redis-server to migrate.
type host struct {
	name, root, cfg string
	plain, tls      int
	redisSock       string
	agent           *fleettest.Proc
}

type recap struct{ ok, changed, failed int }

var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)`)

func recaps(out string) map[string]recap {
	m := map[string]recap{}
	for _, g := range recapLine.FindAllStringSubmatch(out, -1) {
		ok, _ := strconv.Atoi(g[2])
		ch, _ := strconv.Atoi(g[3])
		f, _ := strconv.Atoi(g[4])
		m[g[1]] = recap{ok, ch, f}
	}
	return m
}

// The shipped playbook and role, run by Debian's ansible-playbook against
// two local hosts (service management off: CI has no systemd as PID 1; the
// test runs each host's agent itself, as its service would): install, a
// second run that changes nothing, the Redis transition driven by
// identity_agent_redis_phase one host at a time (a refused gate stops the
// play before the next host), rollback, and a bad config that fails the
// host and leaves its config and running agent alone.
func TestRoleInstallsIdempotentlyAndDrivesTheRedisTransition(t *testing.T) {
	playbookBin := fleettest.NeedBinary(t, "ansible-playbook")
	dir := t.TempDir()
	_, apiSock := fleettest.DevAPI(t, agentBin, dir, time.Hour, "spiffe://example.org/redis")
	pw := filepath.Join(dir, "redis.pass")
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))

	hosts := []*host{{name: "host1"}, {name: "host2"}}
	inv := map[string]any{}
	for _, h := range hosts {
		h.root = filepath.Join(dir, h.name)
		h.cfg = filepath.Join(h.root, "etc/identity-agent/config.yaml")
		h.plain, h.tls = fleettest.FreePort(t), fleettest.FreePort(t)
		rdir := filepath.Join(dir, h.name+"-redis")
		require.NoError(t, os.MkdirAll(rdir, 0o700))
		_, h.redisSock = fleettest.Redis(t, rdir, "--port", strconv.Itoa(h.plain), "--requirepass", "s3cret")
		certs := filepath.Join(h.root, "certs/redis")
		redisAdmin := map[string]any{"addr": "unix://" + h.redisSock, "password_file": pw}
		inv[h.name] = map[string]any{
			"identity_agent_root":  h.root,
			"identity_agent_admin": map[string]any{"socket": filepath.Join(h.root, "admin.sock")},
			"identity_agent_outputs": []any{map[string]any{
				"name": "redis", "spiffe_id": "spiffe://example.org/redis", "dir": certs,
				"cert_file": "svid.pem", "key_file": "key.pem", "bundle_file": "bundle.pem", "key_mode": "0600",
				"reload": []any{map[string]any{"redis": redisAdmin}},
			}},
			"identity_agent_redis_transition": map[string]any{
				"admin": redisAdmin, "plain_port": h.plain, "tls_port": h.tls,
				"server_id": "spiffe://example.org/redis", "spiffe_id": "spiffe://example.org/redis",
				"cert_file": certs + "/svid.pem", "key_file": certs + "/key.pem", "ca_cert_file": certs + "/bundle.pem",
				"state_file": filepath.Join(h.root, "transition.json"), "window": "2s", "sample_interval": "200ms",
			},
		}
	}
	inventory := map[string]any{"all": map[string]any{"children": map[string]any{"identity_agent": map[string]any{
		"hosts": inv,
		"vars": map[string]any{
			"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": false,
			"identity_agent_binary_src":          agentBin,
			"identity_agent_manage_service":      false,
			"identity_agent_workload_api_socket": "unix://" + apiSock,
			"identity_agent_rotation":            map[string]any{"retry_min": "100ms", "retry_max": "1s"},
		},
	}}}}
	invFile := filepath.Join(dir, "inventory.json")
	b, err := json.Marshal(inventory)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(invFile, b, 0o600))

	play := func(extra ...string) (fleettest.Result, map[string]recap) {
		t.Helper()
		argv := []string{playbookBin, "-i", invFile, "site.yml"}
		for _, e := range extra {
			argv = append(argv, "-e", e)
		}
		start := time.Now()
		defer func() { t.Logf("ansible-playbook %v: %v", extra, time.Since(start).Round(10*time.Millisecond)) }()
		r := fleettest.Run(t, 3*time.Minute, ".", []string{"ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "ansible-tmp"),
			"ANSIBLE_REMOTE_TEMP=" + filepath.Join(dir, "ansible-tmp"), "ANSIBLE_RETRY_FILES_ENABLED=0"}, argv...)
		return r, recaps(r.Stdout)
	}
	phase := func(h *host) string {
		t.Helper()
		r := fleettest.Run(t, time.Minute, ".", nil, agentBin, "redis", "transition", "status", "--json", "--config", h.cfg)
		require.Equal(t, 0, r.Code, r.String())
		var st struct{ Phase string }
		require.NoError(t, json.Unmarshal([]byte(r.Stdout), &st), r.Stdout)
		return st.Phase
	}

	// 1. Install: binary, config rendered from the inventory and validated.
	r, rc := play()
	require.Equal(t, 0, r.Code, r.String())
	for _, h := range hosts {
		assert.Positive(t, rc[h.name].changed, "first run installs on %s", h.name)
		v := fleettest.Run(t, time.Minute, ".", nil, filepath.Join(h.root, "usr/local/bin/identity-agent"), "config", "validate", h.cfg)
		require.Equal(t, 0, v.Code, v.String())
		// The service's stand-in runs the binary the role installed.
		h.agent = fleettest.Start(t, h.name+" identity-agent run", filepath.Join(h.root, "usr/local/bin/identity-agent"), "run", "--config", h.cfg)
	}
	for _, h := range hosts {
		fleettest.WaitFor(t, 30*time.Second, h.name+" agent writes Redis's files", func() (bool, string) {
			_, err := os.Stat(filepath.Join(h.root, "certs/redis/bundle.pem"))
			return err == nil, fmt.Sprint(err)
		})
	}

	// 2. Idempotence: the second run changes nothing.
	r, rc = play()
	require.Equal(t, 0, r.Code, r.String())
	for _, h := range hosts {
		assert.Equal(t, recap{rc[h.name].ok, 0, 0}, rc[h.name], "second run on %s:\n%s", h.name, r.Stdout)
	}

	// 3. A → C on every host, one step at a time; again: nothing to do.
	r, rc = play("identity_agent_redis_phase=C")
	require.Equal(t, 0, r.Code, r.String())
	for _, h := range hosts {
		assert.Equal(t, 2, rc[h.name].changed, "A→B and B→C on %s:\n%s", h.name, r.Stdout)
		assert.Equal(t, "C", phase(h))
	}
	r, rc = play("identity_agent_redis_phase=C")
	require.Equal(t, 0, r.Code, r.String())
	for _, h := range hosts {
		assert.Zero(t, rc[h.name].changed, "phase C again on %s:\n%s", h.name, r.Stdout)
	}

	// 4. A plaintext client on host1 makes its C→D gate refuse: the play
	// stops there and host2 is not touched.
	legacy, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", hosts[0].plain))
	require.NoError(t, err)
	_, err = legacy.Write([]byte("AUTH s3cret\r\nPING\r\n"))
	require.NoError(t, err)
	time.Sleep(time.Second) // several samples see it
	r, rc = play("identity_agent_redis_phase=D")
	assert.NotEqual(t, 0, r.Code, r.String())
	assert.Contains(t, r.Stdout, "refusing C→D")
	assert.Equal(t, 1, rc["host1"].failed, r.Stdout)
	assert.Zero(t, rc["host2"].ok, "the play stops before host2:\n%s", r.Stdout)
	assert.Equal(t, "C", phase(hosts[0]))
	assert.Equal(t, "C", phase(hosts[1]))

	// 5. Once the client is gone for the window, D everywhere.
	require.NoError(t, legacy.Close())
	fleettest.WaitFor(t, 30*time.Second, "C→D through the role once the plaintext client left", func() (bool, string) {
		time.Sleep(time.Second)
		r, _ = play("identity_agent_redis_phase=D")
		return r.Code == 0, r.Stdout
	})
	for _, h := range hosts {
		assert.Equal(t, "D", phase(h))
		_, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", h.plain), time.Second)
		assert.Error(t, err, "%s: plaintext port closed in D", h.name)
	}

	// 6. Rollback to B: two steps back per host, the plaintext port reopens.
	r, rc = play("identity_agent_redis_phase=B")
	require.Equal(t, 0, r.Code, r.String())
	for _, h := range hosts {
		assert.Equal(t, 2, rc[h.name].changed, "D→C and C→B on %s:\n%s", h.name, r.Stdout)
		assert.Equal(t, "B", phase(h))
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", h.plain), time.Second)
		if assert.NoError(t, err, "%s: rollback reopens the plaintext port", h.name) {
			_ = c.Close()
		}
	}

	// 7. A bad config fails host1 at validation: its file and its running
	// agent stay as they were, and host2 is not touched.
	before := map[string][]byte{}
	for _, h := range hosts {
		before[h.name], err = os.ReadFile(h.cfg)
		require.NoError(t, err)
	}
	r, rc = play(`{"identity_agent_extra_config": {"rotation": {"retry_min": "soon"}}}`)
	assert.NotEqual(t, 0, r.Code, r.String())
	assert.Contains(t, r.Stdout, `\"soon\" is not a duration`, "the agent's validation error is shown")
	assert.Equal(t, 1, rc["host1"].failed, r.Stdout)
	assert.Zero(t, rc["host2"].ok, r.Stdout)
	for _, h := range hosts {
		after, err := os.ReadFile(h.cfg)
		require.NoError(t, err)
		assert.Equal(t, string(before[h.name]), string(after), "%s keeps its config", h.name)
		assert.False(t, h.agent.Exited(), "%s's agent keeps running", h.name)
	}
}

// Debian's ansible-lint (production profile) accepts the role and playbook.
func TestRoleLints(t *testing.T) {
	lint := fleettest.NeedBinary(t, "ansible-lint")
	r := fleettest.Run(t, 3*time.Minute, ".", []string{"NO_COLOR=1"}, lint, "--offline", "--nocolor", "--profile", "production", "site.yml", "roles/identity_agent")
	require.Equal(t, 0, r.Code, r.String())
	assert.Contains(t, r.Stdout+r.Stderr, "Passed")
}

// The shipped example inventory renders a config that the agent accepts on
// every host (only the service groups are replaced by the test user's
// group, and everything goes into a temporary root per host).
func TestExampleInventoryRendersValidConfigs(t *testing.T) {
	playbookBin := fleettest.NeedBinary(t, "ansible-playbook")
	dir := t.TempDir()
	b, err := os.ReadFile("inventory.example.yml")
	require.NoError(t, err)
	inv := string(b)
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	require.NoError(t, err)
	for _, old := range []string{"owner: {group: redis}", "owner: {group: celery}"} {
		require.Contains(t, inv, old, "inventory.example.yml changed: update this test")
		inv = strings.ReplaceAll(inv, old, "owner: {group: "+g.Name+"}")
	}
	invFile := filepath.Join(dir, "inventory.yml")
	require.NoError(t, os.WriteFile(invFile, []byte(inv), 0o600))
	root := filepath.Join(dir, "root")
	r := fleettest.Run(t, 3*time.Minute, ".", []string{"ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "tmp"),
		"ANSIBLE_REMOTE_TEMP=" + filepath.Join(dir, "tmp"), "ANSIBLE_RETRY_FILES_ENABLED=0"},
		playbookBin, "-i", invFile, "site.yml",
		"-e", "ansible_connection=local", "-e", "ansible_become=false", "-e", "ansible_python_interpreter=/usr/bin/python3",
		"-e", "identity_agent_manage_service=false", "-e", "identity_agent_binary_src="+agentBin,
		"-e", "identity_agent_root="+root+"/{{ inventory_hostname }}")
	require.Equal(t, 0, r.Code, r.String())
	rc := recaps(r.Stdout)
	for _, h := range []string{"redis-1.internal", "worker-1.internal", "worker-2.internal"} {
		assert.Zero(t, rc[h].failed, "%s:\n%s", h, r.Stdout)
		cfg, err := os.ReadFile(filepath.Join(root, h, "etc/identity-agent/config.yaml"))
		require.NoError(t, err, h)
		assert.Contains(t, string(cfg), "spiffe://example.org/", h)
	}
}

// A reload the agent refuses (here a new Workload API socket, which only
// a restart applies) fails the host, and so does every later run with the
// same variables while the agent runs the old file: the role compares
// status's config.hash with the file on disk (issue 19, bug 4). Reverting
// the variables brings the host back to ok, changed=0 on the next run.
func TestRoleKeepsFailingWhileTheAgentRunsAnotherConfig(t *testing.T) {
	playbookBin := fleettest.NeedBinary(t, "ansible-playbook")
	dir := t.TempDir()
	_, apiSock := fleettest.DevAPI(t, agentBin, dir, time.Hour, "spiffe://example.org/svc")
	root := filepath.Join(dir, "host1")
	cfg := filepath.Join(root, "etc/identity-agent/config.yaml")
	inv := func(name, apiSocket string) string {
		inventory := map[string]any{"all": map[string]any{"children": map[string]any{"identity_agent": map[string]any{
			"hosts": map[string]any{"host1": map[string]any{
				"identity_agent_root":  root,
				"identity_agent_admin": map[string]any{"socket": filepath.Join(root, "admin.sock")},
				"identity_agent_outputs": []any{map[string]any{
					"name": "svc", "spiffe_id": "spiffe://example.org/svc", "dir": filepath.Join(root, "certs/svc"),
					"cert_file": "svid.pem", "key_file": "key.pem", "bundle_file": "bundle.pem",
				}},
			}},
			"vars": map[string]any{
				"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": false,
				"identity_agent_binary_src":          agentBin,
				"identity_agent_manage_service":      false,
				"identity_agent_workload_api_socket": "unix://" + apiSocket,
			},
		}}}}
		p := filepath.Join(dir, name+".json")
		b, err := json.Marshal(inventory)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}
	play := func(invFile string) (fleettest.Result, recap) {
		t.Helper()
		r := fleettest.Run(t, 3*time.Minute, ".", []string{"ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "ansible-tmp"),
			"ANSIBLE_REMOTE_TEMP=" + filepath.Join(dir, "ansible-tmp"), "ANSIBLE_RETRY_FILES_ENABLED=0"},
			playbookBin, "-i", invFile, "site.yml")
		return r, recaps(r.Stdout)["host1"]
	}

	good := inv("good", apiSock)
	r, rc := play(good)
	require.Equal(t, 0, r.Code, r.String())
	require.Zero(t, rc.failed)
	agent := fleettest.Start(t, "identity-agent run", filepath.Join(root, "usr/local/bin/identity-agent"), "run", "--config", cfg)
	fleettest.WaitFor(t, 30*time.Second, "the agent writes its files", func() (bool, string) {
		_, err := os.Stat(filepath.Join(root, "certs/svc/bundle.pem"))
		return err == nil, fmt.Sprint(err)
	})
	r, rc = play(good)
	require.Equal(t, 0, r.Code, r.String())
	require.Equal(t, recap{rc.ok, 0, 0}, rc, "second run changes nothing:\n%s", r.Stdout)

	// workload_api.socket only applies on a restart: the reload is refused.
	moved := inv("moved", apiSock+".new")
	r, rc = play(moved)
	assert.NotEqual(t, 0, r.Code, r.String())
	assert.Equal(t, 1, rc.failed, r.Stdout)
	assert.Contains(t, r.Stdout, "workload_api.socket: cannot change while the agent runs")
	// Same variables again: nothing to render, but the agent still runs the
	// old file, so the host fails again, saying why.
	r, rc = play(moved)
	assert.NotEqual(t, 0, r.Code, r.String())
	assert.Equal(t, 1, rc.failed, "a re-run must not report success while the agent runs another config:\n%s", r.Stdout)
	assert.Contains(t, r.Stdout, "the agent refused it")
	assert.False(t, agent.Exited(), "the agent keeps running")

	// Back to the running file: a reload that changes nothing, then ok.
	r, rc = play(good)
	require.Equal(t, 0, r.Code, r.String())
	r, rc = play(good)
	require.Equal(t, 0, r.Code, r.String())
	assert.Equal(t, recap{rc.ok, 0, 0}, rc, r.Stdout)
}

// The role validates the config as root, and the agent runs as the
// service's user, who owns the output dirs after the first install: the
// role's `config validate` checked for root and so refused them on every
// later run. It checks for identity_agent_user now (`--user`).
func TestRoleValidatesForTheServiceUser(t *testing.T) {
	playbookBin := fleettest.NeedBinary(t, "ansible-playbook")
	if os.Geteuid() != 0 {
		t.Skip("needs root to make an output dir owned by another user (uid 65534)")
	}
	u, err := user.LookupId("65534")
	if err != nil {
		t.Skip("needs a user with uid 65534 (nobody) in the user database")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	certs := filepath.Join(dir, "certs")
	require.NoError(t, os.Mkdir(certs, 0o755))
	require.NoError(t, os.Chown(certs, 65534, 65534))
	inv := map[string]any{"all": map[string]any{"children": map[string]any{"identity_agent": map[string]any{
		"hosts": map[string]any{"host1": map[string]any{
			"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": false,
			"identity_agent_binary_src":     agentBin,
			"identity_agent_root":           root,
			"identity_agent_manage_service": false,
			"identity_agent_user":           u.Username,
			"identity_agent_admin":          map[string]any{"socket": filepath.Join(dir, "admin.sock")},
			"identity_agent_outputs": []any{map[string]any{
				"name": "svc", "spiffe_id": "spiffe://example.org/svc", "dir": certs,
				"cert_file": "svid.pem", "key_file": "key.pem",
			}},
		}},
	}}}}
	invFile := filepath.Join(dir, "inventory.json")
	b, err := json.Marshal(inv)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(invFile, b, 0o600))
	r := fleettest.Run(t, 3*time.Minute, ".", []string{"ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCAL_TEMP=" + filepath.Join(dir, "tmp"),
		"ANSIBLE_REMOTE_TEMP=" + filepath.Join(dir, "tmp"), "ANSIBLE_RETRY_FILES_ENABLED=0"},
		playbookBin, "-i", invFile, "site.yml")
	require.Equal(t, 0, r.Code, r.String())
	assert.Zero(t, recaps(r.Stdout)["host1"].failed, r.Stdout)
	cfg, err := os.ReadFile(filepath.Join(root, "etc/identity-agent/config.yaml"))
	require.NoError(t, err)
	assert.Contains(t, string(cfg), certs)
}
