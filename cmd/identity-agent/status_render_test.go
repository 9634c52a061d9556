package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// printStatus renders the typed report: every part's line comes from its
// own fields, with no field looked up by name.
func TestPrintStatusRendersTheTypedReport(t *testing.T) {
	now := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	r := admin.Report{
		Version: "v1", Now: now, StartedAt: now.Add(-90 * time.Second),
		State: rotation.State{
			WorkloadAPI: svid.ConnStatus{Addr: "unix:///run/spire/agent.sock", Connected: true, Reconnects: 2},
			SVIDs:       []rotation.SVIDState{{SpiffeID: "spiffe://example.org/web", Hint: "web", Serial: "0A", NotAfter: now.Add(time.Hour)}},
			Outputs: []rotation.OutputState{{Name: "web", Files: []string{"svid.pem", "key.pem"}, Serial: "0A",
				NotAfter: now.Add(time.Hour), LastWrite: now, LastReload: now, LastReloadError: "exit status 1"}},
		},
		Proxies: []tlsproxy.Stats{{Name: "ollama", Mode: tlsproxy.ModeServer, Listen: "0.0.0.0:6701", Target: "127.0.0.1:11434",
			ConnectionsOpen: 1, ConnectionsTotal: 9, BytesToTarget: 100, BytesFromTarget: 2000,
			MaxConns: 100, MaxHandshakes: 2048, ConnectionsHandshaking: 3, ConnectionsAuthenticated: 1,
			HandshakesShed:    map[string]uint64{"pool_full": 4, "source_cap": 6},
			HandshakeFailures: map[tlsproxy.Cause]uint64{tlsproxy.CauseNoCert: 2, tlsproxy.CauseUnauthorizedID: 3}}},
		Redis: &admin.Redis{Phase: redistransition.PhaseC, Sample: redistransition.SampleState{Samples: 4,
			LastSample: now, Last: redistransition.ConnCounts{Plaintext: 1, TLS: 5}}},
	}
	var b bytes.Buffer
	printStatus(&b, r, admin.Warning, []string{"output web: last reload failed: exit status 1"})
	assert.Equal(t, `WARNING: output web: last reload failed: exit status 1
agent v1, up 1m30s; Workload API unix:///run/spire/agent.sock connected (reconnects 2)
svid    spiffe://example.org/web hint=web serial=0A not_after=2026-12-02T02:00:00Z (in 1h0m0s)
output  web files=svid.pem,key.pem serial=0A not_after=2026-12-02T02:00:00Z written=2026-12-02T01:00:00Z reloaded=2026-12-02T01:00:00Z result="exit status 1"
proxy   ollama server 0.0.0.0:6701 -> 127.0.0.1:11434 connections_open=1 connections_total=9 connections_refused=0 bytes_to_target=100 bytes_from_target=2000 handshake_failures=5 handshaking=3/2048 authenticated=1/100 handshakes_shed=10
redis   phase=C samples=4 plaintext=1 tls=5 last_sample=2026-12-02T01:00:00Z
`, b.String())
}
