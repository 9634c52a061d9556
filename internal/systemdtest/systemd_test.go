//go:build linux && systemd

package systemdtest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/internal/systemdtest"
)

// suite is what TestMain prepared; skip is why nothing can run here.
var suite struct {
	run  *systemdtest.Run
	repo string
	skip string
}

func TestMain(m *testing.M) {
	flag.Parse()
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	suite.skip = systemdtest.Missing()
	if suite.skip != "" {
		os.Exit(m.Run())
	}
	run, err := systemdtest.NewRun(logf)
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	suite.run = run
	var deadline time.Time
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, ok := f.Value.(flag.Getter).Get().(time.Duration); ok && d > 0 {
			deadline = time.Now().Add(d - time.Minute)
		}
	}
	stop := run.Guard(deadline, logf)
	code := func() int {
		defer run.Close()
		defer stop()
		// The agent as the release builds it: static (the container's libc
		// is not the host's), no race detector.
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(run.Share, "identity-agent"), "./cmd/identity-agent")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			logf("go build ./cmd/identity-agent: %v\n%s", err, out)
			return 1
		}
		suite.repo, _ = filepath.Abs(filepath.Join("..", ".."))
		// The Ansible role, as the controller has it.
		if out, err := exec.Command("cp", "-a", filepath.Join(suite.repo, "packaging", "ansible"), filepath.Join(run.Share, "ansible")).CombinedOutput(); err != nil {
			logf("copy packaging/ansible: %v: %s", err, out)
			return 1
		}
		// examples/uvicorn as the operator has it next to the binary.
		if out, err := exec.Command("cp", "-a", filepath.Join(suite.repo, "examples", "uvicorn"), filepath.Join(run.Share, "uvicorn")).CombinedOutput(); err != nil {
			logf("copy examples/uvicorn: %v: %s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// requireSystemd skips with one line where no container can boot, and
// fails instead in CI or with IDENTITY_AGENT_REQUIRE_SYSTEMD=1.
func requireSystemd(t *testing.T) {
	t.Helper()
	if suite.skip == "" {
		return
	}
	ci := os.Getenv("CI")
	if os.Getenv("IDENTITY_AGENT_REQUIRE_SYSTEMD") == "1" || (ci != "" && ci != "false" && ci != "0") {
		t.Fatalf("systemd tests cannot run: %s (required here: CI or IDENTITY_AGENT_REQUIRE_SYSTEMD=1)", suite.skip)
	}
	t.Skipf("systemd tests skipped: %s", suite.skip)
}

// The agent's setup in every machine, as docs/SERVICE.md and
// examples/uvicorn describe it: the binary in /usr/local/bin, the config in
// /etc/identity-agent, `identity-agent install`, a Workload API on SPIRE's
// recommended socket (here the dev one, as a unit ordered before the agent
// like spire-agent.service), and a consumer unit ordered after the agent
// that it restarts through polkit on every rotation.
const (
	agentBin   = "/usr/local/bin/identity-agent"
	agentCfg   = "/etc/identity-agent/config.yaml"
	apiDir     = "/etc/identity-agent/certs/api"
	apiStarts  = "/var/lib/api/starts"
	polkitRule = "/etc/polkit-1/rules.d/50-identity-agent.rules"
)

// agentConfig is examples/uvicorn/agent.yaml with the consumer's reload
// action; admin is the admin socket, extraOutput an additional output.
func agentConfig(action, admin, logLevel, extraOutput string) string {
	reload := ""
	if action != "" {
		reload = fmt.Sprintf("    reload:\n      - systemd: {unit: api.service, action: %s}\n", action)
	}
	return fmt.Sprintf(`workload_api:
  socket: unix:///run/spire/sockets/agent.sock
admin:
  socket: %s
log:
  level: %s
outputs:
  - name: api
    spiffe_id: spiffe://example.org/api
    dir: %s
    owner: {group: api}
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    cert_mode: "0644"
    key_mode: "0640"
    bundle_mode: "0644"
%s%s`, admin, logLevel, apiDir, reload, extraOutput)
}

const defaultAdmin = "/run/identity-agent/admin.sock"

// devAPIUnit serves the development Workload API where SPIRE's agent
// would, as the agent's user (the dev socket is 0600), under the unit name
// the agent's unit is ordered after.
const devAPIUnit = `[Unit]
Description=development Workload API (identity-agent dev), standing in for SPIRE
[Service]
User=identity-agent
RuntimeDirectory=spire/sockets
ExecStart=/mnt/host/identity-agent dev --socket /run/spire/sockets/agent.sock --ttl 1h --spiffe-id spiffe://example.org/api --spiffe-id spiffe://example.org/web
[Install]
WantedBy=multi-user.target
`

// consumerUnit reads the agent's files at start, as uvicorn does (key
// included), and records the certificate it started with.
const consumerUnit = `[Unit]
Description=consumer of identity-agent's files (uvicorn's setup: reads them at start)
Wants=identity-agent.service
After=identity-agent.service
[Service]
User=api
Group=api
StateDirectory=api
ExecStart=/bin/sh -c 'cat /etc/identity-agent/certs/api/key.pem >/dev/null && sha256sum </etc/identity-agent/certs/api/svid.pem >>/var/lib/api/starts && exec sleep infinity'
[Install]
WantedBy=multi-user.target
`

// polkitRules is examples/uvicorn's rule with every verb the tests use.
const polkitRules = `polkit.addRule(function (action, subject) {
  if (action.id == "org.freedesktop.systemd1.manage-units" &&
      subject.user == "identity-agent" &&
      action.lookup("unit") == "api.service" &&
      ["restart", "try-restart", "reload-or-restart"].indexOf(action.lookup("verb")) >= 0) {
    return polkit.Result.YES;
  }
});
`

// TestSystemd runs every scenario on every flavour
// ($IDENTITY_AGENT_SYSTEMD_FLAVOURS narrows them), flavours in parallel.
func TestSystemd(t *testing.T) {
	requireSystemd(t)
	flavours, err := systemdtest.Flavours(os.Getenv("IDENTITY_AGENT_SYSTEMD_FLAVOURS"))
	require.NoError(t, err)
	for _, f := range flavours {
		t.Run(f.Name, func(t *testing.T) {
			t.Parallel()
			rootfs, err := systemdtest.Rootfs(suite.repo, f, t.Logf)
			require.NoError(t, err)
			fl := &flavour{Flavour: f, rootfs: rootfs}
			t.Run("Operations", fl.operations)
			t.Run("StartDeadlock", fl.startDeadlock)
			t.Run("Ansible", fl.ansible)
			t.Run("UvicornExample", fl.uvicornExample)
		})
	}
}

type flavour struct {
	systemdtest.Flavour
	rootfs string
}

func (f *flavour) boot(t *testing.T, what string) *systemdtest.Machine {
	t.Helper()
	short := map[string]string{"bookworm": "bw", "bookworm-backports": "bpo", "trixie": "tx"}[f.Name]
	name := fmt.Sprintf("ia-%s-%s-%d", short, what, os.Getpid()%100000)
	start := time.Now()
	m := suite.run.Boot(t, f.Flavour, f.rootfs, name)
	t.Logf("%s booted in %v", name, time.Since(start).Round(100*time.Millisecond))
	// The systemd this flavour is about, not whatever the mirror served.
	v := strings.TrimSpace(m.MustSh(t, "systemctl show --property=Version --value"))
	major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	require.Equal(t, f.Systemd, major, "%s booted systemd %s", f.Name, v)
	return m
}

// setup installs the agent the documented way (not started) with the
// consumer's reload action and the consumer unit enabled but not started.
func setup(t *testing.T, m *systemdtest.Machine, action string) {
	t.Helper()
	m.MustSh(t, "install -m 0755 /mnt/host/identity-agent "+agentBin+
		" && useradd --system --user-group --no-create-home --shell /usr/sbin/nologin api")
	m.WriteFile(t, agentCfg, agentConfig(action, defaultAdmin, "info", ""), 0o644)
	m.MustSh(t, agentBin+" config validate "+agentCfg+" && "+agentBin+" install --config "+agentCfg)
	m.WriteFile(t, "/etc/systemd/system/spire-agent.service", devAPIUnit, 0o644)
	m.WriteFile(t, "/etc/systemd/system/api.service", consumerUnit, 0o644)
	m.WriteFile(t, polkitRule, polkitRules, 0o644)
	m.MustSh(t, "systemctl daemon-reload && systemctl enable --now spire-agent.service && systemctl enable api.service")
}

// settled waits until no job is queued and the system is running: a
// start that waits on its own reload never gets there.
func settled(t *testing.T, m *systemdtest.Machine, what string) {
	t.Helper()
	deadline := time.Now().Add(100 * time.Second)
	for {
		jobs := m.Run(t, time.Minute, "systemctl", "list-jobs", "--no-legend", "--no-pager")
		state := m.Run(t, time.Minute, "systemctl", "is-system-running")
		s := strings.TrimSpace(state.Stdout)
		if strings.TrimSpace(jobs.Stdout) == "" && s == "running" {
			return
		}
		if s == "degraded" && strings.TrimSpace(jobs.Stdout) == "" {
			t.Fatalf("%s: system degraded:\n%s", what, m.Run(t, time.Minute, "systemctl", "--failed", "--no-pager").Stdout)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not settled after 100s (a start waiting on its own reload deadlocks until the reload's 2 min timeout): system %s, jobs:\n%s",
				what, s, jobs.Stdout)
		}
		time.Sleep(time.Second)
	}
}

// settledWithoutDeadlock is settled, and the agent's journal after cursor
// ("" = this boot) shows no reload that timed out: a start that waited
// on its own reload settles too, once the reload gives up after 2 min.
func settledWithoutDeadlock(t *testing.T, m *systemdtest.Machine, what, cursor string) {
	t.Helper()
	settled(t, m, what)
	j := journalAfter(t, m, cursor)
	for _, l := range strings.Split(j, "\n") {
		if strings.Contains(l, "reload failed") || strings.Contains(l, "first write incomplete") {
			t.Fatalf("%s: the agent's reload of api.service failed (it waited on the agent's own start job):\n%s", what, l)
		}
	}
}

func mainPID(t *testing.T, m *systemdtest.Machine, unit string) string {
	t.Helper()
	return strings.TrimSpace(m.MustSh(t, "systemctl show --property=MainPID --value "+unit))
}

// consumerServesCurrent waits until the consumer's last start read the
// certificate now on disk, and returns how many starts it had.
func consumerServesCurrent(t *testing.T, m *systemdtest.Machine, minStarts int) int {
	t.Helper()
	var n int
	fleettest.WaitFor(t, 2*time.Minute, "api.service started with the current certificate", func() (bool, string) {
		r := m.Sh(t, time.Minute, fmt.Sprintf(`cur=$(sha256sum <%s/svid.pem)
n=$(wc -l <%s); last=$(tail -n1 %s)
[ "$(systemctl is-active api.service)" = active ] || { echo "api.service not active"; exit 1; }
[ "$n" -ge %d ] || { echo "$n starts"; exit 1; }
[ "$last" = "$cur" ] || { echo "last start read another certificate"; exit 1; }
echo $n`, apiDir, apiStarts, apiStarts, minStarts))
		if r.Code == 0 {
			n, _ = strconv.Atoi(strings.TrimSpace(r.Stdout))
		}
		return r.Code == 0, r.Stdout + r.Stderr
	})
	return n
}

// restoreConfig puts the good config back when the test ends and has the
// agent reload it by pid (whatever the unit's reload does), so that a
// failed check leaves the next one a healthy agent.
func restoreConfig(t *testing.T, m *systemdtest.Machine, good string) {
	t.Cleanup(func() {
		m.WriteFile(t, agentCfg, good, 0o644)
		r := m.Sh(t, 2*time.Minute, agentBin+" reload --config "+agentCfg+" --pid $(systemctl show -P MainPID identity-agent)")
		if r.Code != 0 {
			t.Errorf("restoring the good config: %s", r)
		}
		code, _, plain := status(t, m)
		assert.Equal(t, 0, code, "status after restoring the good config: %s", plain)
	})
}

// eventually polls cond every 500ms until it holds (true) or timeout passes.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type statusReport struct {
	Config struct {
		Hash             string `json:"hash"`
		LastFailedReload *struct {
			Error string `json:"error"`
		} `json:"last_failed_reload"`
	} `json:"config"`
}

func status(t *testing.T, m *systemdtest.Machine, args ...string) (int, statusReport, string) {
	t.Helper()
	r := m.Run(t, time.Minute, append([]string{agentBin, "status", "--json"}, args...)...)
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &rep), "status --json: %s", r)
	plain := m.Run(t, time.Minute, append([]string{agentBin, "status"}, args...)...)
	return r.Code, rep, plain.Stdout + plain.Stderr
}

