package main_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// TestReloadSignalsOnlyTheSocketsOwnProcess: without --pid and without a
// service manager, `reload` signals the pid the admin socket reports. A
// socket that reports another process's pid (anything can listen on a
// path the operator passes with --admin) must not get that process a
// SIGHUP, which kills most programs (a single-process uvicorn among them):
// only the process that serves the socket is signalled.
func TestReloadSignalsOnlyTheSocketsOwnProcess(t *testing.T) {
	victim := exec.Command("sleep", "60")
	require.NoError(t, victim.Start())
	exited := make(chan error, 1)
	go func() { exited <- victim.Wait() }()
	t.Cleanup(func() { _ = victim.Process.Kill(); <-exited })

	sock := filepath.Join(svidtest.ShortDir(t, "rl"), "admin.sock")
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(admin.Report{PID: victim.Process.Pid})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	res := runCLI(t, "reload", "--admin", sock, "--timeout", "5s")
	require.Equal(t, 1, res.code, "stdout: %s\nstderr: %s", res.stdout, res.stderr)
	require.Contains(t, res.stderr, "not signalling")
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("the reported process was signalled: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}
