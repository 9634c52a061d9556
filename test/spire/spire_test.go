//go:build conformance

package spire

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/internal/fleettest"
)

// EnvSPIREBin names the directory holding spire-server and spire-agent
// (scripts/spire-build.sh prints it; `make test-spire` sets it).
const EnvSPIREBin = "IDENTITY_AGENT_SPIRE_BIN"

// spireBin returns the directory of the SPIRE binaries, or skips the test
// with one line; in CI, or with IDENTITY_AGENT_REQUIRE_SPIRE=1, a request
// that finds no binaries fails instead.
func spireBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(EnvSPIREBin)
	if dir == "" {
		t.Skip("real SPIRE variant not requested: `make test-spire` runs it (" + EnvSPIREBin + " unset)")
	}
	for _, b := range []string{"spire-server", "spire-agent"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			msg := fmt.Sprintf("no SPIRE binaries: %s (%s=%s; scripts/spire-build.sh builds them)", err, EnvSPIREBin, dir)
			if os.Getenv("CI") == "true" || os.Getenv("IDENTITY_AGENT_REQUIRE_SPIRE") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return dir
}

// proc is a SPIRE process in a process group of its own, so that stopping
// it stops whatever it started too.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *fleettest.Buffer
	done chan struct{}
}

func startProc(t testing.TB, name string, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...), logs: &fleettest.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("%s output (last 4 KiB):\n%s", name, tail(p.logs.String(), 4096))
		}
	})
	return p
}

// stop signals the process group and waits (10 s, then SIGKILL).
func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// clusterOpts shapes one SPIRE server and its agent.
type clusterOpts struct {
	trustDomain string
	// caTTL is the server's ca_ttl; zero keeps SPIRE's default (24h).
	caTTL time.Duration
	// restartable keeps keys on disk (KeyManager "disk" for both), so
	// that a restarted server keeps its CA and a restarted agent its
	// SVID; a "memory" agent could not re-attest with its used join token.
	restartable bool
}

// cluster is a SPIRE server and agent on loopback in a temporary directory.
type cluster struct {
	bin, dir   string
	td         spiffeid.TrustDomain
	opts       clusterOpts
	port       int
	serverSock string // the server API
	agentSock  string // the Workload API
	nodeID     spiffeid.ID
	joinToken  string
	uid        int

	mu     sync.Mutex
	server *proc
	agent  *proc
}

// startCluster starts a SPIRE server and agent and waits until both are
// healthy. Everything stops, and the directory goes, when the test ends.
func startCluster(t testing.TB, bin string, opts clusterOpts) *cluster {
	t.Helper()
	if opts.trustDomain == "" {
		opts.trustDomain = "example.org"
	}
	// SPIRE's sockets live in dir: keep the path short (108 bytes).
	dir, err := os.MkdirTemp("", "spire-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c := &cluster{bin: bin, dir: dir, td: spiffeid.RequireTrustDomainFromString(opts.trustDomain), opts: opts,
		port: fleettest.FreePort(t), serverSock: filepath.Join(dir, "server.sock"), agentSock: filepath.Join(dir, "agent.sock"),
		uid: os.Getuid()}
	c.nodeID = spiffeid.RequireFromPath(c.td, "/host")
	c.writeServerConfig(t)
	c.startServer(t)
	out := c.serverCmd(t, "token", "generate", "-spiffeID", c.nodeID.String(), "-ttl", "3600")
	c.joinToken = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "Token:"))
	if c.joinToken == "" || strings.ContainsAny(c.joinToken, " \n") {
		t.Fatalf("spire-server token generate: unexpected output %q", out)
	}
	c.writeAgentConfig(t)
	c.startAgent(t)
	return c
}

