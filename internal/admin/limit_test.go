package admin_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/fleettest"
)

// TestIdleFloodDoesNotStarveStatus: attackers holding (and at once
// replacing) far more idle connections than the socket's cap neither
// raise the connections held above it nor keep status from answering.
func TestIdleFloodDoesNotStarveStatus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	now := time.Now()
	srv := admin.NewServer(sock, func() admin.Report { return healthyReport(now) },
		admin.WithMetricsListen("127.0.0.1:0"), admin.WithGatherer(prometheus.NewRegistry()))
	require.NoError(t, srv.Start(context.Background()))
	defer func() { _ = srv.Close() }()

	flood := fleettest.StartIdleFlood(4*admin.MaxSocketConns, func() (net.Conn, error) { return net.Dial("unix", sock) })
	defer flood.Stop()
	require.Eventually(t, func() bool { return flood.Dials() > 20*admin.MaxSocketConns }, 30*time.Second, 10*time.Millisecond)
	failed := 0
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := admin.Fetch(ctx, sock)
		cancel()
		if err != nil {
			t.Log(err)
			failed++
		}
	}
	assert.Zero(t, failed, "status requests failed of 20")
	t.Logf("attacker dials: %d", flood.Dials())
}
