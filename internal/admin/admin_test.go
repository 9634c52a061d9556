package admin_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

func healthyReport(now time.Time) admin.Report {
	return admin.Report{
		Now: now,
		State: rotation.State{
			WorkloadAPI: svid.ConnStatus{Addr: "unix:///s", Connected: true},
			ExpiryRule:  "expiry window 1m0s",
			SVIDs:       []rotation.SVIDState{{SpiffeID: "spiffe://example.org/a", NotAfter: now.Add(time.Hour), Expiry: rotation.ExpiryOK}},
			Outputs:     []rotation.OutputState{{Name: "redis", NotAfter: now.Add(time.Hour), Expiry: rotation.ExpiryOK}},
		},
	}
}

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		mutate func(*admin.Report)
		want   admin.Severity
		reason string
	}{
		{"healthy", func(*admin.Report) {}, admin.OK, ""},
		{"no svid", func(r *admin.Report) { r.SVIDs = nil; r.Outputs = nil }, admin.Critical, "no X.509-SVID received from the Workload API yet"},
		{"disconnected", func(r *admin.Report) { r.WorkloadAPI.Connected = false; r.WorkloadAPI.LastError = "connection refused" },
			admin.Warning, "Workload API unix:///s unreachable: connection refused"},
		{"no identity issued", func(r *admin.Report) {
			r.WorkloadAPI.Connected, r.WorkloadAPI.NoIdentity = false, true
			r.WorkloadAPI.Reason = "no identity issued to this workload (uid 7): registration entries deleted or not yet propagated"
			r.WorkloadAPI.LastError = "rpc error: code = PermissionDenied desc = no identity issued"
			r.Outputs[0].SpiffeID = "spiffe://example.org/a"
		}, admin.Warning, "output redis: SVID spiffe://example.org/a no longer issued: no identity issued to this workload (uid 7): " +
			"registration entries deleted or not yet propagated (Workload API unix:///s); files kept, valid until 2026-11-23T13:00:00Z"},
		{"no identity issued, expired on disk", func(r *admin.Report) {
			r.WorkloadAPI.Connected, r.WorkloadAPI.NoIdentity = false, true
			r.Outputs[0].NotAfter, r.Outputs[0].Expiry = now.Add(-5*time.Second), rotation.ExpiryExpired
		}, admin.Critical, "output redis on disk expired 5s ago"},
		{"overdue", func(r *admin.Report) {
			r.SVIDs[0].NotAfter, r.SVIDs[0].Expiry = now.Add(30*time.Second), rotation.ExpiryOverdue
		},
			admin.Warning, "SVID spiffe://example.org/a expires in 30s (expiry window 1m0s)"},
		{"expired on disk", func(r *admin.Report) {
			r.Outputs[0].NotAfter, r.Outputs[0].Expiry = now.Add(-5*time.Second), rotation.ExpiryExpired
		}, admin.Critical, "output redis on disk expired 5s ago"},
		{"reload failed", func(r *admin.Report) { r.Outputs[0].LastReloadError = "exit status 1" },
			admin.Warning, "output redis: last reload failed: exit status 1"},
		{"write failed", func(r *admin.Report) { r.Outputs[0].LastWriteError = "read-only file system" },
			admin.Warning, "output redis: last write failed: read-only file system"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := healthyReport(now)
			tc.mutate(&r)
			sev, reasons := admin.Evaluate(r)
			assert.Equal(t, tc.want, sev)
			if tc.reason == "" {
				assert.Empty(t, reasons)
			} else {
				assert.Contains(t, reasons, tc.reason)
			}
		})
	}
}

func TestServerSocketIsPrivateAndServesStatusAndMetrics(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "admin.sock")
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "identity_agent_test_total", Help: "t"})
	reg.MustRegister(c)
	c.Add(3)
	now := time.Now()
	report := healthyReport(now)
	report.Proxies = []tlsproxy.Stats{{Name: "ollama", Mode: tlsproxy.ModeServer, ConnectionsTotal: 7,
		HandshakeFailures: map[tlsproxy.Cause]uint64{tlsproxy.CauseUnauthorizedID: 2}}}
	srv := admin.NewServer(sock, func() admin.Report { return report }, admin.WithMetricsListen("127.0.0.1:0"), admin.WithGatherer(reg))
	require.NoError(t, srv.Start(context.Background()))
	defer func() { require.NoError(t, srv.Shutdown(context.Background())) }()

	fi, err := os.Stat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	assert.NotZero(t, fi.Mode()&os.ModeSocket)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := admin.Fetch(ctx, sock)
	require.NoError(t, err)
	assert.Equal(t, "spiffe://example.org/a", r.SVIDs[0].SpiffeID)
	// The typed state survives the trip through JSON as it is.
	assert.Equal(t, report.WorkloadAPI, r.WorkloadAPI)
	assert.Equal(t, rotation.ExpiryOK, r.Outputs[0].Expiry)
	assert.Equal(t, report.Proxies, r.Proxies)

	// A second agent on the same socket is refused, not silently stealing it.
	other := admin.NewServer(sock, func() admin.Report { return admin.Report{} }, admin.WithGatherer(reg))
	require.ErrorContains(t, other.Start(context.Background()), "in use by another running agent")
}

func TestFetchUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := admin.Fetch(ctx, filepath.Join(t.TempDir(), "none.sock"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "agent not reachable at")
}

func TestStaleSocketIsReplacedButRegularFileIsNot(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	require.NoError(t, l.Close()) // stale socket file left behind, as after a crash
	srv := admin.NewServer(sock, func() admin.Report { return admin.Report{} })
	require.NoError(t, srv.Start(context.Background()))
	require.ErrorContains(t, srv.Start(context.Background()), "already started")
	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close(), "Close twice")

	plain := filepath.Join(dir, "plain")
	require.NoError(t, os.WriteFile(plain, []byte("keep me"), 0o644))
	srv = admin.NewServer(plain, func() admin.Report { return admin.Report{} })
	require.ErrorContains(t, srv.Start(context.Background()), "is not a socket")
	b, _ := os.ReadFile(plain)
	assert.Equal(t, "keep me", string(b))
}

// A Workload API that answers PermissionDenied is not "unreachable": the
// reasons name every output instead, and nothing else.
func TestEvaluateNoIdentityNamesEachOutput(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := healthyReport(now)
	r.Outputs = append(r.Outputs, rotation.OutputState{Name: "jwt-only"})
	r.WorkloadAPI.Connected, r.WorkloadAPI.NoIdentity = false, true
	r.WorkloadAPI.Reason = "no identity issued to this workload (uid 7): registration entries deleted or not yet propagated"
	r.WorkloadAPI.LastError = "rpc error: code = PermissionDenied desc = no identity issued"
	sev, reasons := admin.Evaluate(r)
	assert.Equal(t, admin.Warning, sev)
	require.Len(t, reasons, 2, "%q", reasons)
	assert.True(t, strings.HasPrefix(reasons[0], "output jwt-only: SVID no longer issued: no identity issued to this workload (uid 7)"), reasons[0])
	assert.True(t, strings.HasPrefix(reasons[1], "output redis: SVID "), reasons[1])
	assert.Contains(t, reasons[1], "no identity issued to this workload (uid 7)")
	for _, s := range reasons {
		assert.NotContains(t, s, "unreachable")
	}
}
