package main_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Issue 9.4, with the real binaries: `identity-agent dev --ttl 8s` and an
// agent with the default settings (no rotation.expiry_window). A healthy
// agent is OK at every look across several rotations; once the Workload
// API is gone its rotation becomes overdue (WARNING, naming the rule) and
// then its SVID expires (CRITICAL). The watchdog logs each of those states
// once, not on every check.
func TestStatusOKWithShortSVIDsWarnsWhenRotationOverdue(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "dev.sock")
	dev := exec.Command(agentBin, "dev", "--socket", sock, "--ttl", "8s", "--spiffe-id", "spiffe://example.org/svc")
	var devLogs syncBuffer
	dev.Stdout, dev.Stderr = &devLogs, &devLogs
	require.NoError(t, dev.Start())
	devDone := make(chan struct{})
	go func() { _ = dev.Wait(); close(devDone) }()
	t.Cleanup(func() { _ = dev.Process.Kill(); <-devDone })

	cfg := writeConfig(t, dir, sock, "")
	logs := startAgent(t, cfg)
	r := waitStatus(t, cfg, 0)
	require.True(t, strings.HasPrefix(r.stdout, "OK\n"), r.stdout)

	// 12s: three half-life rotations of an 8s SVID. Every look is OK.
	serials := map[string]bool{}
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		r := runCLI(t, "status", "--config", cfg)
		require.Equal(t, 0, r.code, "a healthy agent with 8s SVIDs must be OK:\n%s\nagent logs:\n%s", r.stdout, logs)
		for _, f := range strings.Fields(r.stdout) {
			if s, ok := strings.CutPrefix(f, "serial="); ok {
				serials[s] = true
			}
		}
	}
	assert.GreaterOrEqual(t, len(serials), 3, "the SVIDs rotated meanwhile: %v", serials)

	// The Workload API goes away: rotation is overdue before the SVID expires.
	require.NoError(t, dev.Process.Signal(syscall.SIGTERM))
	<-devDone
	var overdue result
	require.Eventually(t, func() bool {
		overdue = runCLI(t, "status", "--config", cfg)
		return overdue.code == 1 && strings.Contains(overdue.stdout, "output svc on disk expires in")
	}, 20*time.Second, 100*time.Millisecond, "never WARNING for the overdue rotation; last:\n%s", overdue.stdout)
	assert.Contains(t, overdue.stdout, "rotation overdue: less than a third of the lifetime left")
	assert.Contains(t, overdue.stdout, "unreachable")

	r = waitStatus(t, cfg, 2)
	assert.Contains(t, r.stdout, "output svc on disk expired")

	// A few more watchdog checks (one per second at this TTL) log nothing new.
	time.Sleep(3 * time.Second)
	out := logs.String()
	assert.Equal(t, 1, strings.Count(out, "Workload API unreachable and the SVID on disk expires soon"), out)
	assert.Equal(t, 1, strings.Count(out, "Workload API unreachable and the SVID on disk has expired"), out)
}
