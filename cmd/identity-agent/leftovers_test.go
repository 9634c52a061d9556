package main_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStatusUnreachableNamesTheX509Stream: with no JWT output, an agent
// whose Workload API went away is WARNING "Workload API ... unreachable"
// for the X.509 context stream, the one the grade is about; the JWT bundle
// stream fails at the same moment and its error, recorded later, used to
// replace the X.509 one in the reason (issue 22, 2.9).
func TestStatusUnreachableNamesTheX509Stream(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	t.Setenv("IDENTITY_AGENT_ADMIN", "")
	dir := t.TempDir()
	api, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	logs := startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	api.Stop()

	// Both streams retry (go-spiffe, then our watch loop) and record an
	// error on each failure; look for a while, at every retry.
	looks := 0
	for end := time.Now().Add(8 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st := runCLI(t, "status", "--config", cfg)
		if st.code != 1 {
			continue
		}
		head, _, _ := strings.Cut(st.stdout, "\n")
		if !strings.Contains(head, "unreachable") {
			continue
		}
		looks++
		require.NotContains(t, head, "JWT bundle", "status leads with the JWT bundle stream on a config without JWT outputs:\n%s\nagent logs:\n%s", st.stdout, logs)
		require.Contains(t, head, "X.509", "%s", st.stdout)
	}
	require.Positive(t, looks, "status never said unreachable; agent logs:\n%s", logs)
	assert.Contains(t, logs.String(), "JWT bundle stream", "the JWT stream's failure is still logged")
}

// TestStatusBrokenAdminBlockWithoutRecordIsUnknown: an agent started by
// hand (no runtime record) runs F; F's admin: block is then saved broken.
// Nothing names the agent's socket any more (the default socket is not
// it), so status cannot reach it: UNKNOWN (exit 3), naming both why (the
// socket tried) and the file's line, as `config validate` prints it.
func TestStatusBrokenAdminBlockWithoutRecordIsUnknown(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	t.Setenv("IDENTITY_AGENT_ADMIN", "")
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	sock := "  socket: " + dir + "/admin.sock\n"
	broken := strings.Replace(string(good), sock, sock+"  other: [unclosed\n", 1)
	require.NotEqual(t, string(good), broken)
	require.NoError(t, os.WriteFile(cfg, []byte(broken), 0o600))
	val := runCLI(t, "config", "validate", cfg)
	require.Equal(t, 2, val.code, "%+v", val)
	line := strings.TrimSpace(val.stderr)

	st := runCLI(t, "status", "--config", cfg)
	t.Logf("status: %s", st.stdout)
	require.Equal(t, 3, st.code, "%+v", st)
	require.True(t, strings.HasPrefix(st.stdout, "UNKNOWN: "), "%+v", st)
	assert.Contains(t, st.stdout, "config "+line+" (not applied; pass --admin SOCKET to reach the agent)\n", "the file's problem, as validate says it")
	assert.Equal(t, 1, strings.Count(st.stdout, "\n"), "one line: %q", st.stdout)
	assert.Empty(t, st.stderr)
	js := runCLI(t, "status", "--config", cfg, "--json")
	require.Equal(t, 3, js.code, "%+v", js)
	assert.Contains(t, js.stdout, `"severity":"UNKNOWN"`)

	// --admin reaches it meanwhile, as the line says.
	require.Equal(t, 0, runCLI(t, "status", "--admin", dir+"/admin.sock").code)

	// Fixed, the agent is found again: nothing was lost.
	require.NoError(t, os.WriteFile(cfg, good, 0o600))
	require.Equal(t, 0, runCLI(t, "status", "--config", cfg).code)
}
