package rotation

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedisServer runs a real redis-server with args until the test ends
// and waits for its plaintext port.
func startRedisServer(t *testing.T, plain int, args ...string) {
	t.Helper()
	cmd := exec.Command("redis-server", append([]string{"--port", strconv.Itoa(plain), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir()}, args...)...)
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	require.Eventually(t, func() bool {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(plain), "PING").Output()
		return err == nil && strings.TrimSpace(string(out)) == "PONG"
	}, waitFor, 50*time.Millisecond, "redis-server did not start")
}

// configSetScript is the exec reload: redis-cli CONFIG SET of the same
// paths (Redis >= 7.0.1 rebuilds its TLS context even for an unchanged
// path), each run logged so the test can count retries.
func configSetScript(t *testing.T, dir string, plain int, certFile, keyFile string) (argv []string, runs string) {
	t.Helper()
	runs = filepath.Join(dir, "runs")
	script := writeScript(t, dir, "reload.sh", fmt.Sprintf(
		"echo run >> %s\nexec redis-cli -p %d CONFIG SET tls-cert-file %s tls-key-file %s",
		runs, plain, certFile, keyFile))
	return []string{script}, runs
}

// A Redis CONFIG SET reload that takes: the Redis TLS port serves each new
// SVID (the agent presents its own SVID, as tls-auth-clients yes demands),
// and State and the metric say so. Redis reads certificate and key from
// the one combined_file (OpenSSL takes the certificates and the key from
// the same PEM), so a real redis-server reads that format back too.
func TestVerifyRedisConfigSet(t *testing.T) {
	needTool(t, "redis-server")
	needTool(t, "redis-cli")
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	outDir := filepath.Join(base, "redis")
	files := Output{Name: "redis", Dir: outDir, Formats: []Format{&PEM{BundleFile: "ca.pem"}, &Combined{File: "redis.pem"}}}
	combined := filepath.Join(outDir, "redis.pem")
	// Redis needs its files before it starts: a first pass without reloads.
	first, err := NewManager(e.src, []Output{files}, WithLogger(testLogger(t)))
	require.NoError(t, err)
	require.NoError(t, first.WriteAll(context.Background()))
	require.NoError(t, first.Close())

	plain, tlsPort := freePort(t), freePort(t)
	startRedisServer(t, plain, "--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", combined, "--tls-key-file", combined,
		"--tls-ca-cert-file", filepath.Join(outDir, "ca.pem"), "--tls-auth-clients", "yes")

	argv, runs := configSetScript(t, base, plain, combined, combined)
	probe, err := tlsprobe.New(fmt.Sprintf("tcp://127.0.0.1:%d", tlsPort))
	require.NoError(t, err)
	o := files
	o.Reloads = []Reloader{NewExecReloader(argv, 0)}
	o.Verify = probe
	reg := prometheus.NewRegistry()
	m := newTestManager(t, e, []Output{o}, WithRegisterer(reg))
	runManager(t, m)

	verified := func(serial string) func() bool {
		return func() bool {
			v := outputState(m, "redis").Verify
			return v != nil && v.Verified && v.ServedSerial == serial
		}
	}
	// Started on these files: verified without a reload.
	require.Eventually(t, verified(hexOf(currentSerial(e, ""))), waitFor, tick)
	assert.Empty(t, lines(runs), "nothing to reload at start")

	for range 2 {
		require.NoError(t, e.srv.RotateSVIDs())
		want := hexOf(currentSerial(e, ""))
		require.Eventually(t, verified(want), waitFor, tick, "Redis never served %s", want)
		st := outputState(m, "redis")
		assert.True(t, st.Healthy())
		assert.Empty(t, st.LastReloadError)
		assert.Equal(t, st.Serial, st.Verify.ServedSerial)
	}
	assert.Len(t, lines(runs), 2, "one CONFIG SET per rotation")
	assert.Equal(t, 1.0, metricstest.Value(t, reg, "identity_agent_reload_verified", map[string]string{"output": "redis"}))
}

