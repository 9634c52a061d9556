package agent_test

import (
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/unixsock"
)

// head is line 1 of every rule's example file.
const head = "workload_api: {socket: \"unix:///run/spire/agent.sock\"}\n"

// out is an output that is fine on its own, at lines 3-6 after "outputs:".
func out(name, dir string, extra ...string) string {
	s := "  - name: " + name + "\n    dir: " + dir + "\n    cert_file: svid.pem\n    key_file: key.pem\n"
	for _, e := range extra {
		s += "    " + e + "\n"
	}
	return s
}

func px(name, listen string) string {
	return "  - name: " + name + "\n    mode: server\n    listen: " + listen + "\n    target: 127.0.0.1:11434\n    allow: [spiffe://example.org/traefik]\n"
}

// rule is one validation rule: a file that breaks it and the line
// `config validate` (and `run`) print for it. docs/CONFIG.md shows these
// lines; TestConfigDocExamplesAreReal keeps the two in step.
type rule struct {
	name, yaml, want string
	// doc is the line as docs/CONFIG.md shows it, when want names a path
	// made by the test.
	doc string
}

func rules(t *testing.T) []rule {
	t.Helper()
	// A symlink to an output directory is the same directory.
	tmp := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(tmp, "real"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(tmp, "real"), filepath.Join(tmp, "link")))
	// A Traefik link's directory every user can write, as /tmp.
	open := filepath.Join(tmp, "open")
	require.NoError(t, os.Mkdir(open, 0o700))
	require.NoError(t, os.Chmod(open, 0o777|os.ModeSticky))
	return append(ownerRules(t), []rule{
		{"traefik link in a dir every user can write", head + "outputs:\n" + out("traefik", "/etc/traefik/tls", "bundle_file: bundle.pem", "reload:", "  - traefik: {file: "+filepath.Join(open, "dyn.yml")+"}"),
			`agent.yaml:9: outputs[0].reload[0].traefik.file: directory ` + open + ` is writable by every user (mode 1777): another local user could put a file or a directory at the link's name; use a directory only the agent and the consumer can write`,
			`agent.yaml:9: outputs[0].reload[0].traefik.file: directory /tmp is writable by every user (mode 1777): another local user could put a file or a directory at the link's name; use a directory only the agent and the consumer can write`},
		{"dir is a symlink", head + "outputs:\n" + out("redis", filepath.Join(tmp, "link")),
			`agent.yaml:4: outputs[0].dir: "` + filepath.Join(tmp, "link") + `" is a symlink; configure the directory it points to`,
			`agent.yaml:4: outputs[0].dir: "/srv/tls" is a symlink; configure the directory it points to`},
		{"dir is a file", head + "outputs:\n" + out("redis", "/etc/hosts"),
			`agent.yaml:4: outputs[0].dir: "/etc/hosts" exists and is not a directory`, ""},
		{"relative dir", head + "outputs:\n" + out("redis", "out/redis"),
			`agent.yaml:4: outputs[0].dir: "out/redis" must be an absolute path`, ""},
		{"tcp workload API without a port", "workload_api: {socket: \"tcp://127.0.0.1\"}\n",
			`agent.yaml:1: workload_api.socket: "tcp://127.0.0.1" must be tcp://IP:port: address 127.0.0.1: missing port in address`, ""},
		{"relative admin socket", head + "admin:\n  socket: run/admin.sock\n",
			`agent.yaml:3: admin.socket: "run/admin.sock" must be an absolute path`, ""},
		{"relative pid file", head + "outputs:\n" + out("redis", "/etc/redis/tls", "reload:", "  - signal: {pid_file: redis.pid}"),
			`agent.yaml:8: outputs[0].reload[0].signal.pid_file: "redis.pid" must be an absolute path`, ""},
		{"relative reload file", head + "outputs:\n" + out("traefik", "/etc/traefik/tls", "bundle_file: bundle.pem", "reload:", "  - traefik: {file: dynamic/spiffe.yaml}"),
			`agent.yaml:9: outputs[0].reload[0].traefik.file: "dynamic/spiffe.yaml" must be an absolute path`, ""},
		{"same dir, trailing slash", head + "outputs:\n" + out("a", "/srv/tls") + out("b", "/srv/tls/"),
			`agent.yaml:8: outputs[1].dir: "/srv/tls/" is also the dir of outputs[0]; two outputs cannot share a directory`, ""},
		{"same dir, ./", head + "outputs:\n" + out("a", "/srv/tls") + out("b", "/srv/./tls"),
			`agent.yaml:8: outputs[1].dir: "/srv/./tls" is also the dir of outputs[0]; two outputs cannot share a directory`, ""},
		{"same dir, symlink", head + "outputs:\n" + out("a", filepath.Join(tmp, "real", "x")) + out("b", filepath.Join(tmp, "link", "x")),
			`agent.yaml:8: outputs[1].dir: "` + filepath.Join(tmp, "link", "x") + `" is also the dir of outputs[0] (both are ` + filepath.Join(resolved(t, tmp), "real", "x") + `); two outputs cannot share a directory`, ""},
		{"nested dirs", head + "outputs:\n" + out("a", "/srv/tls") + out("b", "/srv/tls/b"),
			`agent.yaml:8: outputs[1].dir: "/srv/tls/b" is inside outputs[0].dir "/srv/tls"; output directories must not nest`, ""},
		{"two proxies on one address", head + "proxies:\n" + px("a", "0.0.0.0:6701") + px("b", "127.0.0.1:6701"),
			`agent.yaml:10: proxies[1].listen: "127.0.0.1:6701" is also the address of proxies[0]`, ""},
		{"proxy on metrics_listen", head + "admin: {metrics_listen: \"127.0.0.1:9100\"}\nproxies:\n" + px("a", "localhost:9100"),
			`agent.yaml:6: proxies[0].listen: "localhost:9100" is also the address of admin.metrics_listen`, ""},
		{"proxy listen", head + "proxies:\n" + px("a", "6701"),
			`agent.yaml:5: proxies[0].listen: "6701": address 6701: missing port in address`, ""},
		{"proxy target", head + "proxies:\n  - name: a\n    mode: server\n    listen: 0.0.0.0:6701\n    target: 10.0.0.5:11434\n    allow: [spiffe://example.org/traefik]\n",
			`agent.yaml:6: proxies[0].target: "10.0.0.5:11434": plaintext target must be a loopback IP, localhost or a unix socket (set unsafe_allow_non_loopback_plaintext to override)`, ""},
		{"proxy allow entry", head + "proxies:\n  - name: a\n    mode: server\n    listen: 0.0.0.0:6701\n    target: 127.0.0.1:1\n    allow:\n      - spiffe://example.org/*/x\n",
			`agent.yaml:8: proxies[0].allow[0]: "spiffe://example.org/*/x": "*" is only allowed as a final "/*" path segment`, ""},
		{"unknown owner user", head + "outputs:\n" + out("redis", "/etc/redis/tls", "owner:", "  user: no-such-user-x"),
			`agent.yaml:8: outputs[0].owner.user: user "no-such-user-x" does not exist on this host`, ""},
		{"unknown owner group", head + "outputs:\n" + out("redis", "/etc/redis/tls", "owner:", "  group: no-such-group-x"),
			`agent.yaml:8: outputs[0].owner.group: group "no-such-group-x" does not exist on this host`, ""},
		{"file names collide", head + "outputs:\n  - name: redis\n    dir: /etc/redis/tls\n    cert_file: redis.pem\n    key_file: redis.pem\n",
			`agent.yaml:6: outputs[0].key_file: "redis.pem" is also used by cert_file`, ""},
		{"file name with a path", head + "outputs:\n" + out("redis", "/etc/redis/tls", "bundle_file: ../ca.pem"),
			`agent.yaml:7: outputs[0].bundle_file: "../ca.pem" must be a plain file name inside dir`, ""},
		{"group-writable file", head + "outputs:\n" + out("redis", "/etc/redis/tls", `cert_mode: "0664"`),
			`agent.yaml:7: outputs[0].cert_mode: 0664 lets group or other write the file; use at most 0644`, ""},
		{"world-writable key", head + "outputs:\n" + out("redis", "/etc/redis/tls", `key_mode: "0777"`),
			`agent.yaml:7: outputs[0].key_mode: 0777 lets group or other write the file; use 0600 or 0640`, ""},
		{"setuid", head + "outputs:\n" + out("redis", "/etc/redis/tls", `cert_mode: "4644"`),
			`agent.yaml:7: outputs[0].cert_mode: 4644 sets a setuid, setgid or sticky bit; identity files never need one`, ""},
		{"world-readable key", head + "outputs:\n" + out("redis", "/etc/redis/tls", `key_mode: "0644"`),
			`agent.yaml:7: outputs[0].key_mode: 0644 lets every user read a secret; use 0600 or 0640 (or set unsafe_world_readable_key: true)`, ""},
		{"world-readable token", head + "outputs:\n  - name: api\n    dir: /run/api\n    jwt:\n      - {audience: [api], file: token.jwt, mode: \"0644\"}\n",
			`agent.yaml:6: outputs[0].jwt[0].mode: 0644 lets every user read a secret; use 0600 or 0640 (or set unsafe_world_readable_key: true)`, ""},
		{"unsupported signal", head + "outputs:\n" + out("redis", "/etc/redis/tls", "reload:", "  - signal: {pid_file: /run/redis.pid, name: SIGKILL}"),
			`agent.yaml:8: outputs[0].reload[0].signal.name: "SIGKILL" is not a supported signal (SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH)`, ""},
		{"systemd action", head + "outputs:\n" + out("redis", "/etc/redis/tls", "reload:", "  - systemd: {unit: redis, action: stop}"),
			`agent.yaml:8: outputs[0].reload[0]: systemd reload of "redis": unsupported action "stop" (want reload, restart, try-restart, reload-or-restart or try-reload-or-restart)`, ""},
		{"redis TLS admin without server_id", head + "outputs:\n" + out("redis", "/etc/redis/tls", "reload:", "  - redis: {addr: \"rediss://127.0.0.1:6380\"}"),
			`agent.yaml:8: outputs[0].reload[0].redis.server_id: is required for a TLS admin connection (the SPIFFE ID or spiffe://trust-domain Redis presents)`, ""},
		{"no Workload API", "outputs:\n" + out("redis", "/etc/redis/tls"),
			`agent.yaml:1: workload_api.socket: no Workload API address: set it or export SPIFFE_ENDPOINT_SOCKET`, ""},
		{"relative Workload API socket", "workload_api: {socket: \"unix://spire/agent.sock\"}\n",
			`agent.yaml:1: workload_api.socket: "unix://spire/agent.sock" must name an absolute path (unix:///path)`, ""},
		{"metrics on a public address", head + "admin: {metrics_listen: \"0.0.0.0:9100\"}\n",
			`agent.yaml:2: admin.metrics_listen: "0.0.0.0:9100" must be a loopback address`, ""},
		{"retry bounds", head + "rotation:\n  retry_min: 2m\n  retry_max: 1m\n",
			`agent.yaml:3: rotation.retry_min: is larger than retry_max`, ""},
		{"output name twice", head + "outputs:\n" + out("redis", "/a") + out("redis", "/b"),
			`agent.yaml:7: outputs[1].name: "redis" is also the name of outputs[0]`, ""},
		{"cert without key", head + "outputs:\n  - name: redis\n    dir: /etc/redis/tls\n    cert_file: svid.pem\n",
			`agent.yaml:5: outputs[0].cert_file: needs key_file too: cert_file and key_file go together`, ""},
		{"nothing to write", head + "outputs:\n  - name: redis\n    dir: /etc/redis/tls\n",
			`agent.yaml:3: outputs[0]: no files to write (set cert_file, key_file, bundle_file, combined_file, layout, bundle_dir, pkcs12, jwt or jwt_bundle_file)`, ""},
		{"two actions in one reload entry", head + "outputs:\n" + out("redis", "/etc/redis/tls", "reload:", "  - {exec: {command: [true]}, systemd: {unit: x}}"),
			`agent.yaml:8: outputs[0].reload[0]: sets exec and systemd: one action per list entry`, ""},
		{"traefik file readable by all", head + "outputs:\n" + out("traefik", "/etc/traefik/tls", "bundle_file: bundle.pem", "reload:", "  - traefik: {file: /etc/traefik/dynamic/spiffe.yml, mode: \"0644\"}"),
			`agent.yaml:9: outputs[0].reload[0].traefik.mode: 0644 lets every user read the inline private key; use 0600 or 0640`, ""},
		{"negative limit", head + "proxies:\n" + px("a", "127.0.0.1:1") + "    max_handshakes_per_source: -1\n",
			`agent.yaml:8: proxies[0].max_handshakes_per_source: -1: must not be negative`, ""},
		{"connection lifetime below a second", head + "proxies:\n" + px("a", "127.0.0.1:1") + "    max_conn_lifetime: 100ms\n",
			`agent.yaml:8: proxies[0].max_conn_lifetime: 100ms: must be 0 (no limit) or at least 1s`, ""},
		{"traefik file extension", head + "outputs:\n" + out("traefik", "/etc/traefik/tls", "bundle_file: bundle.pem", "reload:", "  - traefik: {file: /etc/traefik/dynamic/spiffe.toml}"),
			`agent.yaml:9: outputs[0].reload[0].traefik: dynamic file /etc/traefik/dynamic/spiffe.toml must end in .yml or .yaml (Traefik picks the format from the extension)`, ""},
		{"socket path too long", head + "admin:\n  socket: /run/" + strings.Repeat("x", 120) + "/admin.sock\n",
			`agent.yaml:3: admin.socket: "/run/` + strings.Repeat("x", 120) + `/admin.sock" is 136 bytes; a unix socket path holds at most ` + strconv.Itoa(unixsock.MaxPathLen()) + ` here`, ""},
		{"proxy name twice", head + "proxies:\n" + px("a", "127.0.0.1:1") + px("a", "127.0.0.1:2"),
			`agent.yaml:8: proxies[1].name: "a" is also the name of proxies[0]`, ""},
		{"redis transition without state file", head + "redis:\n  transition:\n    admin: {addr: \"unix:///run/redis/redis.sock\"}\n",
			`agent.yaml:3: redis.transition.state_file: is required (the plaintext-idle window must survive restarts)`, ""},
		{"empty file", "",
			`agent.yaml:1: config: the file is empty`, ""},
		{"nothing to do", head + "admin:\n  socket: /run/identity-agent/admin.sock\n",
			`agent.yaml:1: config: no outputs and no proxies: the agent would do nothing, and a reload of this file would stop everything it runs (set allow_empty: true if that is meant)`, ""},
		{"nothing to do, empty lists", head + "outputs: []\nproxies: []\nallow_empty: false\n",
			`agent.yaml:1: config: no outputs and no proxies: the agent would do nothing, and a reload of this file would stop everything it runs (set allow_empty: true if that is meant)`, ""},
		{"unknown field", head + "outputs:\n" + out("redis", "/etc/redis/tls", `cert_mod: "0644"`),
			`agent.yaml:7: outputs[0].cert_mod: unknown field in an output`, ""},
		{"wrong type", head + "proxies:\n  - name: a\n    max_conns: many\n",
			`agent.yaml:4: proxies[0].max_conns: "many" is not a whole number`, ""},
		{"bad duration", head + "rotation:\n  debounce: 10\n",
			`agent.yaml:3: rotation.debounce: "10" is not a duration (use e.g. 30s, 10m, 24h)`, ""},
		{"bad indentation", head + "outputs:\n  - name: redis\n    dir: /etc/redis/tls\n   cert_file: svid.pem\n",
			`agent.yaml:5: outputs[0].cert_file: this line is indented more than the one above, which opens no block`, ""},
	}...)
}

