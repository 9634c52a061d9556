package fleettest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NeedBinary returns the path of an external program: a skip locally, a
// failure in CI (where scripts/deps.sh must have installed it).
func NeedBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (CI must install it, see scripts/deps.sh): %v", name, err)
		}
		t.Skipf("%s not installed (bash scripts/deps.sh installs it)", name)
	}
	return p
}

// RepoRoot is the repository's top directory (this file is two levels down).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// MainWithAgent is a TestMain: it builds the agent (BuildAgent) into a
// temporary directory named after prefix, sets *bin to its path, runs the
// tests and exits with their code.
func MainWithAgent(m *testing.M, prefix string, bin *string) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		panic(err)
	}
	if *bin, err = BuildAgent(dir); err != nil {
		panic(err)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// BuildAgent builds cmd/identity-agent into dir with the race detector
// (the suite runs with -race, so the build cache already holds every
// package) and returns the binary's path. Call it from TestMain.
// FLEETTEST_RACE=0 builds without it, for measurements (scripts/bench.sh).
func BuildAgent(dir string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("no caller information")
	}
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	bin := filepath.Join(dir, "identity-agent")
	args := []string{"build", "-race", "-o", bin, "./cmd/identity-agent"}
	if os.Getenv("FLEETTEST_RACE") == "0" {
		args = []string{"build", "-o", bin, "./cmd/identity-agent"}
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/identity-agent: %w: %s", err, out)
	}
	return bin, nil
}

// FreePort returns a loopback TCP port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port
}

// Buffer is a goroutine-safe log sink for a child process.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Proc is a child process stopped with SIGTERM when the test ends.
type Proc struct {
	Cmd  *exec.Cmd
	Logs *Buffer
	done chan struct{} // closed once Wait returned
}

// Start runs argv in the background; its output goes to Logs, printed
// when the test fails.
func Start(t testing.TB, name string, argv ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(argv[0], argv[1:]...), Logs: &Buffer{}, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Logs, p.Logs
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		// The exit status is the child's business: tests look at its
		// effects and its logs.
		_ = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Logs)
		}
	})
	return p
}

// Stop sends SIGTERM and waits (10s, then SIGKILL); calling it twice is fine.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
		t.Errorf("%v did not stop on SIGTERM", p.Cmd.Args)
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Result is a finished command.
type Result struct {
	Code           int
	Stdout, Stderr string
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Code, r.Stdout, r.Stderr)
}

// Run runs argv to completion (bounded by timeout) in dir with extra
// environment variables; a non-zero exit is a Result, not a failure.
func Run(t testing.TB, timeout time.Duration, dir string, env []string, argv ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ctx.Err() != nil {
			t.Fatalf("%s timed out after %v:\n%s\n%s", strings.Join(argv, " "), timeout, out.String(), errb.String())
		}
		return Result{ee.ExitCode(), out.String(), errb.String()}
	case err != nil:
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return Result{0, out.String(), errb.String()}
}

// DevAPI starts `identity-agent dev` serving ids on a socket in dir, with
// SVIDs of the given TTL (re-issued at half of it; SIGUSR1 re-issues now),
// and waits for the socket.
func DevAPI(t testing.TB, agent, dir string, ttl time.Duration, ids ...string) (*Proc, string) {
	t.Helper()
	sock := filepath.Join(dir, "workload-api.sock")
	argv := []string{agent, "dev", "--socket", sock, "--ttl", ttl.String()}
	for _, id := range ids {
		argv = append(argv, "--spiffe-id", id)
	}
	p := Start(t, "identity-agent dev", argv...)
	WaitFor(t, 20*time.Second, "dev Workload API socket", func() (bool, string) {
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprint(err, p.Logs)
	})
	return p, sock
}

// Redis starts redis-server with args (loopback, no persistence, dir as
// its directory) and waits until it accepts connections on a unix socket
// it returns.
func Redis(t testing.TB, dir string, args ...string) (*Proc, string) {
	t.Helper()
	NeedBinary(t, "redis-server")
	sock := filepath.Join(dir, "redis.sock")
	argv := append([]string{"redis-server", "--bind", "127.0.0.1", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir}, args...)
	p := Start(t, "redis-server", argv...)
	WaitFor(t, 20*time.Second, "redis-server socket", func() (bool, string) {
		c, err := net.Dial("unix", sock)
		if err == nil {
			_ = c.Close()
		}
		return err == nil, fmt.Sprint(err, p.Logs)
	})
	return p, sock
}

// WaitFor polls cond every 100ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %v; last: %s", what, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// CountAlive is 1 while the process pid exists and is not a zombie.
func CountAlive(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "State:") && !strings.Contains(l, "zombie") {
			return 1
		}
	}
	return 0
}
