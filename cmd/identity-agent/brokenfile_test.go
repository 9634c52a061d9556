package main_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStatusAndReloadWithAConfigThatIsNotYAML: an agent started by hand
// (no runtime record) runs F; F is then saved with a YAML syntax error.
// `status --config F` must still reach the agent (it runs the version it
// applied) and grade it, adding the file's problem as a WARNING, never
// UNKNOWN; `reload --config F` must print the line `config validate F`
// prints and exit 2, not blame admin.socket or the socket (issue 22, 2.3
// and 2.8). Fixed again, F is OK.
func TestStatusAndReloadWithAConfigThatIsNotYAML(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "") // the agent and the CLI: no record
	t.Setenv("IDENTITY_AGENT_ADMIN", "")
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	logs := startAgent(t, cfg)
	waitStatus(t, cfg, 0)

	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	// One space short: the outputs item no longer parses as YAML.
	broken := strings.Replace(string(good), "    cert_file: svid.pem", "   cert_file: svid.pem", 1)
	require.NotEqual(t, string(good), broken)
	require.NoError(t, os.WriteFile(cfg, []byte(broken), 0o600))

	val := runCLI(t, "config", "validate", cfg)
	require.Equal(t, 2, val.code, "%+v", val)
	line := strings.TrimSpace(val.stderr)
	require.True(t, strings.HasPrefix(line, cfg+":"), "validate names the file and line: %q", line)
	require.NotContains(t, line, "admin.socket")

	st := runCLI(t, "status", "--config", cfg)
	require.Equal(t, 1, st.code, "a healthy agent with an unapplied broken file is WARNING: %+v\nagent logs:\n%s", st, logs)
	head, _, _ := strings.Cut(st.stdout, "\n")
	assert.Equal(t, "WARNING: config "+line+" (not applied; the agent runs the previous version)", head)
	assert.Contains(t, st.stdout, "svid    spiffe://", "the agent's own report follows")
	assert.NotContains(t, st.stdout, "UNKNOWN")

	js := runCLI(t, "status", "--config", cfg, "--json")
	require.Equal(t, 1, js.code, "%+v", js)
	assert.Contains(t, js.stdout, `"severity": "WARNING"`)

	res := runCLI(t, "reload", "--config", cfg, "--timeout", "10s")
	require.Equal(t, 2, res.code, "%+v", res)
	assert.Equal(t, line+"\n", res.stderr, "reload prints what validate prints")
	assert.NotContains(t, res.stderr+res.stdout, "admin.socket")

	// Nothing was sent: the agent made no reload attempt and is OK once
	// the file is fixed.
	require.NoError(t, os.WriteFile(cfg, good, 0o600))
	st = runCLI(t, "status", "--config", cfg)
	require.Equal(t, 0, st.code, "%+v", st)
	assert.True(t, strings.HasPrefix(st.stdout, "OK"), "%+v", st)
	assert.NotContains(t, st.stdout, "reload", "no reload was asked of the agent")
}

// TestStatusAndExecReloadWithABrokenAdminBlock: under systemd the agent's
// runtime record finds it even when the syntax error is in FILE's admin:
// block itself; status still says the file is broken (it said OK before),
// and the unit's ExecReload= (`reload --config FILE --pid PID`) is refused
// with the validate line without a SIGHUP reaching the agent.
func TestStatusAndExecReloadWithABrokenAdminBlock(t *testing.T) {
	dir, _, cfg, good := recordedAgentSetup(t)
	proc, logs := startAgentProcess(t, cfg)
	waitStatus(t, cfg, 0)
	sock := "  socket: " + dir + "/admin.sock\n"
	broken := strings.Replace(string(good), sock, sock+"  other: [unclosed\n", 1)
	require.NotEqual(t, string(good), broken)
	require.NoError(t, os.WriteFile(cfg, []byte(broken), 0o600))
	val := runCLI(t, "config", "validate", cfg)
	require.Equal(t, 2, val.code, "%+v", val)
	line := strings.TrimSpace(val.stderr)

	st := runCLI(t, "status", "--config", cfg)
	require.Equal(t, 1, st.code, "%+v\nagent logs:\n%s", st, logs)
	assert.True(t, strings.HasPrefix(st.stdout, "WARNING: config "+line+" (not applied; the agent runs the previous version)\n"), "%+v", st)

	res := runCLI(t, "reload", "--config", cfg, "--pid", fmt.Sprint(proc.Pid), "--timeout", "10s")
	require.Equal(t, 2, res.code, "%+v", res)
	assert.Equal(t, line+"\n", res.stderr)
	rep := statusJSON(t, cfg)
	assert.EqualValues(t, 0, rep["config"].(map[string]any)["reloads"], "no SIGHUP reached the agent")
}
