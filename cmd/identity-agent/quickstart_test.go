package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readmeQuickStart returns the command lines (comments dropped) of each sh
// block of the README's "Quick start" section, and the comments of each.
func readmeQuickStart(t *testing.T) (blocks [][]string, comments [][]string) {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	s := string(b)
	start := strings.Index(s, "\n## Quick start\n")
	require.GreaterOrEqual(t, start, 0, "README has a Quick start section")
	section := s[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1) {
		var cmds, notes []string
		for _, line := range strings.Split(strings.TrimSpace(m[1]), "\n") {
			cmd, note, _ := strings.Cut(line, "#")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cmds = append(cmds, cmd)
			} else {
				notes = append(notes, strings.TrimSpace(note))
			}
		}
		blocks, comments = append(blocks, cmds), append(comments, notes)
	}
	return blocks, comments
}

// The README's quick start, as written: `make run` is the build and
// scripts/quickstart.sh, and the commands "in another terminal" work
// against it and print what the README shows.
func TestReadmeQuickStart(t *testing.T) {
	needBinary(t, "openssl")
	blocks, comments := readmeQuickStart(t)
	require.Len(t, blocks, 2, "two command blocks")
	assert.Equal(t, []string{"make run", "make test"}, blocks[0])
	mk, err := os.ReadFile("../../Makefile")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^run:\n(\t.*\n)*\t\./scripts/quickstart\.sh\n`, string(mk), "make run runs the quick start script")
	assert.Regexp(t, `(?m)^run:\n\t@echo .*\n\t.*build BUILDFLAGS=-v`, string(mk), "make run says what it builds, and go build -v names each package")

	dir := t.TempDir()
	runDir, base := filepath.Join(dir, "run"), filepath.Join(dir, "qs")
	qs := exec.Command("bash", "scripts/quickstart.sh")
	qs.Dir = "../.."
	qs.Env = append(os.Environ(), "IDENTITY_AGENT="+agentBin, "QUICKSTART_RUN="+runDir, "QUICKSTART_DIR="+base)
	qs.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &syncBuffer{}
	qs.Stdout, qs.Stderr = logs, logs
	require.NoError(t, qs.Start())
	done := make(chan error, 1)
	go func() { done <- qs.Wait() }()
	t.Cleanup(func() {
		// Ctrl-C: SIGINT to the whole process group, as a terminal sends it.
		_ = syscall.Kill(-qs.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-qs.Process.Pid, syscall.SIGKILL)
			<-done
			t.Errorf("quick start did not stop on Ctrl-C; output:\n%s", logs)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("quick start output:\n%s", logs)
		}
	}()

	// Each command of the second block, from the checkout's root, with the
	// test's binary and run directory; status may need a moment.
	var out bytes.Buffer
	for _, line := range blocks[1] {
		line = strings.ReplaceAll(line, "bin/identity-agent", agentBin)
		line = strings.ReplaceAll(line, ".run/", runDir+"/")
		waitFor(t, 30*time.Second, "README command failed: "+line, func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := exec.CommandContext(ctx, "sh", "-c", line)
			c.Dir = "../.."
			b, err := c.CombinedOutput()
			if err == nil {
				out.Write(b)
			}
			return err == nil, fmt.Sprintf("%v: %s", err, b)
		})
	}
	for _, want := range comments[1] {
		assert.Contains(t, out.String(), strings.TrimSpace(want), "the README shows this output")
	}
	assert.Contains(t, logs.String(), "identity-agent quick start: directory "+base+" (linked as "+runDir+"/quickstart)")
	link, err := os.Readlink(filepath.Join(runDir, "quickstart"))
	require.NoError(t, err)
	assert.Equal(t, base, link)
}

// Two checkouts (or users) never share the quick start's directory: it is
// named after the user and the checkout, and printed first.
func TestQuickStartDirectoryPerCheckout(t *testing.T) {
	dirs := map[string]bool{}
	for range 2 {
		checkout := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(checkout, "scripts"), 0o755))
		require.NoError(t, os.MkdirAll(filepath.Join(checkout, "examples"), 0o755))
		for _, f := range []string{"scripts/quickstart.sh", "examples/quickstart.yaml"} {
			b, err := os.ReadFile(filepath.Join("../..", f))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(checkout, f), b, 0o755))
		}
		// A binary that fails at once: only the first line matters here.
		c := exec.Command("bash", "scripts/quickstart.sh")
		c.Dir = checkout
		c.Env = append(os.Environ(), "IDENTITY_AGENT=false")
		out, _ := c.CombinedOutput()
		m := regexp.MustCompile(`^identity-agent quick start: directory (\S+) `).FindSubmatch(out)
		require.NotNil(t, m, "%s", out)
		d := string(m[1])
		t.Cleanup(func() { _ = os.RemoveAll(d) })
		assert.Contains(t, d, fmt.Sprintf("-%d-", os.Getuid()))
		fi, err := os.Stat(d)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
		cfg, err := os.ReadFile(filepath.Join(checkout, ".run", "quickstart.yaml"))
		require.NoError(t, err)
		assert.NotContains(t, string(cfg), "/tmp/identity-agent-quickstart/")
		assert.Contains(t, string(cfg), "socket: unix://"+d+"/agent.sock")
		dirs[d] = true
	}
	assert.Len(t, dirs, 2, "each checkout has its own directory")
}