func fileHash(t *testing.T, m *systemdtest.Machine, path string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(m.ReadFile(t, path)))
	return hex.EncodeToString(sum[:])
}

// journalCursor is where the agent's journal ends now.
func journalCursor(t *testing.T, m *systemdtest.Machine) string {
	t.Helper()
	out := m.MustSh(t, "journalctl -u identity-agent -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'")
	return strings.TrimSpace(out)
}

// journalAfter returns the agent's journal after cursor ("" = this boot).
func journalAfter(t *testing.T, m *systemdtest.Machine, cursor string) string {
	t.Helper()
	args := []string{"journalctl", "-u", "identity-agent", "--no-pager", "-o", "cat"}
	if cursor != "" {
		args = append(args, "--after-cursor", cursor)
	} else {
		args = append(args, "-b")
	}
	return m.Run(t, time.Minute, args...).Stdout
}

// operations: the agent under the real systemd, on a machine whose
// consumer is reloaded with try-restart (which never waits on the agent's
// start job, so these checks do not depend on the start-deadlock fix).
func (f *flavour) operations(t *testing.T) {
	m := f.boot(t, "ops")
	setup(t, m, "try-restart")
	m.MustSh(t, "systemctl start identity-agent.service && systemctl start api.service")
	settled(t, m, "start")
	consumerServesCurrent(t, m, 1)

	t.Run("UnitReloadHasAVerdict", func(t *testing.T) {
		// Bug 2: the notify-reload protocol cannot say "refused"; the
		// job's verdict must come from ExecReload='s exit status, and a
		// notify-reload unit must not have the agent reload twice.
		unit := m.ReadFile(t, "/etc/systemd/system/identity-agent.service")
		assert.Contains(t, unit, "\nExecReload="+agentBin+" reload ", "systemd %d", f.Systemd)
		if strings.Contains(unit, "Type=notify-reload") {
			assert.Contains(t, unit, "\nReloadSignal=", "systemd %d", f.Systemd)
		}
	})
	t.Run("Status", func(t *testing.T) {
		code, rep, plain := status(t, m)
		assert.Equal(t, 0, code, plain)
		assert.Contains(t, plain, "OK")
		assert.Equal(t, fileHash(t, m, agentCfg), rep.Config.Hash)
		r := m.Run(t, time.Minute, agentBin, "service", "status")
		assert.Equal(t, 0, r.Code, r.String())
		assert.Contains(t, r.Stdout, "running")
	})
	t.Run("Journal", func(t *testing.T) {
		j := journalAfter(t, m, "")
		assert.Contains(t, j, "files written")
		assert.Regexp(t, `Started identity-agent|Started .*SPIFFE workload identity agent`,
			m.Run(t, time.Minute, "journalctl", "-u", "identity-agent", "--no-pager").Stdout)
	})
	t.Run("SecurityScore", func(t *testing.T) {
		r := m.Run(t, 2*time.Minute, "systemd-analyze", "security", "--no-pager", "identity-agent.service")
		g := regexp.MustCompile(`Overall exposure level for identity-agent\.service: (\d+\.\d+)`).FindStringSubmatch(r.Stdout)
		require.NotNil(t, g, r.String())
		score, _ := strconv.ParseFloat(g[1], 64)
		t.Logf("systemd %d: exposure %.1f", f.Systemd, score)
		assert.LessOrEqual(t, score, 2.0, "systemd-analyze security identity-agent.service:\n%s", r.Stdout)
	})
	t.Run("RotationRestartsConsumerThroughPolkit", func(t *testing.T) {
		// The agent runs as identity-agent: systemd asks polkit whether it
		// may restart api.service, and the rule says yes.
		assert.Equal(t, "identity-agent", strings.TrimSpace(m.MustSh(t, "stat -c %U /proc/$(systemctl show -P MainPID identity-agent)")))
		before := consumerServesCurrent(t, m, 1)
		old := fileHash(t, m, apiDir+"/svid.pem")
		m.MustSh(t, "kill -USR1 $(systemctl show -P MainPID spire-agent.service)")
		fleettest.WaitFor(t, 2*time.Minute, "the rotated certificate on disk", func() (bool, string) {
			return fileHash(t, m, apiDir+"/svid.pem") != old, "svid.pem unchanged"
		})
		consumerServesCurrent(t, m, before+1)
		settled(t, m, "after the rotation")
	})
	t.Run("ReloadValidEdit", func(t *testing.T) {
		pid := mainPID(t, m, "identity-agent")
		m.WriteFile(t, agentCfg, agentConfig("try-restart", defaultAdmin, "debug", ""), 0o644)
		r := m.Run(t, 2*time.Minute, "systemctl", "reload", "identity-agent")
		require.Equal(t, 0, r.Code, "systemctl reload: %s", r)
		code, rep, plain := status(t, m)
		assert.Equal(t, 0, code, plain)
		assert.Equal(t, fileHash(t, m, agentCfg), rep.Config.Hash, "the edited file is the one in force")
		assert.Equal(t, pid, mainPID(t, m, "identity-agent"), "reloaded, not restarted")
	})
	t.Run("ReloadInvalidEditFailsTheJob", func(t *testing.T) {
		// Bug 2: on systemd >= 253 (Type=notify-reload) the job said OK.
		pid := mainPID(t, m, "identity-agent")
		good := m.ReadFile(t, agentCfg)
		goodHash := fileHash(t, m, agentCfg)
		restoreConfig(t, m, good)
		m.WriteFile(t, agentCfg, strings.Replace(good, `key_mode: "0640"`, `key_mode: "0666"`, 1), 0o644)
		r := m.Run(t, 2*time.Minute, "systemctl", "reload", "identity-agent")
		assert.NotEqual(t, 0, r.Code, "systemctl reload of a refused file must fail the job (systemd %d): %s", f.Systemd, r)
		assert.Equal(t, "active", strings.TrimSpace(m.Run(t, time.Minute, "systemctl", "is-active", "identity-agent").Stdout))
		assert.Equal(t, pid, mainPID(t, m, "identity-agent"), "the agent keeps running")
		code, rep, plain := status(t, m)
		assert.Equal(t, 1, code, plain)
		assert.Contains(t, plain, "WARNING")
		assert.Equal(t, goodHash, rep.Config.Hash, "the previous file stays in force")
	})
	t.Run("ReloadAdminSocketEdit", func(t *testing.T) {
		// Bug 3: the reload dialled the socket named in the edited file.
		restoreConfig(t, m, m.ReadFile(t, agentCfg))
		cursor := journalCursor(t, m)
		m.WriteFile(t, agentCfg, agentConfig("try-restart", "/run/identity-agent/other.sock", "debug", ""), 0o644)
		r := m.Run(t, 2*time.Minute, "systemctl", "reload", "identity-agent")
		assert.NotEqual(t, 0, r.Code, "systemctl reload of an admin.socket edit must fail: %s", r)
		assert.True(t, eventually(30*time.Second, func() bool {
			return strings.Contains(journalAfter(t, m, cursor), "admin.socket: cannot change while the agent runs")
		}), "the operator finds the refusal in the journal:\n%s", journalAfter(t, m, cursor))
		// The operator's own command reaches the running agent and says why.
		r = m.Run(t, 2*time.Minute, agentBin, "reload", "--config", agentCfg)
		assert.Equal(t, 2, r.Code, "identity-agent reload --config: %s", r)
		assert.Contains(t, r.Stdout+r.Stderr, "admin.socket: cannot change while the agent runs")
		code, _, plain := status(t, m, "--config", agentCfg)
		assert.Equal(t, 1, code, "status --config reaches the running agent: %s", plain)
	})
	t.Run("ReloadOtherFileRefused", func(t *testing.T) {
		// Bug 3, as a new user tried it: a file that is not the agent's.
		m.WriteFile(t, "/root/other.yaml", agentConfig("try-restart", defaultAdmin, "warn", ""), 0o644)
		r := m.Run(t, 2*time.Minute, agentBin, "reload", "--config", "/root/other.yaml")
		assert.NotEqual(t, 0, r.Code, "reload --config of a file the agent does not run: %s", r)
		assert.NotContains(t, r.Stdout, "nothing changed")
	})
}