// ownerDocLine is the line docs/CONFIG.md shows for an output directory of
// another user's; only root can make one, so only root checks it.
const ownerDocLine = `agent.yaml:4: outputs[0].dir: "/tmp/shared/tls" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own`

// ownerRules: an output directory another user made (uid 65534, inside a
// sticky 1777 directory as /tmp is) is refused; run as root only.
func ownerRules(t *testing.T) []rule {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	shared := filepath.Join(t.TempDir(), "shared")
	require.NoError(t, os.Mkdir(shared, 0o700))
	require.NoError(t, os.Chmod(shared, 0o777|os.ModeSticky))
	dir := filepath.Join(shared, "tls")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.Chown(dir, 65534, 65534))
	return []rule{{"dir of another user", head + "outputs:\n" + out("redis", dir),
		`agent.yaml:4: outputs[0].dir: "` + dir + `" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own`,
		ownerDocLine}}
}

func resolved(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	require.NoError(t, err)
	return r
}

func TestPlanRules(t *testing.T) {
	for _, r := range rules(t) {
		t.Run(r.name, func(t *testing.T) {
			_, err := agent.Parse("agent.yaml", []byte(r.yaml), noEnv)
			require.Error(t, err)
			lines := strings.Split(err.Error(), "\n")
			assert.Contains(t, lines, r.want)
			var ps config.Problems
			assert.ErrorAs(t, err, &ps, "every problem is a config.Problem")
			for _, l := range lines {
				assert.Regexp(t, `^agent\.yaml:\d+: \S+: \S`, l, "FILE:LINE: field: problem")
			}
		})
	}
}

