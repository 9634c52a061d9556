package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The agent reconnects as soon as the Workload API's socket reappears,
// however far its backoff has grown. With 4 s SVIDs the dev API rotates 2 s
// after its restart; the SVID it issued at the restart must be the one the
// agent writes. Waiting out the backoff instead (1 s, 2 s, 4 s, 8 s ... up
// to retry_max) the agent would come back after that rotation and the
// restart's SVID would expire unused.
func TestAgentReconnectsWhenTheSocketReappears(t *testing.T) {
	dir := t.TempDir()
	srv, apiSock := startDevAPI(t, 4*time.Second)
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
  retry_max: 30s
admin:
  socket: %[2]s/admin.sock
log: {level: debug}
outputs:
  - name: svc
    dir: %[2]s/out
    cert_file: svid.pem
    key_file: key.pem
`, apiSock, dir)), 0o600))
	logs := startAgent(t, cfg)
	certPath := filepath.Join(dir, "out", "svid.pem")
	onDisk := func() string {
		b, err := os.ReadFile(certPath)
		if err != nil {
			return ""
		}
		return serialOf(t, b)
	}
	require.Eventually(t, func() bool { return onDisk() != "" }, 30*time.Second, 20*time.Millisecond, "logs:\n%s", logs)

	srv.Stop()
	// Down for 8 s: the agent's retries (1 s, 2 s, 4 s, 8 s apart) have
	// backed off so far that, without the socket watch, the next one would
	// come 7 s after the restart, when the restart's SVID has expired. The
	// dev API renews the SVIDs at its restart, as a SPIRE agent does.
	time.Sleep(8 * time.Second)
	require.NoError(t, srv.Start(apiSock))
	restart := srv.CurrentSVIDs()[0].Certificates[0].SerialNumber.String()

	seen := map[string]bool{}
	require.Eventually(t, func() bool {
		seen[onDisk()] = true
		return seen[restart]
	}, 20*time.Second, 20*time.Millisecond, "the SVID issued at the restart was never written (seen %v); logs:\n%s", seen, logs)
	assert.Contains(t, logs.String(), "workload API socket appeared; reconnecting now")
}