// startDeadlock is bug 1: a consumer ordered After=identity-agent.service
// and reloaded with restart or reload-or-restart must not hold up the
// agent's start (first start, systemctl restart with a rotation pending,
// boot with a rotation pending).
func (f *flavour) startDeadlock(t *testing.T) {
	for _, action := range []string{"restart", "reload-or-restart"} {
		t.Run(action, func(t *testing.T) {
			m := f.boot(t, map[string]string{"restart": "rst", "reload-or-restart": "rlr"}[action])
			setup(t, m, action)
			// The consumer is enabled, not started: its start at boot
			// waits for the agent.
			m.MustSh(t, "systemctl start --no-block identity-agent.service")
			settledWithoutDeadlock(t, m, "first start", "")
			m.MustSh(t, "systemctl start api.service")
			n := consumerServesCurrent(t, m, 1)

			// rotate has the dev Workload API issue new SVIDs now and waits
			// until the agent wrote them and restarted the consumer.
			rotate := func() {
				t.Helper()
				old := fileHash(t, m, apiDir+"/svid.pem")
				m.MustSh(t, "kill -USR1 $(systemctl show -P MainPID spire-agent.service)")
				fleettest.WaitFor(t, 2*time.Minute, "the rotated certificate on disk", func() (bool, string) {
					return fileHash(t, m, apiDir+"/svid.pem") != old, "unchanged"
				})
				n = consumerServesCurrent(t, m, n+1)
				settled(t, m, "rotation")
			}
			t.Run("StartWithRotationPending", func(t *testing.T) {
				// The files on disk are older than what the Workload API
				// serves: the agent writes and restarts the consumer at start.
				m.MustSh(t, "cp "+apiDir+"/svid.pem /root/old-svid.pem")
				rotate()
				m.MustSh(t, "systemctl stop identity-agent.service && cp /root/old-svid.pem "+apiDir+"/svid.pem")
				cursor := journalCursor(t, m)
				m.MustSh(t, "systemctl start --no-block identity-agent.service")
				settledWithoutDeadlock(t, m, "start with a rotation pending", cursor)
				n = consumerServesCurrent(t, m, n+1)
			})
			t.Run("SystemctlRestartWithRotationPending", func(t *testing.T) {
				m.MustSh(t, "cp "+apiDir+"/svid.pem /root/old-svid.pem")
				rotate()
				// The disk stale again, then `systemctl restart
				// identity-agent` (stopped first: the running agent's guard
				// would restore the file at once).
				m.MustSh(t, "systemctl stop identity-agent.service && cp /root/old-svid.pem "+apiDir+"/svid.pem")
				cursor := journalCursor(t, m)
				m.MustSh(t, "systemctl restart --no-block identity-agent.service")
				settledWithoutDeadlock(t, m, "systemctl restart identity-agent with a rotation pending", cursor)
				n = consumerServesCurrent(t, m, n+1)
			})
			t.Run("BootWithRotationPending", func(t *testing.T) {
				// A new boot: the dev Workload API has a new CA, so the
				// files on disk are stale and the agent's first write at
				// boot restarts the consumer, which waits for the agent.
				old := fileHash(t, m, apiDir+"/svid.pem")
				m.Reboot(t)
				settledWithoutDeadlock(t, m, "boot with a rotation pending", "")
				assert.NotEqual(t, old, fileHash(t, m, apiDir+"/svid.pem"), "new files at boot")
				consumerServesCurrent(t, m, 1)
			})
		})
	}
}

