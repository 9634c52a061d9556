package main_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// agentBin is built once per test run from this package's source.
var agentBin string

func TestMain(m *testing.M) {
	if spec := os.Getenv(floodHelperEnv); spec != "" {
		os.Exit(runFloodHelper(spec))
	}
	dir, err := os.MkdirTemp("", "ia-cli-")
	if err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "identity-agent")
	build := exec.Command("go", "build", "-race", "-o", agentBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		panic(fmt.Sprintf("build identity-agent: %v", err))
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, out.String(), errb.String()}
}

var td = spiffeid.RequireTrustDomainFromString("example.org")

// startDevAPI serves the development Workload API and returns it with the
// path of its socket.
func startDevAPI(t *testing.T, ttl time.Duration) (*svidtest.Server, string) {
	t.Helper()
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: ttl,
		Identities: []svidtest.Identity{{ID: spiffeid.RequireFromString("spiffe://example.org/svc")}}})
	return srv, srv.SocketPath()
}

// writeConfig writes an agent config; window "" leaves
// rotation.expiry_window unset (the default rule).
func writeConfig(t *testing.T, dir, apiSock, window string) string {
	t.Helper()
	cfg := fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
log: {level: debug}
rotation:
  expiry_window: %[3]s
  retry_min: 100ms
  retry_max: 1s
outputs:
  - name: svc
    dir: %[2]s/out
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
`, apiSock, dir, window)
	if window == "" {
		cfg = strings.Replace(cfg, "  expiry_window: \n", "", 1)
	}
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte(cfg), 0o600))
	return p
}

// startAgent runs `identity-agent run` as a real process and stops it with SIGTERM.
func startAgent(t *testing.T, cfgPath string) *syncBuffer {
	t.Helper()
	_, logs := startAgentProcess(t, cfgPath)
	return logs
}

// startAgentProcess is startAgent for tests that signal the agent.
func startAgentProcess(t *testing.T, cfgPath string) (*os.Process, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(agentBin, "run", "--config", cfgPath)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			assert.NoError(t, err, "agent must exit 0 on SIGTERM; logs:\n%s", logs)
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("agent did not stop on SIGTERM; logs:\n%s", logs)
		}
	})
	return cmd.Process, logs
}

func waitStatus(t *testing.T, cfgPath string, want int) result {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		last := runCLI(t, "status", "--config", cfgPath)
		if last.code == want {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never exited %d; last: %+v", want, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestStatusExitCodesFollowTheAgentsHealth(t *testing.T) {
	dir := t.TempDir()
	srv, apiSock := startDevAPI(t, time.Minute)
	srv.Stop() // the Workload API is down when the agent starts
	cfg := writeConfig(t, dir, apiSock, "20s")

	// 3 UNKNOWN: no agent.
	r := runCLI(t, "status", "--config", cfg)
	assert.Equal(t, 3, r.code)
	assert.Contains(t, r.stdout, "UNKNOWN: agent not reachable at "+dir+"/admin.sock")

	logs := startAgent(t, cfg)
	// 2 CRITICAL: the agent runs but has no SVID.
	r = waitStatus(t, cfg, 2)
	assert.Contains(t, r.stdout, "CRITICAL: ")
	assert.Contains(t, r.stdout, "no X.509-SVID received from the Workload API yet")
	_, err := os.Stat(filepath.Join(dir, "out", "svid.pem"))
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing is written before the first SVID")

	// 0 OK: the Workload API comes up; the agent recovers by itself.
	require.NoError(t, srv.Start(apiSock))
	r = waitStatus(t, cfg, 0)
	assert.True(t, strings.HasPrefix(r.stdout, "OK\n"), r.stdout)
	assert.Contains(t, r.stdout, "svid    spiffe://example.org/svc")
	pemBytes, err := os.ReadFile(filepath.Join(dir, "out", "svid.pem"))
	require.NoError(t, err)
	before := serialOf(t, pemBytes)

	// 1 WARNING: the Workload API goes away; files stay as they were.
	srv.Stop()
	r = waitStatus(t, cfg, 1)
	assert.Contains(t, r.stdout, "unreachable")
	pemBytes, err = os.ReadFile(filepath.Join(dir, "out", "svid.pem"))
	require.NoError(t, err)
	assert.Equal(t, before, serialOf(t, pemBytes), "last good files are kept while the API is down")

	// JSON output carries the same verdict.
	r = runCLI(t, "status", "--config", cfg, "--json")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stdout, `"severity": "WARNING"`)

	// Back to OK once the API returns, with a reconnect counted.
	require.NoError(t, srv.Start(apiSock))
	r = waitStatus(t, cfg, 0)
	assert.NotContains(t, r.stdout, "reconnects 0)", "the reconnect is counted")
	_ = logs
}

func TestStatusWarnsInsideExpiryWindow(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Minute)
	cfg := writeConfig(t, dir, apiSock, "2m") // every 1m SVID is inside a 2m window
	startAgent(t, cfg)
	r := waitStatus(t, cfg, 1)
	assert.Contains(t, r.stdout, "WARNING: ")
	assert.Contains(t, r.stdout, "expiry window 2m0s")
}

func TestFetchWritesOnceAndExits(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Minute)
	cfg := writeConfig(t, dir, apiSock, "10s")
	r := runCLI(t, "fetch", "--config", cfg)
	require.Equal(t, 0, r.code, r.stderr)
	for name, mode := range map[string]os.FileMode{"svid.pem": 0o644, "key.pem": 0o600, "bundle.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, "out", name))
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm(), name)
	}
	// openssl, as an independent reader, sees the SPIFFE ID.
	out, err := exec.Command("openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", filepath.Join(dir, "out", "svid.pem")).CombinedOutput()
	require.NoError(t, err, string(out))
	assert.Contains(t, string(out), "URI:spiffe://example.org/svc")
}

func TestFetchFailsClearlyWithoutWorkloadAPI(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, filepath.Join(dir, "nothing.sock"), "10s")
	r := runCLI(t, "fetch", "--config", cfg, "--timeout", "2s")
	assert.Equal(t, 1, r.code)
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	assert.True(t, strings.HasPrefix(last, "identity-agent: no X.509-SVID from the Workload API at unix://"+dir+"/nothing.sock"), last)
}

func TestBadConfigIsOneLinePerErrorAndExit2(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(p, []byte("workload_api:\n  socket: unix:///x\noutputs:\n  - name: a\n    dir: /tmp/a\n    cert_file: c.pem\n    key_file: k.pem\n    key_mode: \"0x\"\n    reloads: []\n"), 0o600))
	for _, args := range [][]string{{"config", "validate", p}, {"run", "--config", p}, {"fetch", "--config", p}} {
		r := runCLI(t, args...)
		assert.Equal(t, 2, r.code, args)
		assert.Equal(t, p+":8: outputs[0].key_mode: \"0x\" is not a file mode (use an octal string such as \"0640\")\n"+
			p+":9: outputs[0].reloads: unknown field in an output\n", r.stderr, args)
	}
	r := runCLI(t, "config", "validate", filepath.Join(dir, "missing.yaml"))
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "missing.yaml: open ")
	r = runCLI(t, "run")
	assert.Equal(t, 2, r.code)
	assert.Equal(t, "identity-agent: --config is required\n", r.stderr)
}

func TestConfigValidateAcceptsTheQuickstart(t *testing.T) {
	r := runCLI(t, "config", "validate", "../../examples/quickstart.yaml")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "OK (2 outputs, 0 proxies)")
}

// `identity-agent dev` is a real Workload API process: go-spiffe fetches
// from it, and SIGHUP rotates its CA: the new root is in the bundle first,
// and signs the SVIDs --ca-activation-delay later.
func TestDevCommandServesAndRotatesCAOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "dev.sock")
	cmd := exec.Command(agentBin, "dev", "--socket", sock, "--spiffe-id", "spiffe://example.org/a#a", "--spiffe-id", "spiffe://example.org/b#b", "--federate-with", "partner.test",
		"--ca-activation-delay", "500ms")
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var x509ctx *workloadapi.X509Context
	require.Eventually(t, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var err error
		x509ctx, err = workloadapi.FetchX509Context(c, workloadapi.WithAddr("unix://"+sock))
		return err == nil
	}, 15*time.Second, 100*time.Millisecond, "dev API never answered; logs:\n%s", &logs)
	require.Len(t, x509ctx.SVIDs, 2)
	assert.Equal(t, "b", x509ctx.SVIDs[1].Hint)
	_, ok := x509ctx.Bundles.Get(spiffeid.RequireTrustDomainFromString("partner.test"))
	assert.True(t, ok)
	b, _ := x509ctx.Bundles.Get(td)
	require.Len(t, b.X509Authorities(), 1)

	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		bs, err := workloadapi.FetchX509Bundles(c, workloadapi.WithAddr("unix://"+sock))
		if err != nil {
			return false
		}
		b, _ := bs.Get(td)
		return len(b.X509Authorities()) == 2
	}, 10*time.Second, 100*time.Millisecond, "SIGHUP must rotate the CA; logs:\n%s", &logs)
	oldRoot := b.X509Authorities()[0]
	require.Eventually(t, func() bool {
		c, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		x, err := workloadapi.FetchX509Context(c, workloadapi.WithAddr("unix://"+sock))
		if err != nil {
			return false
		}
		leaf := x.DefaultSVID().Certificates[0]
		_, _, err = x509svid.Verify(x.DefaultSVID().Certificates, x.Bundles)
		return err == nil && !bytes.Equal(leaf.AuthorityKeyId, oldRoot.SubjectKeyId)
	}, 10*time.Second, 100*time.Millisecond, "the new root never signed; logs:\n%s", &logs)
	assert.Contains(t, logs.String(), "prepared the next CA")
	assert.Contains(t, logs.String(), "activated the next CA")
	// A duration in the log carries its unit (issue 22: it was 0.5).
	assert.Contains(t, logs.String(), `"activates_in": "500ms"`)
}

// `dev` refuses lifetimes that cannot work instead of silently using the
// default.
func TestDevRejectsNonPositiveLifetimes(t *testing.T) {
	for _, args := range [][]string{
		{"--ttl", "0s"}, {"--ttl", "-5s"}, {"--jwt-ttl", "0s"}, {"--ca-activation-delay", "-1s"},
		{"--unsafe-immediate-ca-switch", "--ca-activation-delay", "1s"},
	} {
		r := runCLI(t, append([]string{"dev", "--socket", filepath.Join(t.TempDir(), "s.sock")}, args...)...)
		assert.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		assert.Contains(t, r.stderr, args[0], "the line names the flag")
	}
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func serialOf(t *testing.T, pemBytes []byte) string {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	require.NotNil(t, block)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c.SerialNumber.String()
}

// An output directory that cannot be written (chattr +i, as a read-only
// mount would) keeps the last good files, turns status WARNING naming the
// write failure, and recovers by itself once writable again.
func TestUnwritableOutputKeepsFilesWarnsAndRecovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chattr +i needs root")
	}
	needBinary(t, "chattr")
	dir := t.TempDir()
	srv, apiSock := startDevAPI(t, 8*time.Second) // rotates every 4s
	cfg := writeConfig(t, dir, apiSock, "1s")
	startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	out := filepath.Join(dir, "out")
	read := func() (string, string) {
		c, err := os.ReadFile(filepath.Join(out, "svid.pem"))
		require.NoError(t, err)
		k, err := os.ReadFile(filepath.Join(out, "key.pem"))
		require.NoError(t, err)
		return string(c), string(k)
	}
	if b, err := exec.Command("chattr", "+i", out).CombinedOutput(); err != nil {
		t.Skipf("chattr +i not supported here: %v %s", err, b)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", out).Run() })
	cert, key := read()

	require.NoError(t, srv.RotateSVIDs())
	r := waitStatus(t, cfg, 1)
	assert.Contains(t, r.stdout, "output svc: last write failed")
	c2, k2 := read()
	assert.Equal(t, cert, c2, "last good certificate kept")
	assert.Equal(t, key, k2, "last good key kept")

	require.NoError(t, exec.Command("chattr", "-i", out).Run())
	waitStatus(t, cfg, 0)
	c3, _ := read()
	assert.NotEqual(t, serialOf(t, []byte(cert)), serialOf(t, []byte(c3)), "the pending rotation is written once the directory is writable")
}
