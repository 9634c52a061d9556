package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSIGHUPReloadsAndKeepsRunning: SIGHUP must not kill the agent (Go's
// default). It reloads the file: an unchanged file changes nothing, a bad
// one is refused with its line, and the running agent and its outputs
// carry on either way.
func TestSIGHUPReloadsAndKeepsRunning(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "1s")
	proc, logs := startAgentProcess(t, cfg)
	waitStatus(t, cfg, 0)

	require.NoError(t, proc.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "config reloaded: nothing changed") },
		10*time.Second, 20*time.Millisecond, "logs:\n%s", logs)

	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	bad := strings.Replace(string(good), "cert_file: svid.pem", "cert_file: svid.pem\n    no_such_field: 1", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(bad), 0o600))
	require.NoError(t, proc.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "config reload failed") },
		10*time.Second, 20*time.Millisecond, "logs:\n%s", logs)
	assert.Contains(t, logs.String(), filepath.Base(cfg)+":14", "the bad line is named")
	assert.Contains(t, logs.String(), "no_such_field")

	// Still running, WARNING about the refused file until a good one is
	// reloaded; SIGTERM in cleanup still exits 0.
	st := runCLI(t, "status", "--admin", filepath.Join(dir, "admin.sock"))
	require.Equal(t, 1, st.code, "%+v", st)
	require.NoError(t, os.WriteFile(cfg, good, 0o600))
	require.NoError(t, proc.Signal(syscall.SIGHUP))
	waitStatus(t, cfg, 0)
}
