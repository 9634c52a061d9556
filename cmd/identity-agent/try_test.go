package main_test

import (
	"context"
	"errors"
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

// Every example's try-it-locally path (examples/*/try.sh, `make try-*`)
// runs here as a user would run it, with the test's binary: real
// redis-server, uvicorn, curl, openssl and the dev Workload API. Each
// script checks what it shows and exits non-zero when something is off;
// afterwards nothing it started may still run.
func TestTryItLocally(t *testing.T) {
	for _, c := range []struct {
		dir   string
		needs []string
	}{
		{"redis", []string{"redis-server", "redis-cli", "openssl", "curl", "python3"}},
		{"uvicorn", []string{"curl", "openssl"}},
		{"traefik", []string{"openssl", "curl", "python3"}},
		{"ollama-macos", []string{"curl", "python3"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			for _, b := range c.needs {
				needBinary(t, b)
			}
			if c.dir == "uvicorn" {
				needUvicorn(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "../../examples/"+c.dir+"/try.sh")
			cmd.Env = append(os.Environ(), "IDENTITY_AGENT="+agentBin, "KEEP=")
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
			out, err := cmd.CombinedOutput()
			pgid := cmd.Process.Pid
			defer func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }()
			require.NoError(t, err, "examples/%s/try.sh:\n%s", c.dir, out)
			assert.True(t, strings.HasSuffix(string(out), "\ntry: OK\n"), "%s", out)
			t.Logf("examples/%s/try.sh:\n%s", c.dir, out)
			// The script stopped everything it started (its process group).
			waitFor(t, 10*time.Second, "processes of try.sh still running", func() (bool, string) {
				err := syscall.Kill(-pgid, 0)
				return errors.Is(err, syscall.ESRCH), "kill -0: " + errString(err)
			})
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "alive"
	}
	return err.Error()
}

// A try-out on a machine without one of its programs stops at once and
// names the package that provides it (issue 22: `make try` on a fresh box
// said only "redis-server is not installed").
func TestTryNamesMissingPackage(t *testing.T) {
	for _, c := range []struct{ dir, missing, pkg string }{
		{"redis", "redis-server", "apt-get install redis-server"},
		{"redis", "redis-cli", "apt-get install redis-tools"},
		{"uvicorn", "curl", "apt-get install curl"},
		{"traefik", "openssl", "apt-get install openssl"},
		{"ollama-macos", "curl", "apt-get install curl"},
	} {
		t.Run(c.dir+"/"+c.missing, func(t *testing.T) {
			// A PATH holding every program of the real one except the missing.
			bin := t.TempDir()
			for _, d := range filepath.SplitList(os.Getenv("PATH")) {
				ents, _ := os.ReadDir(d)
				for _, e := range ents {
					if e.Name() == c.missing {
						continue
					}
					_ = os.Symlink(filepath.Join(d, e.Name()), filepath.Join(bin, e.Name())) // first one wins
				}
			}
			cmd := exec.Command("bash", "../../examples/"+c.dir+"/try.sh")
			cmd.Env = append(os.Environ(), "IDENTITY_AGENT="+agentBin, "KEEP=", "PATH="+bin)
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "%s", out)
			assert.Contains(t, string(out), c.missing+" is not installed: "+c.pkg)
			assert.Contains(t, string(out), "make deps")
		})
	}
}
