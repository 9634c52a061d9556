package main_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReloadAndStatusReachTheRunningAgentAfterAdminSocketEdit: the unit's
// ExecReload (`reload --config FILE --pid $MAINPID`, with systemd's
// $RUNTIME_DIRECTORY) and `status --config FILE` must reach the running
// agent when the edit moved admin.socket, so the operator sees the
// refusal "admin.socket: cannot change while the agent runs" instead of
// "agent not reachable" (issue 19, bug 3).
func TestReloadAndStatusReachTheRunningAgentAfterAdminSocketEdit(t *testing.T) {
	dir, runDir, cfg, good := recordedAgentSetup(t)
	proc, logs := startAgentProcess(t, cfg)
	waitStatus(t, cfg, 0)
	moved := strings.Replace(string(good), "socket: "+dir+"/admin.sock", "socket: "+dir+"/moved.sock", 1)
	require.NotEqual(t, string(good), moved)
	require.NoError(t, os.WriteFile(cfg, []byte(moved), 0o600))

	st := runCLI(t, "status", "--config", cfg)
	require.Equal(t, 0, st.code, "status must report the running agent, not the edited socket: %+v", st)

	res := runCLI(t, "reload", "--config", cfg, "--pid", fmt.Sprint(proc.Pid))
	require.Equal(t, 2, res.code, "%+v\nagent logs:\n%s", res, logs)
	assert.Contains(t, res.stdout, "admin.socket: cannot change while the agent runs")
	st = runCLI(t, "status", "--config", cfg)
	require.Equal(t, 1, st.code, "%+v", st)
	assert.Contains(t, st.stdout, "config reload failed")

	// How: the record the agent keeps under $RUNTIME_DIRECTORY.
	var rec map[string]any
	data, err := os.ReadFile(filepath.Join(runDir, "agent.json"))
	require.NoError(t, err, "the agent records its admin socket under $RUNTIME_DIRECTORY")
	require.NoError(t, json.Unmarshal(data, &rec))
	assert.Equal(t, filepath.Join(dir, "admin.sock"), rec["admin_socket"])
	assert.EqualValues(t, proc.Pid, rec["pid"])
}

// TestReloadRefusesAnotherAgentsConfig: `reload --config other.yaml`
// where the agent behind other.yaml's socket runs a different file must
// be refused with one line, not reload the agent's own file.
func TestReloadRefusesAnotherAgentsConfig(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	data, err := os.ReadFile(cfg)
	require.NoError(t, err)
	other := filepath.Join(dir, "other.yaml")
	require.NoError(t, os.WriteFile(other, data, 0o600))

	res := runCLI(t, "reload", "--config", other, "--timeout", "10s")
	require.Equal(t, 2, res.code, "%+v", res)
	assert.Empty(t, res.stdout)
	assert.Equal(t, fmt.Sprintf("identity-agent: %s is not the running agent's configuration: the agent at %s runs %s (pass that file, or --admin for another agent)\n",
		other, filepath.Join(dir, "admin.sock"), cfg), res.stderr)

	// Its own file through a symlink is its own file.
	link := filepath.Join(dir, "link.yaml")
	require.NoError(t, os.Symlink(cfg, link))
	res = runCLI(t, "reload", "--config", link, "--timeout", "20s")
	require.Equal(t, 0, res.code, "%+v", res)
	assert.Contains(t, res.stdout, "nothing changed")
}

// recordedAgentSetup prepares what the agent under systemd has: a
// $RUNTIME_DIRECTORY for its record (set for the agent and the CLI alike),
// a dev Workload API and a healthy config; it returns the test directory,
// the runtime directory, the config path and the config's bytes.
func recordedAgentSetup(t *testing.T) (dir, runDir, cfg string, good []byte) {
	t.Helper()
	dir = t.TempDir()
	runDir = filepath.Join(dir, "run")
	require.NoError(t, os.Mkdir(runDir, 0o755))
	t.Setenv("RUNTIME_DIRECTORY", runDir)
	_, apiSock := startDevAPI(t, time.Hour)
	cfg = writeConfig(t, dir, apiSock, "")
	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	return dir, runDir, cfg, good
}