func TestPlanWorldReadableKeyOnRequest(t *testing.T) {
	y := head + "outputs:\n" + out("redis", "/etc/redis/tls", `key_mode: "0644"`, `cert_mode: "0600"`, "unsafe_world_readable_key: true")
	p, err := agent.Parse("agent.yaml", []byte(y), noEnv)
	require.NoError(t, err)
	require.Error(t, p.Warnings)
	assert.Equal(t, "agent.yaml:7: outputs[0].key_mode: 0644 is wider than cert_mode 0600: the key is readable where the certificate is not", p.Warnings.Error())
}

func TestPlanResolvesOwners(t *testing.T) {
	me, err := user.Current()
	require.NoError(t, err)
	y := head + "outputs:\n" + out("redis", "/etc/redis/tls", "owner: {user: "+me.Username+"}")
	p, err := agent.Parse("agent.yaml", []byte(y), noEnv)
	require.NoError(t, err)
	assert.Equal(t, me.Uid, strconv.Itoa(p.Outputs[0].Owner.UID))
	assert.Nil(t, p.Warnings)
}

var lineRE = regexp.MustCompile("`(agent\\.yaml:\\d+: [^`]+)`")

// Every example error line in docs/CONFIG.md is one a rule above really
// produces (the symlink example, whose paths are temporary, and the
// shortened socket path aside).
func TestConfigDocExamplesAreReal(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "CONFIG.md"))
	require.NoError(t, err)
	produced := map[string]bool{}
	for _, r := range rules(t) {
		_, err := agent.Parse("agent.yaml", []byte(r.yaml), noEnv)
		require.Error(t, err)
		lines := strings.Split(err.Error(), "\n")
		for _, l := range lines {
			produced[l] = true
		}
		if r.doc != "" && slices.Contains(lines, r.want) {
			produced[r.doc] = true
		}
	}
	if os.Geteuid() != 0 {
		t.Log("not root: the line for an output directory of another user is not checked (it needs a chown)")
		produced[ownerDocLine] = true
	}
	warn := head + "outputs:\n" + out("redis", "/etc/redis/tls", `cert_mode: "0600"`, `key_mode: "0640"`)
	p, err := agent.Parse("agent.yaml", []byte(warn), noEnv)
	require.NoError(t, err)
	require.Error(t, p.Warnings)
	produced[p.Warnings.Error()] = true
	typo := head + "outputs:\n" + out("redis", "/etc/redis/tls", "spiffe_id: spiffe://example.org/redis") +
		"proxies:\n  - name: a\n    mode: server\n    listen: 127.0.0.1:6701\n    target: 127.0.0.1:1\n    allow:\n      - spiffe://exmaple.org/traefik\n"
	p, err = agent.Parse("agent.yaml", []byte(typo), noEnv)
	require.NoError(t, err)
	require.Error(t, p.Warnings)
	produced[p.Warnings.Error()] = true
	produced[changingLine(t)] = true
	examples := lineRE.FindAllStringSubmatch(string(doc), -1)
	require.NotEmpty(t, examples)
	for _, m := range examples {
		if strings.Contains(m[1], "/srv/link") || strings.Contains(m[1], "…") {
			continue
		}
		assert.True(t, produced[m[1]], "docs/CONFIG.md shows %q, which no rule produces", m[1])
	}
}
func noEnv(string) string { return "" }

