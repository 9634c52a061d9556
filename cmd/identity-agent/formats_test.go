package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// Verified reload through the CLI, against two real redis-servers: one
// with a TLS port, started only after the agent wrote its files (verify
// fails, the reload is retried until Redis serves the SVID), and one
// without a TLS port, whose CONFIG SET answers OK and changes nothing:
// status turns WARNING naming that output, and status --json carries the
// served serial of the other.
func TestVerifiedReloadThroughTheCLI(t *testing.T) {
	needBinary(t, "redis-server")
	dir := t.TempDir()
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour})
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	goodSock, badSock := filepath.Join(dir, "good.sock"), filepath.Join(dir, "bad.sock")
	goodPlain, goodTLS, badPlain := freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`workload_api: {socket: "unix://%[1]s"}
admin: {socket: "%[2]s/admin.sock"}
rotation: {retry_min: 100ms, retry_max: 1s}
outputs:
  - name: redis-tls
    dir: %[3]s
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - redis: {addr: "unix://%[4]s"}
    verify: {address: "tcp://127.0.0.1:%[6]d", timeout: 1s}
  - name: redis-plain
    dir: %[5]s
    combined_file: tls.pem
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - redis: {addr: "unix://%[7]s"}
    verify: {address: "tcp://127.0.0.1:%[8]d", timeout: 500ms}
`, srv.SocketPath(), dir, good, goodSock, bad, goodTLS, badSock, badPlain)
	cfgPath := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
	r := runCLI(t, "config", "validate", cfgPath)
	require.Equal(t, 0, r.code, r.stderr+r.stdout)

	startRedis := func(args ...string) {
		rs := exec.Command("redis-server", append([]string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}, args...)...)
		rs.Stdout, rs.Stderr = nil, nil
		require.NoError(t, rs.Start())
		t.Cleanup(func() { _ = rs.Process.Kill(); _ = rs.Wait() })
	}
	startRedis("--port", strconv.Itoa(badPlain), "--unixsocket", badSock, "--unixsocketperm", "700")

	logs := startAgent(t, cfgPath)
	defer func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	}()
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(good, "key.pem"))
		return err == nil
	}, 20*time.Second, 50*time.Millisecond)
	startRedis("--port", strconv.Itoa(goodPlain), "--unixsocket", goodSock, "--unixsocketperm", "700",
		"--tls-port", strconv.Itoa(goodTLS), "--tls-cert-file", filepath.Join(good, "svid.pem"),
		"--tls-key-file", filepath.Join(good, "key.pem"), "--tls-ca-cert-file", filepath.Join(good, "bundle.pem"))

	serial := strings.ToUpper(srv.CurrentSVIDs()[0].Certificates[0].SerialNumber.Text(16))
	type verify struct {
		Verified     bool   `json:"verified"`
		ServedSerial string `json:"served_serial"`
		LastError    string `json:"last_error"`
	}
	type report struct {
		Outputs []struct {
			Name   string  `json:"name"`
			Serial string  `json:"serial"`
			Verify *verify `json:"verify"`
		} `json:"outputs"`
	}
	var last string
	require.Eventually(t, func() bool {
		r := runCLI(t, "status", "--config", cfgPath, "--json")
		last = r.stdout
		var rep report
		if json.Unmarshal([]byte(r.stdout), &rep) != nil {
			return false
		}
		ok := 0
		for _, o := range rep.Outputs {
			switch {
			case o.Name == "redis-tls" && o.Verify != nil && o.Verify.Verified && o.Verify.ServedSerial == o.Serial &&
				strings.TrimLeft(o.Serial, "0") == strings.TrimLeft(serial, "0"):
				ok++
			case o.Name == "redis-plain" && o.Verify != nil && !o.Verify.Verified && strings.Contains(o.Verify.LastError, "TLS handshake"):
				ok++
			}
		}
		return ok == 2
	}, 30*time.Second, 200*time.Millisecond, "status --json never showed redis-tls verified and redis-plain not; last:\n%s", func() string { return last }())

	r = waitStatus(t, cfgPath, 1)
	out := r.stdout + r.stderr
	assert.Contains(t, out, "WARNING")
	assert.Contains(t, out, "output redis-plain: last reload failed: reload not verified")
	assert.NotContains(t, out, "output redis-tls:")
	assert.Regexp(t, `output  redis-tls .* verify=tcp://127\.0\.0\.1:\d+ served=[0-9A-F]+ verified=true`, out)
	assert.Regexp(t, `output  redis-plain .* served=- verified=false`, out)
}