func (c *cluster) writeServerConfig(t testing.TB) {
	t.Helper()
	km := `KeyManager "memory" { plugin_data {} }`
	if c.opts.restartable {
		km = fmt.Sprintf(`KeyManager "disk" { plugin_data { keys_path = %q } }`, filepath.Join(c.dir, "server-keys.json"))
	}
	caTTL := ""
	if c.opts.caTTL > 0 {
		caTTL = fmt.Sprintf("ca_ttl = %q", c.opts.caTTL.String())
	}
	cfg := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "DEBUG"
  default_x509_svid_ttl = "1m"
  default_jwt_svid_ttl = "1m"
  # The agent's own SVID: SPIRE's default (1h, the X.509 default's
  # default), not 1m, or a server down for a minute expires it and the
  # SPIRE agent exits ("current SVID has already expired").
  agent_ttl = "1h"
  %s
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  %s
  NodeAttestor "join_token" { plugin_data {} }
}
`, c.port, c.serverSock, c.td.Name(), filepath.Join(c.dir, "server-data"), caTTL,
		filepath.Join(c.dir, "datastore.sqlite3"), km)
	if err := os.WriteFile(filepath.Join(c.dir, "server.conf"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) writeAgentConfig(t testing.TB) {
	t.Helper()
	km := `KeyManager "memory" { plugin_data {} }`
	if c.opts.restartable {
		km = fmt.Sprintf(`KeyManager "disk" { plugin_data { directory = %q } }`, filepath.Join(c.dir, "agent-data"))
	}
	cfg := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "DEBUG"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
}
plugins {
  %s
  NodeAttestor "join_token" { plugin_data {} }
  WorkloadAttestor "unix" { plugin_data {} }
}
`, filepath.Join(c.dir, "agent-data"), c.port, c.agentSock, c.td.Name(), km)
	if err := os.WriteFile(filepath.Join(c.dir, "agent.conf"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) startServer(t testing.TB) {
	t.Helper()
	p := startProc(t, "spire-server "+c.td.Name(), filepath.Join(c.bin, "spire-server"), "run", "-config", filepath.Join(c.dir, "server.conf"))
	c.mu.Lock()
	c.server = p
	c.mu.Unlock()
	c.waitHealthy(t, "spire-server", c.serverSock, p)
}

func (c *cluster) startAgent(t testing.TB) {
	t.Helper()
	argv := []string{filepath.Join(c.bin, "spire-agent"), "run", "-config", filepath.Join(c.dir, "agent.conf")}
	// A restarted agent with its SVID on disk needs no token (and its
	// token is spent).
	if _, err := os.Stat(filepath.Join(c.dir, "agent-data", "agent-data.json")); err != nil {
		argv = append(argv, "-joinToken", c.joinToken)
	}
	p := startProc(t, "spire-agent "+c.td.Name(), argv...)
	c.mu.Lock()
	c.agent = p
	c.mu.Unlock()
	c.waitHealthy(t, "spire-agent", c.agentSock, p)
}

// stopServer and stopAgent end the process (SIGTERM, or SIGKILL when
// kill is set) and wait for it.
func (c *cluster) stopServer(kill bool) { c.server.stop(sigOf(kill)) }
func (c *cluster) stopAgent(kill bool)  { c.agent.stop(sigOf(kill)) }

func sigOf(kill bool) syscall.Signal {
	if kill {
		return syscall.SIGKILL
	}
	return syscall.SIGTERM
}

func (c *cluster) waitHealthy(t testing.TB, name, sock string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited while starting:\n%s", name, tail(p.logs.String(), 4096))
		default:
		}
		out, err := c.run(name, "healthcheck", "-socketPath", sock)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 90s: %v %s\n%s", name, err, out, tail(p.logs.String(), 4096))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// run runs a SPIRE command line (bounded to a minute) and returns its output.
func (c *cluster) run(prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, prog), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// serverCmd runs `spire-server ARGS -socketPath ...`; a failure ends the test.
func (c *cluster) serverCmd(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.run("spire-server", append(args, "-socketPath", c.serverSock)...)
	if err != nil {
		t.Fatalf("spire-server %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// entryArgs are the `spire-server entry create` flags of an entry for the
// uid running the tests, with TTLs in whole seconds.
func (c *cluster) entryArgs(e entry, ttl time.Duration) []string {
	args := []string{"entry", "create", "-parentID", c.nodeID.String(),
		"-spiffeID", spiffeid.RequireFromPath(c.td, e.Path).String(),
		"-selector", "unix:uid:" + strconv.Itoa(c.uid),
		"-x509SVIDTTL", strconv.Itoa(int(ttl.Seconds())),
		"-jwtSVIDTTL", strconv.Itoa(int(ttl.Seconds()))}
	if e.Hint != "" {
		args = append(args, "-hint", e.Hint)
	}
	for _, d := range e.DNS {
		args = append(args, "-dns", d)
	}
	for _, td := range e.FederatesWith {
		args = append(args, "-federatesWith", td.IDString())
	}
	return args
}

// createEntry registers e and returns its entry ID.
func (c *cluster) createEntry(t testing.TB, e entry, ttl time.Duration) string {
	t.Helper()
	out := c.serverCmd(t, append(c.entryArgs(e, ttl), "-output", "json")...)
	var resp struct {
		Results []struct {
			Status struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"status"`
			Entry struct {
				ID string `json:"id"`
			} `json:"entry"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Results) != 1 {
		t.Fatalf("spire-server entry create: unexpected output (%v):\n%s", err, out)
	}
	if r := resp.Results[0]; r.Status.Code != 0 || r.Entry.ID == "" {
		t.Fatalf("spire-server entry create %s: %s", e.Path, out)
	}
	return resp.Results[0].Entry.ID
}

func (c *cluster) deleteEntry(t testing.TB, entryID string) {
	t.Helper()
	c.serverCmd(t, "entry", "delete", "-entryID", entryID)
}

// bundle returns the server's X.509 bundle in SPIFFE (JWKS) format, for
// `bundle set` on a peer.
func (c *cluster) bundle(t testing.TB) string {
	t.Helper()
	return c.serverCmd(t, "bundle", "show", "-format", "spiffe")
}
