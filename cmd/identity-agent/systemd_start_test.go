package main_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// notifyListener plays systemd's end of $NOTIFY_SOCKET: it records every
// message the agent sends and creates readyFile at the first READY=1, so a
// systemctl stand-in can tell whether the agent's start job is over.
type notifyListener struct {
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T, readyFile string) (*notifyListener, string) {
	t.Helper()
	sock := filepath.Join(svidtest.ShortDir(t, "nfy"), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	n := &notifyListener{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msg := string(buf[:k])
			n.mu.Lock()
			n.msgs = append(n.msgs, msg)
			n.mu.Unlock()
			if strings.Contains(msg, "READY=1") {
				_ = os.WriteFile(readyFile, nil, 0o600)
			}
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); <-done })
	return n, sock
}

func (n *notifyListener) messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// systemdStandIn puts a systemctl on PATH that logs its calls, answers
// is-active from the existence of <dir>/active, and records for each
// restart whether the agent had sent READY=1 by then: a real systemd
// would queue that restart behind the agent's own start job (the unit is
// ordered After=identity-agent.service) and the start would deadlock.
func systemdStandIn(t *testing.T, dir string) (log, ready, active string) {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	log, ready, active = filepath.Join(dir, "systemctl.log"), filepath.Join(dir, "ready"), filepath.Join(dir, "active")
	stub := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]s
case "$1" in
  is-active) [ -f %[3]s ] && exit 0; exit 3 ;;
  restart) if [ -f %[2]s ]; then echo "restart after READY=1" >> %[1]s; else echo "restart BEFORE READY=1" >> %[1]s; fi; exit 0 ;;
esac
echo "systemctl stand-in: unexpected: $*" >&2
exit 1
`, log, ready, active)
	require.NoError(t, os.WriteFile(filepath.Join(bin, "systemctl"), []byte(stub), 0o755))
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	return log, ready, active
}

func writeConfigWithRestart(t *testing.T, dir, apiSock string) string {
	t.Helper()
	cfg := writeConfig(t, dir, apiSock, "")
	data, err := os.ReadFile(cfg)
	require.NoError(t, err)
	data = append(data, []byte("    reload:\n      - systemd: {unit: api.service, action: restart}\n")...)
	require.NoError(t, os.WriteFile(cfg, data, 0o600))
	return cfg
}

// TestStartReadyBeforeFirstReloads: at start the agent writes the files,
// sends READY=1, and only then runs the first write's reloads, so a
// `systemctl restart api.service` for a unit ordered after the agent does
// not wait on the agent's own start job (issue 19, bug 1).
func TestStartReadyBeforeFirstReloads(t *testing.T) {
	dir := t.TempDir()
	log, ready, active := systemdStandIn(t, dir)
	require.NoError(t, os.WriteFile(active, nil, 0o600))
	notify, sock := listenNotify(t, ready)
	t.Setenv("NOTIFY_SOCKET", sock)
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfigWithRestart(t, dir, apiSock)
	logs := startAgent(t, cfg)

	require.Eventually(t, func() bool { return strings.Contains(strings.Join(readLines(log), "\n"), "restart ") },
		30*time.Second, 20*time.Millisecond, "no restart; agent logs:\n%s", logs)
	got := readLines(log)
	assert.NotContains(t, got, "restart BEFORE READY=1", "the first reload ran before READY=1; agent logs:\n%s", logs)
	assert.Equal(t, []string{"is-active --quiet api.service", "restart api.service", "restart after READY=1"}, got)
	_, err := os.Stat(filepath.Join(dir, "out", "svid.pem"))
	require.NoError(t, err, "files are on disk")
	assert.Contains(t, strings.Join(notify.messages(), "\n"), "READY=1")
}

// TestStartSkipsReloadOfInactiveUnit: at start (the boot case: the unit
// waits for its start job, ordered after the agent) a unit that is not
// active is not restarted; it reads the new files when it starts. Later
// rotations restart it as configured.
func TestStartSkipsReloadOfInactiveUnit(t *testing.T) {
	dir := t.TempDir()
	log, ready, _ := systemdStandIn(t, dir)
	_, sock := listenNotify(t, ready)
	t.Setenv("NOTIFY_SOCKET", sock)
	srv, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfigWithRestart(t, dir, apiSock)
	logs := startAgent(t, cfg)

	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "reload skipped at start") },
		30*time.Second, 20*time.Millisecond, "agent logs:\n%s", logs)
	assert.Equal(t, []string{"is-active --quiet api.service"}, readLines(log))
	waitStatus(t, cfg, 0)

	require.NoError(t, srv.RotateSVIDs())
	require.Eventually(t, func() bool { return len(readLines(log)) >= 3 },
		30*time.Second, 20*time.Millisecond, "no restart after the rotation; agent logs:\n%s", logs)
	assert.Equal(t, []string{"is-active --quiet api.service", "restart api.service", "restart after READY=1"}, readLines(log))
}

// TestAgentFeedsTheWatchdog: under a unit with WatchdogSec= ($WATCHDOG_USEC)
// the agent sends WATCHDOG=1, from its start on (waiting for the Workload
// API included), at half the interval.
func TestAgentFeedsTheWatchdog(t *testing.T) {
	dir := t.TempDir()
	notify, sock := listenNotify(t, filepath.Join(dir, "ready"))
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "400000")
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	logs := startAgent(t, cfg)
	require.Eventually(t, func() bool {
		return strings.Count(strings.Join(notify.messages(), "\n"), "WATCHDOG=1") >= 3
	}, 30*time.Second, 20*time.Millisecond, "agent logs:\n%s", logs)
}