// A reload that is accepted and ignored: CONFIG SET tls-cert-file answers
// OK on a Redis without a TLS port, and nothing serves the certificate.
// The output turns unhealthy with the reason, the metric reads 0 and the
// reload is retried with backoff.
func TestVerifyRedisWithoutTLSPortWarns(t *testing.T) {
	needTool(t, "redis-server")
	needTool(t, "redis-cli")
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	outDir := filepath.Join(base, "redis")
	plain := freePort(t)
	startRedisServer(t, plain) // no --tls-port
	argv, runs := configSetScript(t, base, plain, filepath.Join(outDir, "cert.pem"), filepath.Join(outDir, "key.pem"))
	// The operator pointed verify at the port they believed served TLS.
	probe, err := tlsprobe.New(fmt.Sprintf("tcp://127.0.0.1:%d", plain), tlsprobe.WithTimeout(time.Second))
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	m := newTestManager(t, e, []Output{{Name: "redis", Dir: outDir, Reloads: []Reloader{NewExecReloader(argv, 0)}, Verify: probe, VerifyTimeout: 500 * time.Millisecond, Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem"}}}}, WithRegisterer(reg))
	runManager(t, m)

	require.Eventually(t, func() bool { return len(lines(runs)) >= 3 }, waitFor, tick, "the reload must be retried")
	// The CONFIG SET itself succeeded: the reload "worked" by its exit code.
	out, err := exec.Command("redis-cli", "-p", strconv.Itoa(plain), "CONFIG", "GET", "tls-cert-file").Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), filepath.Join(outDir, "cert.pem"))

	st := outputState(m, "redis")
	require.NotNil(t, st.Verify)
	assert.False(t, st.Verify.Verified)
	assert.Empty(t, st.Verify.ServedSerial)
	assert.Contains(t, st.LastReloadError, "reload not verified after 500ms: probe tcp://127.0.0.1:"+strconv.Itoa(plain)+": TLS handshake")
	assert.False(t, st.Healthy())
	assert.Equal(t, 0.0, metricstest.Value(t, reg, "identity_agent_reload_verified", map[string]string{"output": "redis"}))
}

// uvicorn never reloads certificates and dies on SIGHUP; its reload is a
// restart (here by an exec hook, as a supervisor would). Verify waits for
// the new process to serve the new certificate. uvicorn is given only
// --ssl-certfile, the combined file: Python's ssl reads the key from it.
func TestVerifyUvicornRestartedByExec(t *testing.T) {
	needTool(t, "/usr/bin/python3")
	if out, err := exec.Command("/usr/bin/python3", "-c", "import uvicorn").CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("uvicorn not installed for /usr/bin/python3: %s", out)
		}
		t.Skipf("uvicorn not installed: %s", out)
	}
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	outDir := filepath.Join(base, "api")
	require.NoError(t, os.WriteFile(filepath.Join(base, "app.py"), []byte(
		"async def app(scope, receive, send):\n"+
			"    if scope['type'] != 'http':\n        return\n"+
			"    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"+
			"    await send({'type': 'http.response.body', 'body': b'ok'})\n"), 0o644))
	// A unix socket in the test's own directory, not a TCP port: a port
	// picked free can be taken by another package's test before uvicorn
	// binds it, and verify then probes someone else's server until it
	// times out (failed once in make test-mingo, which runs pkg/ at once).
	sock := filepath.Join(base, "uvicorn.sock")
	pidFile := filepath.Join(base, "uvicorn.pid")
	// restart.sh stops the running uvicorn (SIGTERM, which it handles) and
	// starts a new one detached from the hook's pipes.
	restart := writeScript(t, base, "restart.sh", fmt.Sprintf(`cd %[1]s
echo run >> %[1]s/runs
if [ -f %[2]s ]; then
  pid=$(cat %[2]s); kill -TERM "$pid" 2>/dev/null
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
fi
/usr/bin/python3 -m uvicorn app:app --uds %[3]s --ssl-certfile %[4]s/tls.pem >>%[1]s/uvicorn.log 2>&1 </dev/null &
echo $! > %[2]s`, base, pidFile, sock, outDir))
	t.Cleanup(func() {
		if t.Failed() {
			// What uvicorn said is the first thing to read when this fails.
			for _, name := range []string{"uvicorn.log", "runs"} {
				if b, err := os.ReadFile(filepath.Join(base, name)); err == nil {
					t.Logf("%s:\n%s", name, b)
				}
			}
		}
		if raw, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGTERM)
				for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
	})
	probe, err := tlsprobe.New("unix://" + sock)
	require.NoError(t, err)
	m := newTestManager(t, e, []Output{{Name: "api", Dir: outDir, Reloads: []Reloader{NewExecReloader([]string{restart}, 0)}, Verify: probe, VerifyTimeout: 15 * time.Second, Formats: []Format{&Combined{File: "tls.pem"}}}})
	runManager(t, m)

	verified := func(serial string) func() bool {
		return func() bool {
			v := outputState(m, "api").Verify
			return v != nil && v.Verified && v.ServedSerial == serial
		}
	}
	// Nothing served at start: verify fails, which re-runs the reload,
	// which starts uvicorn on the files just written.
	require.Eventually(t, verified(hexOf(currentSerial(e, ""))), waitFor, tick)
	firstPid, err := os.ReadFile(pidFile)
	require.NoError(t, err)

	require.NoError(t, e.srv.RotateSVIDs())
	want := hexOf(currentSerial(e, ""))
	require.Eventually(t, verified(want), waitFor, tick, "uvicorn never served %s", want)
	secondPid, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	assert.NotEqual(t, string(firstPid), string(secondPid), "a restart, not a reload in place")
	st := outputState(m, "api")
	assert.True(t, st.Healthy(), "%+v", st)
	assert.Empty(t, st.LastReloadError)
}
