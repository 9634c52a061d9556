package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func needBinary(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (CI must install it): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverSerial asks openssl, as an independent TLS client presenting the
// given client cert, for the serial of the certificate the server presents.
func serverSerial(t *testing.T, addr, cert, key, ca string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc := exec.CommandContext(ctx, "openssl", "s_client", "-connect", addr, "-cert", cert, "-key", key, "-CAfile", ca, "-verify_return_error", "-showcerts")
	sc.Stdin = strings.NewReader("PING\r\n")
	out, err := sc.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("s_client: %v: %s", err, out)
	}
	x := exec.CommandContext(ctx, "openssl", "x509", "-noout", "-serial")
	x.Stdin = strings.NewReader(string(out))
	serial, err := x.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("x509: %v: %s", err, serial)
	}
	return strings.TrimSpace(strings.TrimPrefix(string(serial), "serial=")), nil
}

// The agent writes Redis's SVID, reloads a live redis-server with CONFIG SET
// after a rotation, and drives the transition A→B→C, refusing D while a
// plaintext client is connected, then D once it has gone, and rolls back.
func TestRedisReloadAndTransitionThroughTheCLI(t *testing.T) {
	needBinary(t, "redis-server")
	needBinary(t, "openssl")
	dir := t.TempDir()
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour,
		Identities: []svidtest.Identity{{ID: spiffeid.RequireFromString("spiffe://example.org/redis")}}})
	apiSock := srv.SocketPath()

	plain, tlsPort := freePort(t), freePort(t)
	redisSock := filepath.Join(dir, "redis.sock")
	pwFile := filepath.Join(dir, "redis.pass")
	require.NoError(t, os.WriteFile(pwFile, []byte("s3cret\n"), 0o600))
	rs := exec.Command("redis-server", "--port", strconv.Itoa(plain), "--bind", "127.0.0.1", "--unixsocket", redisSock,
		"--unixsocketperm", "700", "--requirepass", "s3cret", "--save", "", "--appendonly", "no", "--dir", dir)
	rsLog, err := os.Create(filepath.Join(dir, "redis.log"))
	require.NoError(t, err)
	rs.Stdout, rs.Stderr = rsLog, rsLog
	require.NoError(t, rs.Start())
	t.Cleanup(func() { _ = rs.Process.Kill(); _ = rs.Wait() })

	out := filepath.Join(dir, "redis-tls")
	cfg := fmt.Sprintf(`workload_api: {socket: "unix://%[1]s"}
admin: {socket: "%[2]s/admin.sock"}
log: {level: debug}
rotation: {retry_min: 100ms, retry_max: 1s}
outputs:
  - name: redis
    dir: %[3]s
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - redis: {addr: "unix://%[4]s", password_file: "%[5]s"}
redis:
  transition:
    admin: {addr: "unix://%[4]s", password_file: "%[5]s"}
    plain_port: %[6]d
    tls_port: %[7]d
    server_id: spiffe://example.org/redis
    cert_file: %[3]s/svid.pem
    key_file: %[3]s/key.pem
    ca_cert_file: %[3]s/bundle.pem
    state_file: %[2]s/transition.json
    window: 2s
    sample_interval: 500ms
`, apiSock, dir, out, redisSock, pwFile, plain, tlsPort)
	cfgPath := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))

	logs := startAgent(t, cfgPath)
	defer func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	}()
	waitStatus(t, cfgPath, 0)

	r := runCLI(t, "redis", "transition", "status", "--config", cfgPath)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "phase A")
	// status says the same before any advance (it said phase=-: the state
	// file has no phase until the first advance; issue 22, 2.9).
	var agentSays result
	require.Eventually(t, func() bool {
		agentSays = runCLI(t, "status", "--config", cfgPath)
		return strings.Contains(agentSays.stdout, "redis   phase=A ")
	}, 20*time.Second, 200*time.Millisecond, "status never said phase=A; last:\n%s", agentSays.stdout)

	r = runCLI(t, "redis", "transition", "advance", "--config", cfgPath)
	assert.Equal(t, 1, r.code, "no --confirm")
	assert.Contains(t, r.stderr, "refusing A→B")
	assert.Contains(t, r.stderr, "confirm")

	r = runCLI(t, "redis", "transition", "advance", "--config", cfgPath, "--confirm")
	require.Equal(t, 0, r.code, r.stderr+r.stdout)
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	cert, key, ca := filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem"), filepath.Join(out, "bundle.pem")
	first, err := serverSerial(t, addr, cert, key, ca)
	require.NoError(t, err)

	// Rotation: the agent rewrites the files and reloads Redis with CONFIG
	// SET; new handshakes present the new serial, no restart.
	require.NoError(t, srv.RotateSVIDs())
	want := strings.ToUpper(srv.CurrentSVIDs()[0].Certificates[0].SerialNumber.Text(16))
	require.Eventually(t, func() bool {
		s, err := serverSerial(t, addr, cert, key, ca)
		return err == nil && strings.TrimLeft(s, "0") == strings.TrimLeft(want, "0")
	}, 20*time.Second, 200*time.Millisecond, "redis never presented the rotated serial; agent logs:\n%s", logs)
	assert.NotEqual(t, first, want)
	assert.Equal(t, 1, countPID(t, rs.Process.Pid), "same redis-server process")

	r = runCLI(t, "redis", "transition", "advance", "--config", cfgPath, "--confirm")
	require.Equal(t, 0, r.code, r.stderr+r.stdout)
	assert.Contains(t, r.stdout, "phase B → C")

	// A plaintext client holds D back, as sampled by the running agent.
	legacy := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", plain), Password: "s3cret"})
	defer legacy.Close()
	require.NoError(t, legacy.Ping(context.Background()).Err())
	time.Sleep(1500 * time.Millisecond) // at least one sample sees it
	// status carries the sampler's view, typed (JSON) and rendered.
	r = runCLI(t, "status", "--config", cfgPath, "--json")
	var st struct {
		Redis *struct {
			Phase  string `json:"phase"`
			Sample struct {
				Last struct {
					Plaintext int `json:"plaintext"`
				} `json:"last"`
			} `json:"sample"`
		} `json:"redis"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	require.NotNil(t, st.Redis, r.stdout)
	assert.Equal(t, "C", st.Redis.Phase)
	assert.GreaterOrEqual(t, st.Redis.Sample.Last.Plaintext, 1, r.stdout)
	assert.Contains(t, runCLI(t, "status", "--config", cfgPath).stdout, "redis   phase=C ")
	r = runCLI(t, "redis", "transition", "advance", "--config", cfgPath, "--confirm")
	assert.Equal(t, 1, r.code)
	assert.Regexp(t, regexp.MustCompile(`refusing C→D: .*gate plaintext-(window|now)`), r.stderr)

	require.NoError(t, legacy.Close())
	require.Eventually(t, func() bool {
		r = runCLI(t, "redis", "transition", "advance", "--config", cfgPath, "--confirm")
		return r.code == 0
	}, 30*time.Second, time.Second, "D never allowed after the plaintext client left: %+v", r)
	_, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", plain), time.Second)
	assert.Error(t, err, "plaintext port closed in D")

	r = runCLI(t, "redis", "transition", "rollback", "--config", cfgPath, "--confirm")
	require.Equal(t, 0, r.code, r.stderr+r.stdout)
	assert.Contains(t, r.stdout, "phase D → C")
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", plain), time.Second)
	require.NoError(t, err, "rollback reopens the plaintext port")
	_ = c.Close()
}

// countPID is 1 while the process is alive (the server was not restarted).
func countPID(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "State:") && !strings.Contains(sc.Text(), "zombie") {
			return 1
		}
	}
	return 0
}
