package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var floodClientID = spiffeid.RequireFromString("spiffe://example.org/client")

// startLimitedAgent runs `identity-agent run` with RLIMIT_NOFILE soft and
// hard at nofile (prlimit(1) sets it and execs the agent).
func startLimitedAgent(t *testing.T, cfgPath string, nofile int) (*os.Process, *syncBuffer) {
	t.Helper()
	prlimit := needBinary(t, "prlimit")
	cmd := exec.Command(prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), agentBin, "run", "--config", cfgPath)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("agent did not stop on SIGTERM; logs:\n%s", logs)
		}
	})
	return cmd.Process, logs
}

// authorizedRequests makes n requests, each on a new connection, as the
// authorized client, and returns how many were answered.
func authorizedRequests(t *testing.T, dial func(string) (*mtlsConn, error), addr string, n int) int {
	t.Helper()
	ok := 0
	for i := range n {
		start := time.Now()
		c, err := dial(addr)
		if err != nil {
			t.Logf("request %d: dial (after %v): %v", i, time.Since(start).Round(time.Millisecond), err)
			continue
		}
		msg := fmt.Sprintf("ping %d", i)
		got, err := c.roundTrip(msg)
		_ = c.conn.Close()
		if err == nil && got == "echo: "+msg {
			ok++
		} else {
			t.Logf("request %d: %q %v", i, got, err)
		}
	}
	return ok
}

// TestFDFloodStarvesNothing is issue 18 item 1 against the real binary at
// RLIMIT_NOFILE 1024: 1,040 idle connections each to metrics_listen, the
// admin socket and the proxy (each replaced at once when closed) leave
// authorized proxy requests, status and rotation writes working; with the
// proxy's authenticated pool also full, a rotation still writes its files
// and status still answers: the reserve is no listener's to take.
func TestFDFloodStarvesNothing(t *testing.T) {
	const nofile, attackers = 1024, 1040
	dir := t.TempDir()
	srv, apiSock := startDevAPI(t, time.Hour)
	metrics, proxyAddr := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
  metrics_listen: %[3]s
log: {level: info}
rotation: {retry_min: 100ms, retry_max: 1s}
outputs:
  - {name: svc, dir: %[2]s/out, cert_file: svid.pem, key_file: key.pem, bundle_file: bundle.pem}
proxies:
  - {name: echo, mode: server, spiffe_id: spiffe://example.org/svc, listen: %[4]q, target: %[5]q, allow: [%[6]s]}
`, apiSock, dir, metrics, proxyAddr, echoServer(t), floodClientID)), 0o600))
	_, logs := startLimitedAgent(t, cfg, nofile)
	waitStatus(t, cfg, 0)
	assert.Contains(t, logs.String(), `file descriptor limit (RLIMIT_NOFILE)`)
	assert.Contains(t, logs.String(), fmt.Sprintf(`"soft":%d,"hard":%d`, nofile, nofile))

	client := func(addr string) (*mtlsConn, error) { return dialProxy(srv, addr, floodClientID) }
	require.Equal(t, 5, authorizedRequests(t, client, proxyAddr, 5), "unattacked")

	// The attacker is another process, as another local user would be.
	flood := startFloodProcess(t, attackers, "tcp:"+metrics, "unix:"+filepath.Join(dir, "admin.sock"), "tcp:"+proxyAddr)
	defer flood.Stop()
	waitFor(t, 60*time.Second, "every attacker connected", func() (bool, string) {
		dials := flood.Dials()
		return dials[0] >= attackers && dials[1] >= attackers && dials[2] >= attackers, fmt.Sprint(dials)
	})

	// Under the flood: the proxy serves, status answers, a rotation writes.
	assert.Equal(t, 20, authorizedRequests(t, client, proxyAddr, 20), "authorized requests answered under the flood")
	waitStatus(t, cfg, 0)
	rotated := func(what string) {
		t.Helper()
		require.NoError(t, srv.RotateSVIDs())
		want := hexSerial(srv.CurrentSVIDs()[0].Certificates[0])
		waitFor(t, 30*time.Second, what, func() (bool, string) {
			b, err := os.ReadFile(filepath.Join(dir, "out", "svid.pem"))
			if err != nil {
				return false, err.Error()
			}
			got := hexSerial(leafOf(t, b))
			return got == want, got + " != " + want
		})
	}
	rotated("rotation written under the flood")

	// Every listener at its cap: the authorized client also fills max_conns.
	doc := statusJSON(t, cfg)
	require.NotNil(t, doc["proxies"], "status under the flood: %v", doc)
	maxConns := int(doc["proxies"].([]any)[0].(map[string]any)["max_conns"].(float64))
	t.Logf("effective max_conns at RLIMIT_NOFILE %d: %d", nofile, maxConns)
	var held []*mtlsConn
	defer func() {
		for _, c := range held {
			_ = c.conn.Close()
		}
	}()
	// Several at once: each waits its turn in the accept queue behind the
	// flood, and one after another that is most of the test's time.
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range 8 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(maxConns); i = next.Add(1) - 1 {
				c, err := client(proxyAddr)
				if err == nil {
					if _, err = c.roundTrip("hold"); err != nil {
						_ = c.conn.Close()
					}
				}
				if err != nil {
					t.Logf("authenticated connection %d: %v", i, err)
					continue
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	assert.GreaterOrEqual(t, len(held), maxConns-1, "authenticated pool filled")
	rotated("rotation written with every listener at its cap")
	waitStatus(t, cfg, 0)
	assert.NotContains(t, logs.String(), "too many open files")
	if t.Failed() {
		out := logs.String()
		if len(out) > 8000 {
			out = out[len(out)-8000:]
		}
		t.Logf("agent logs (tail):\n%s", strings.TrimSpace(out))
	}
}