var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)`)

type recap struct{ ok, changed, failed int }

// ansible applies packaging/ansible's site.yml inside the machine with
// connection: local and service management on, as on a real host.
func (f *flavour) ansible(t *testing.T) {
	m := f.boot(t, "ans")
	// The role's `install` would create the agent's user; the Workload API
	// stand-in must run as it before the role's `start` waits for READY=1.
	m.MustSh(t, "useradd --system --user-group --no-create-home --home-dir /var/lib/identity-agent --shell /usr/sbin/nologin identity-agent"+
		" && useradd --system --user-group --no-create-home --shell /usr/sbin/nologin api")
	m.WriteFile(t, "/etc/systemd/system/spire-agent.service", devAPIUnit, 0o644)
	m.MustSh(t, "systemctl daemon-reload && systemctl enable --now spire-agent.service")
	output := func(name string) map[string]any {
		return map[string]any{"name": name, "spiffe_id": "spiffe://example.org/" + name, "dir": "/etc/identity-agent/certs/" + name,
			"owner": map[string]any{"group": "api"}, "cert_file": "svid.pem", "key_file": "key.pem", "bundle_file": "bundle.pem",
			"key_mode": "0640"}
	}
	inv := map[string]any{"all": map[string]any{"children": map[string]any{"identity_agent": map[string]any{
		"hosts": map[string]any{"c1": map[string]any{}},
		"vars": map[string]any{
			"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": false,
			"identity_agent_binary_src":          "/mnt/host/identity-agent",
			"identity_agent_workload_api_socket": "unix:///run/spire/sockets/agent.sock",
			"identity_agent_outputs":             []any{output("api")},
		},
	}}}}
	b, err := json.Marshal(inv)
	require.NoError(t, err)
	m.WriteFile(t, "/root/inventory.json", string(b), 0o600)

	play := func(what string, extra map[string]any) (fleettest.Result, recap) {
		t.Helper()
		b, err := json.Marshal(extra)
		require.NoError(t, err)
		m.WriteFile(t, "/root/extra.json", string(b), 0o600)
		start := time.Now()
		r := m.Sh(t, 10*time.Minute, "cd /mnt/host/ansible && ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 "+
			"ansible-playbook -i /root/inventory.json site.yml -e @/root/extra.json")
		t.Logf("ansible-playbook (%s): %v", what, time.Since(start).Round(100*time.Millisecond))
		g := recapLine.FindStringSubmatch(r.Stdout)
		require.NotNil(t, g, "%s: no PLAY RECAP:\n%s", what, r)
		var rc recap
		rc.ok, _ = strconv.Atoi(g[2])
		rc.changed, _ = strconv.Atoi(g[3])
		rc.failed, _ = strconv.Atoi(g[4])
		return r, rc
	}
	debug := map[string]any{"identity_agent_log": map[string]any{"level": "debug"}}

	r, rc := play("install", map[string]any{})
	require.Equal(t, 0, rc.failed, r.String())
	require.Positive(t, rc.changed, r.String())
	code, _, plain := status(t, m)
	require.Equal(t, 0, code, plain)

	r, rc = play("second run", map[string]any{})
	assert.Equal(t, recap{rc.ok, 0, 0}, rc, "a second run changes nothing:\n%s", r.Stdout)

	pid := mainPID(t, m, "identity-agent")
	r, rc = play("config change", debug)
	require.Equal(t, 0, rc.failed, r.String())
	assert.Contains(t, r.Stdout, "RUNNING HANDLER [identity_agent : Reload identity-agent]")
	assert.NotContains(t, r.Stdout, "RUNNING HANDLER [identity_agent : Restart identity-agent]")
	assert.Equal(t, pid, mainPID(t, m, "identity-agent"), "reloaded, not restarted")
	_, rep, _ := status(t, m)
	assert.Equal(t, fileHash(t, m, agentCfg), rep.Config.Hash, "the new file is in force")

	t.Run("RefusedReloadFailsTheHostEveryRun", func(t *testing.T) {
		// Bug 4: the refused file stayed on disk and the next run said
		// changed=0 failed=0 while the agent ran the old config.
		refused := map[string]any{"identity_agent_log": map[string]any{"level": "debug"},
			"identity_agent_workload_api_socket": "unix:///run/spire/sockets/other.sock"}
		r, rc := play("refused reload", refused)
		assert.Equal(t, 1, rc.failed, "a refused reload fails the host:\n%s", r.Stdout)
		code, _, plain := status(t, m)
		assert.Equal(t, 1, code, plain)
		r, rc = play("refused reload, again", refused)
		assert.Equal(t, 1, rc.failed, "the agent still runs the old config: the re-run must fail too:\n%s", r.Stdout)
		r, rc = play("back to the running config", debug)
		require.Equal(t, 0, rc.failed, r.String())
		code, rep, plain := status(t, m)
		assert.Equal(t, 0, code, plain)
		assert.Equal(t, fileHash(t, m, agentCfg), rep.Config.Hash)
	})
	t.Run("NewOutputDirReinstallsAndRestarts", func(t *testing.T) {
		pid := mainPID(t, m, "identity-agent")
		extra := map[string]any{"identity_agent_log": map[string]any{"level": "debug"},
			"identity_agent_outputs": []any{output("api"), output("web")}}
		r, rc := play("new output dir", extra)
		require.Equal(t, 0, rc.failed, r.String())
		assert.Contains(t, r.Stdout, "RUNNING HANDLER [identity_agent : Restart identity-agent]")
		assert.Contains(t, m.ReadFile(t, "/etc/systemd/system/identity-agent.service"), "ReadWritePaths=/etc/identity-agent/certs/web\n")
		assert.NotEqual(t, pid, mainPID(t, m, "identity-agent"), "restarted")
		m.MustSh(t, "test -s /etc/identity-agent/certs/web/svid.pem")
		code, rep, plain := status(t, m)
		assert.Equal(t, 0, code, plain)
		assert.Equal(t, fileHash(t, m, agentCfg), rep.Config.Hash)
		settled(t, m, "after the role")
	})
}

// uvicornExample installs examples/uvicorn's files as its README tells the
// operator (agent.yaml, api.service, the polkit rule, app.py in /srv/api,
// user api) and checks the real uvicorn under the real systemd: the first
// start, a rotation (the agent restarts api.service through polkit), and a
// boot with a rotation pending, where api.service (Wants=/After= the agent)
// waits for the agent's start while the agent's first write calls for
// restarting it (bug 1's deadlock, with the example's own unit).
//
// Nothing of the example is adapted: its Workload API socket is where the
// dev Workload API unit serves, and --host 0.0.0.0 binds only loopback in
// the container's private network. What stands in for the operator's host:
// the dev Workload API for SPIRE, and the client: the API's own SVID (the
// only one in the machine) presented to uvicorn's --ssl-cert-reqs 2.
func (f *flavour) uvicornExample(t *testing.T) {
	m := f.boot(t, "uvi")
	const ex = "/mnt/host/uvicorn"
	// The host the README assumes: the app in /srv/api, user and group api,
	// and a Workload API on SPIRE's socket (started once the agent's
	// install created the user it runs as).
	m.MustSh(t, "useradd --system --user-group --no-create-home --shell /usr/sbin/nologin api"+
		" && install -d -m 0755 /srv/api && install -m 0644 "+ex+"/app.py /srv/api/app.py")
	// The README's steps 1 and 2, sudo dropped (the test runs as root).
	m.MustSh(t, "cd "+ex+
		" && install -m 0755 /mnt/host/identity-agent /usr/local/bin/identity-agent"+
		" && install -d -m 0755 /etc/identity-agent"+
		" && install -m 0644 agent.yaml /etc/identity-agent/config.yaml"+
		" && identity-agent config validate /etc/identity-agent/config.yaml"+
		" && identity-agent install --config /etc/identity-agent/config.yaml"+
		" && install -m 0644 50-identity-agent.rules /etc/polkit-1/rules.d/")
	m.WriteFile(t, "/etc/systemd/system/spire-agent.service", devAPIUnit, 0o644)
	m.MustSh(t, "systemctl daemon-reload && systemctl enable --now spire-agent.service")
	m.MustSh(t, "identity-agent start && identity-agent status")
	m.MustSh(t, "cd "+ex+" && install -m 0644 api.service /etc/systemd/system/api.service"+
		" && systemctl daemon-reload && systemctl enable --now api.service")
	settledWithoutDeadlock(t, m, "first start", "")
	first := uvicornServesCurrent(t, m, "first start")
	t.Logf("systemd %d: uvicorn serves serial %s", f.Systemd, first)
	// --ssl-cert-reqs 2: without a client certificate, no answer.
	r := m.Sh(t, time.Minute, `printf 'GET / HTTP/1.0\r\n\r\n' | timeout 20 openssl s_client -connect 127.0.0.1:8443 `+
		`-CAfile `+apiDir+`/bundle.pem -ign_eof 2>&1 || true`)
	assert.Contains(t, r.Stdout, "CONNECTED", "s_client without a certificate reached uvicorn")
	assert.NotContains(t, r.Stdout, "ok caller=", "uvicorn answered a client without a certificate")

	// rotate has the dev Workload API issue new SVIDs and waits until the
	// agent restarted uvicorn (a new main process) on the new certificate.
	rotate := func(what, before string) string {
		t.Helper()
		pid := mainPID(t, m, "api.service")
		m.MustSh(t, "kill -USR1 $(systemctl show -P MainPID spire-agent.service)")
		var now string
		fleettest.WaitFor(t, 2*time.Minute, what+": uvicorn serves the rotated certificate", func() (bool, string) {
			now = uvicornServesCurrent(t, m, what)
			return now != before, "still serial " + now
		})
		assert.NotEqual(t, pid, mainPID(t, m, "api.service"), "%s: api.service restarted", what)
		settled(t, m, what)
		return now
	}
	rotated := rotate("rotation", first)
	t.Logf("systemd %d: rotation: served serial %s -> %s", f.Systemd, first, rotated)

	t.Run("BootWithRotationPending", func(t *testing.T) {
		// The dev Workload API has a new CA after the boot: the files on
		// disk are stale, the agent's first write calls for restarting
		// api.service, whose start job waits for the agent.
		m.Reboot(t)
		settledWithoutDeadlock(t, m, "boot with a rotation pending", "")
		// Which of the two the first write's restart did is a race with
		// systemd starting api.service once the agent's start job is done
		// (README, "At boot"); neither may wait on the agent's start.
		j := journalAfter(t, m, "")
		switch {
		case strings.Contains(j, "reload skipped at start"):
			t.Logf("systemd %d: at boot the agent skipped restarting api.service (its start job had not run yet)", f.Systemd)
		case strings.Contains(j, `"msg":"reloaded"`):
			t.Logf("systemd %d: at boot the agent restarted api.service (already started after the agent's READY=1)", f.Systemd)
		default:
			t.Errorf("at boot the agent neither restarted api.service nor skipped it:\n%s", j)
		}
		booted := uvicornServesCurrent(t, m, "boot")
		assert.NotEqual(t, rotated, booted, "uvicorn serves the certificate written at boot")
		after := rotate("rotation after the boot", booted)
		t.Logf("systemd %d: boot: served serial %s -> %s, rotation -> %s", f.Systemd, rotated, booted, after)
	})
}

// uvicornServesCurrent waits until uvicorn answers app.py's line over TLS
// on loopback, presenting the certificate now in the agent's svid.pem, and
// returns its serial.
func uvicornServesCurrent(t *testing.T, m *systemdtest.Machine, what string) string {
	t.Helper()
	var serial string
	fleettest.WaitFor(t, 2*time.Minute, what+": uvicorn serves the agent's current SVID", func() (bool, string) {
		r := m.Sh(t, time.Minute, `D=`+apiDir+`
[ "$(systemctl is-active api.service)" = active ] || { echo "api.service not active"; exit 1; }
out=$(printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' | timeout 20 openssl s_client -connect 127.0.0.1:8443 \
  -cert $D/svid.pem -key $D/key.pem -CAfile $D/bundle.pem -verify_return_error -ign_eof 2>&1) || { echo "$out" | tail -n 5; exit 1; }
printf '%s\n' "$out" | grep -q '^ok caller=-' || { echo "no answer from app.py:"; echo "$out" | tail -n 5; exit 1; }
served=$(printf '%s\n' "$out" | openssl x509 -noout -serial)
disk=$(openssl x509 -noout -serial -in $D/svid.pem)
[ "$served" = "$disk" ] || { echo "uvicorn serves $served, svid.pem is $disk"; exit 1; }
echo "${served#serial=}"`)
		if r.Code == 0 {
			serial = strings.TrimSpace(r.Stdout)
		}
		return r.Code == 0, r.Stdout + r.Stderr
	})
	return serial
}
