package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostileAdmin serves a status document of n bytes (a JSON string that
// never ends before n) on a unix socket, as a process that took the admin
// socket path could.
func hostileAdmin(t *testing.T, sock string, n int64, contentLength bool) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	require.NoError(t, err)
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if contentLength {
			w.Header().Set("Content-Length", fmt.Sprint(n))
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"version":"`)
		for sent := int64(12); sent < n; sent += int64(len(chunk)) {
			if _, err := w.Write(chunk[:min(int64(len(chunk)), n-sent)]); err != nil {
				return
			}
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// sleeperPID is a process reload may signal without harm, should the
// check under test fail and the reload go ahead.
func sleeperPID(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return fmt.Sprint(cmd.Process.Pid)
}

// runMeasured is runCLI that also returns the child's peak RSS in MiB.
func runMeasured(t *testing.T, args ...string) (result, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		require.NoError(t, err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}, ru.Maxrss >> 10 // KiB on Linux
}

// TestStatusAndReloadBoundWhatTheSocketAnswers is issue 18 item 5: a
// process answering on the admin socket path with a 400 MB status
// document costs `status` and `reload` a few MiB, and each says so in one
// line (before: 1.77 GB and 1.36 GB RSS).
func TestStatusAndReloadBoundWhatTheSocketAnswers(t *testing.T) {
	for _, withLength := range []bool{false, true} {
		t.Run(fmt.Sprintf("content-length=%t", withLength), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "admin.sock")
			hostileAdmin(t, sock, 400<<20, withLength)

			r, rss := runMeasured(t, "status", "--admin", sock)
			assert.Equal(t, 3, r.code, "%+v", r)
			assert.Equal(t, 1, strings.Count(r.stdout, "\n"), "one line: %q", r.stdout)
			assert.Contains(t, r.stdout, "over the 4 MiB limit")
			assert.Less(t, rss, int64(150), "status peak RSS (MiB)")

			r, rss = runMeasured(t, "reload", "--admin", sock, "--pid", sleeperPID(t), "--timeout", "10s")
			assert.Equal(t, 1, r.code, "%+v", r)
			assert.Contains(t, r.stderr, "over the 4 MiB limit")
			assert.Less(t, rss, int64(150), "reload peak RSS (MiB)")
		})
	}
}

// TestStatusTrustsOnlyRootOrItsOwnUser: a socket at the admin path served
// by another user is refused before a byte of its answer is read. The
// other user is a real agent run as nobody.
func TestStatusTrustsOnlyRootOrItsOwnUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run an agent as another user")
	}
	// nobody must reach the binary, its config and a socket directory.
	require.NoError(t, os.Chmod(filepath.Dir(agentBin), 0o755))
	dir, err := os.MkdirTemp("", "ia-peer-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o777))
	sock := filepath.Join(dir, "admin.sock")
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s/api.sock
admin:
  socket: %[1]s/admin.sock
outputs:
  - {name: svc, dir: %[1]s/out, cert_file: svid.pem, key_file: key.pem}
`, dir)), 0o644))
	runAgentAsNobody(t, cfg, sock)

	r := runCLI(t, "status", "--admin", sock)
	assert.Equal(t, 3, r.code, "%+v", r)
	assert.Equal(t, fmt.Sprintf("UNKNOWN: admin socket %s: served by uid 65534, which is neither root nor this user (uid 0) and does not own the socket's directory: not trusting its answer\n", sock), r.stdout)
	r = runCLI(t, "reload", "--admin", sock, "--pid", sleeperPID(t))
	assert.Equal(t, 1, r.code, "%+v", r)
	assert.Contains(t, r.stderr, "served by uid 65534")
}

// TestStatusTrustsTheServiceUserInItsOwnDir: root's `status` reaches an
// agent run as another user (as the shipped units run it) when the socket
// lives in that user's own directory on a path only root can change, the
// /run/identity-agent layout; the same agent's socket in a directory that
// others can write is refused (TestStatusTrustsOnlyRootOrItsOwnUser).
func TestStatusTrustsTheServiceUserInItsOwnDir(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run an agent as another user")
	}
	require.NoError(t, os.Chmod(filepath.Dir(agentBin), 0o755))
	// Root-owned, 0755, not under /tmp's sticky bit alone: like /run.
	base, err := os.MkdirTemp("/var/lib", "ia-svcdir-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	run := filepath.Join(base, "run")
	require.NoError(t, os.Mkdir(run, 0o755))
	require.NoError(t, os.Chown(run, 65534, 65534))
	sock := filepath.Join(run, "admin.sock")
	cfg := filepath.Join(base, "agent.yaml")
	// No Workload API needed: status answers (CRITICAL, no SVID yet) all the same.
	apiSock := filepath.Join(base, "no-api.sock")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s
allow_empty: true
`, apiSock, sock)), 0o644))
	runAgentAsNobody(t, cfg, sock)

	r := runCLI(t, "status", "--admin", sock)
	assert.NotEqual(t, 3, r.code, "root's status must reach the service user's agent: %+v", r)
	assert.NotContains(t, r.stdout, "not trusting")

	// The same directory made writable by others: no longer its own.
	require.NoError(t, os.Chmod(run, 0o777))
	r = runCLI(t, "status", "--admin", sock)
	assert.Equal(t, 3, r.code, "%+v", r)
	assert.Contains(t, r.stdout, "not trusting its answer")
}

// runAgentAsNobody runs `identity-agent run --config cfg` as uid 65534 and
// waits until its admin socket sock exists; the agent is killed at cleanup.
func runAgentAsNobody(t *testing.T, cfg, sock string) {
	t.Helper()
	cmd := exec.Command(agentBin, "run", "--config", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 30*time.Second, "the agent run as nobody listens", func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, logs.String()
	})
}
