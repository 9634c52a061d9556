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

// TestSIGHUPChecksTheConfigAndKeepsRunning: SIGHUP must not kill the agent
// (Go's default). It validates the file again and says whether a restart
// would apply it, naming the bad line when it would not; the running agent
// and its outputs carry on either way.
func TestSIGHUPChecksTheConfigAndKeepsRunning(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "1s")
	proc, logs := startAgentProcess(t, cfg)
	waitStatus(t, cfg, 0)

	require.NoError(t, proc.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "SIGHUP: configuration is valid") },
		10*time.Second, 20*time.Millisecond, "logs:\n%s", logs)

	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	bad := strings.Replace(string(good), "cert_file: svid.pem", "cert_file: svid.pem\n    no_such_field: 1", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(bad), 0o600))
	require.NoError(t, proc.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "SIGHUP: configuration is invalid") },
		10*time.Second, 20*time.Millisecond, "logs:\n%s", logs)
	assert.Contains(t, logs.String(), filepath.Base(cfg)+":14", "the bad line is named")
	assert.Contains(t, logs.String(), "no_such_field")

	// Still running and healthy (status reads the admin socket named in the
	// file, so the good file goes back first); SIGTERM in cleanup still exits 0.
	require.NoError(t, os.WriteFile(cfg, good, 0o600))
	waitStatus(t, cfg, 0)
}