// changingLine is what agent.Load says of agent.yaml while an editor keeps
// rewriting it in place.
func changingLine(t *testing.T) string {
	t.Helper()
	t.Chdir(t.TempDir())
	require.NoError(t, os.WriteFile("agent.yaml", []byte(head), 0o600))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
				assert.NoError(t, os.WriteFile("agent.yaml", []byte(head), 0o600))
			}
		}
	})
	_, err := agent.Load("agent.yaml", noEnv)
	require.Error(t, err)
	return err.Error()
}

// A file with no outputs and no proxies is what it says it is only with
// allow_empty: true.
func TestPlanAllowEmpty(t *testing.T) {
	p, err := agent.Parse("agent.yaml", []byte(head+"allow_empty: true\n"), noEnv)
	require.NoError(t, err)
	assert.Empty(t, p.Outputs)
	assert.Empty(t, p.Proxies)
	_, err = agent.Parse("agent.yaml", []byte(head+"allow_empty: false\nproxies:\n"+px("a", "127.0.0.1:1")), noEnv)
	require.NoError(t, err, "one proxy is something to do")
}

// LoadAs judges the owner rule for the user it is given (`config validate
// --user`), adds the caller's hint to that line only, and leaves the rule
// out for a settings-only read; Load keeps judging for this process.
func TestLoadAsJudgesOwnersForItsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another user (uid 65534)")
	}
	base := t.TempDir()
	dir := filepath.Join(base, "tls")
	require.NoError(t, os.Mkdir(dir, 0o755))
	require.NoError(t, os.Chown(dir, 65534, 65534))
	p := filepath.Join(base, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(head+"outputs:\n"+out("redis", dir)), 0o600))

	_, err := agent.LoadAs(p, noEnv, agent.RunAs{UID: 65534, Name: "nobody"})
	require.NoError(t, err)
	_, err = agent.LoadAs(p, noEnv, agent.RunAs{SettingsOnly: true})
	require.NoError(t, err)

	hinted := 0
	_, err = agent.LoadAs(p, noEnv, agent.RunAs{UID: 0, Hint: func(owner int) string { hinted = owner; return "; HINT" }})
	require.Error(t, err)
	assert.Equal(t, p+`:4: outputs[0].dir: "`+dir+`" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own; HINT`, err.Error())
	assert.Equal(t, 65534, hinted)

	_, err = agent.LoadAs(p, noEnv, agent.RunAs{UID: 1000, Name: "alice"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `is owned by uid 65534, not alice (uid 1000): chown it to alice or`)

	_, err = agent.Load(p, noEnv)
	require.Error(t, err, "Load judges for this process (root)")
}
