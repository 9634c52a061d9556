//go:build conformance

package spire

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// spireOnly are the scenarios the dev API cannot play, each on a cluster
// of its own where it stops processes or needs its own settings:
//
//   - agent-restart, server-down: the dev API is one process; there is no
//     SPIRE agent to kill apart from a server to stop (svidtest's
//     Stop/Start, the agent restart, is covered by pkg/svid's reconnect
//     tests and cmd/identity-agent's);
//   - federation: needs a second server whose bundle is exchanged; the dev
//     API's federated bundles come from in-process CAs;
//   - ca-rotation: SPIRE's CA manager on its own schedule (ca_ttl); the
//     dev API's RotateCA is exercised by pkg/svid/svidtest and the proxy
//     tests;
//   - registration-example: runs spire-server's CLI.
var spireOnly = []struct {
	name string
	run  func(t *testing.T, bin string, shared *cluster)
}{
	{"agent-restart", scenarioAgentRestart},
	{"server-down", scenarioServerDown},
	{"registration-example", scenarioRegistrationExample},
	{"federation", scenarioFederation},
	{"ca-rotation", scenarioCARotation},
}

// scenarioAgentRestart: the SPIRE agent is killed (SIGKILL) under a running
// identity-agent: the files stay, status is WARNING (the Workload API is
// unreachable; exit 1); the SPIRE agent restarts (its SVID kept on disk)
// and the agent reconnects by itself: OK (exit 0), and the next rotation
// is written.
func scenarioAgentRestart(t *testing.T, bin string, _ *cluster) {
	c := startCluster(t, bin, clusterOpts{restartable: true})
	api := newSPIREAPI(t, c)
	id := api.AddEntry(t, entry{Path: "/restart", Hint: "restart"})
	a := writeAgentConfig(t, api, `  - name: svc
    hint: restart
    dir: $DIR/out
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
`, "")
	a.start(t)
	out := filepath.Join(a.dir, "out")
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))
	before := a.status(t).Outputs[0].Serial

	c.stopAgent(true)
	st := a.waitStatus(t, 1, 30*time.Second)
	t.Logf("SPIRE agent killed: exit %d %v", st.code, st.Reasons)
	if !anyContains(st.Reasons, "Workload API") {
		t.Fatalf("WARNING does not name the Workload API: %v", st.Reasons)
	}
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))

	c.startAgent(t)
	st = a.waitStatus(t, 0, 60*time.Second)
	t.Logf("SPIRE agent restarted: exit %d", st.code)
	// The next rotation still arrives (on the restarted agent's stream).
	fleettest.WaitFor(t, spireTTL+30*time.Second, "a rotation after the restart", func() (bool, string) {
		s := a.status(t)
		return len(s.Outputs) == 1 && s.Outputs[0].Serial != "" && s.Outputs[0].Serial != before, s.raw
	})
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))
	a.waitStatus(t, 0, 30*time.Second)
}

// scenarioServerDown: the SPIRE server is down for longer than an SVID's
// lifetime. The SPIRE agent keeps serving what it has and cannot renew:
// status stays OK until the SVID's rotation is overdue (less than a third
// of its lifetime left: WARNING, exit 1), then CRITICAL (exit 2) once it
// has expired; the files are kept throughout. The server comes back (its
// CA kept on disk) and the SPIRE agent renews: OK again, no restart.
func scenarioServerDown(t *testing.T, bin string, _ *cluster) {
	c := startCluster(t, bin, clusterOpts{restartable: true})
	api := newSPIREAPI(t, c)
	id := api.AddEntry(t, entry{Path: "/server-down", Hint: "server-down"})
	a := writeAgentConfig(t, api, `  - name: svc
    hint: server-down
    dir: $DIR/out
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
`, "")
	a.start(t)
	out := filepath.Join(a.dir, "out")
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))

	c.stopServer(false)
	down := time.Now()
	st := a.status(t)
	t.Logf("server down: exit %d %v", st.code, st.Reasons)
	// The last SVID the SPIRE agent got before the server went.
	st = a.waitStatus(t, 1, spireTTL+30*time.Second)
	t.Logf("server down %v: exit %d %v", time.Since(down).Round(time.Second), st.code, st.Reasons)
	st = a.waitStatus(t, 2, spireTTL+30*time.Second)
	t.Logf("server down %v: exit %d %v", time.Since(down).Round(time.Second), st.code, st.Reasons)
	expired := svidFilesExpired(t, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"))
	if time.Now().Before(expired.NotAfter) {
		t.Fatalf("CRITICAL before the files expired (%v)", expired.NotAfter)
	}
	if since := time.Since(down); since < spireTTL/2 {
		t.Fatalf("CRITICAL only %v after the server went down", since)
	}

	c.startServer(t)
	st = a.waitStatus(t, 0, 90*time.Second)
	t.Logf("server back after %v down: exit %d", time.Since(down).Round(time.Second), st.code)
	svidFiles(t, id, filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem"))
}

// scenarioRegistrationExample: examples/spire/register.sh, run as shipped
// against the real server (only the server's socket, the parent ID, the
// uid and the TTL given in its environment), registers what
// examples/spire/agent.yaml needs: `fetch` with that config (socket and
// directories moved into a temporary directory) writes each service's
// SVID into its own output. SPIRE-only: it runs spire-server's CLI.
func scenarioRegistrationExample(t *testing.T, bin string, c *cluster) {
	root := fleettest.RepoRoot(t)
	r := fleettest.Run(t, 2*time.Minute, root, []string{
		"SPIRE_SERVER=" + filepath.Join(bin, "spire-server"),
		"SOCKET_PATH=" + c.serverSock,
		"TRUST_DOMAIN=" + c.td.Name(),
		"NODE_ID=" + c.nodeID.String(),
		"IA_UID=" + strconv.Itoa(os.Getuid()),
		"X509_TTL=60",
	}, "sh", "examples/spire/register.sh")
	if r.Code != 0 {
		t.Fatalf("examples/spire/register.sh: %s", r)
	}
	api := &spireAPI{c: c}
	ids := map[string]spiffeid.ID{}
	for _, svc := range []string{"redis", "uvicorn", "traefik"} {
		ids[svc] = spiffeid.RequireFromPath(c.td, "/"+svc)
		waitServed(t, api, ids[svc], true)
	}
	shipped, err := os.ReadFile(filepath.Join(root, "examples", "spire", "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := svidtest.ShortDir(t, "ia-reg-")
	cfg := strings.NewReplacer(
		"unix:///run/spire/sockets/agent.sock", "unix://"+c.agentSock,
		"/run/identity-agent/admin.sock", filepath.Join(dir, "admin.sock"),
		"/etc/identity-agent/certs", filepath.Join(dir, "certs"),
	).Replace(string(shipped))
	cfgPath := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := fleettest.Run(t, time.Minute, dir, nil, agentBin, "fetch", "--config", cfgPath); r.Code != 0 {
		t.Fatalf("fetch with examples/spire/agent.yaml: %s", r)
	}
	for svc, id := range ids {
		d := filepath.Join(dir, "certs", svc)
		svidFiles(t, id, filepath.Join(d, "svid.pem"), filepath.Join(d, "key.pem"), filepath.Join(d, "bundle.pem"))
	}
}
