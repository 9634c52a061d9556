package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T, proxyListen string) (*config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), TTL: time.Hour})
	y := fmt.Sprintf(`workload_api: {socket: "%s"}
admin: {socket: "%s/admin.sock"}
outputs:
  - {name: svc, dir: "%s/out", cert_file: svid.pem, key_file: key.pem, bundle_file: bundle.pem}
proxies:
  - {name: p, mode: server, listen: "%s", target: "127.0.0.1:1", allow: [spiffe://example.org/client], drain_timeout: 2s}
`, srv.Addr(), dir, dir, proxyListen)
	path := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(path, []byte(y), 0o600))
	cfg, err := config.Parse(path, []byte(y), func(string) string { return "" })
	require.NoError(t, err)
	return cfg, dir
}

// A proxy that cannot listen ends Run with its error, at once and before
// anything else, and every goroutine the agent started is stopped (goleak
// in TestMain).
func TestRunStopsEverythingWhenAProxyCannotListen(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	cfg, dir := setup(t, taken.Addr().String())
	a, err := newAgent(t, cfg, agent.Options{})
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		require.Error(t, err)
		assert.Contains(t, err.Error(), `agent.yaml:6: proxies[0].listen: "`+taken.Addr().String()+`": listen tcp`)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after a proxy failed to start")
	}
	// The listeners are opened before any side effect (issue 22).
	_, err = os.Stat(filepath.Join(dir, "out", "svid.pem"))
	assert.ErrorIs(t, err, os.ErrNotExist, "files were written before the agent found the address taken")
	_, err = os.Stat(filepath.Join(dir, "admin.sock"))
	assert.ErrorIs(t, err, os.ErrNotExist, "the admin socket is never created")
}

// startAgent runs an agent on cfg until the test ends and returns once it
// is ready; the cleanup cancels it and requires Run to return nil, in time.
func startAgent(t *testing.T, cfg *config.Config) *agent.Agent {
	t.Helper()
	ready := make(chan struct{})
	a, err := newAgent(t, cfg, agent.Options{OnReady: func() { close(ready) }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("never ready")
	}
	return a
}

func TestRunServesUntilCancelled(t *testing.T) {
	cfg, dir := setup(t, "127.0.0.1:0")
	a := startAgent(t, cfg)
	_, err := os.Stat(filepath.Join(dir, "out", "key.pem"))
	require.NoError(t, err, "READY means the files are on disk")
	r := a.Report()
	require.Len(t, r.Proxies, 1)
	assert.Equal(t, "p", r.Proxies[0].Name)
}

// newAgent plans cfg to run (NewEnv) and builds the agent from the plan.
func newAgent(t *testing.T, cfg *config.Config, opts agent.Options) (*agent.Agent, error) {
	t.Helper()
	plan, err := agent.NewPlan(cfg, agent.NewEnv(cfg, nil))
	if err != nil {
		return nil, err
	}
	return agent.New(plan, opts)
}
