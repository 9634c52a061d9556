package agent

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/config"
)

// A file that holds still is read once it has for the settle interval.
func TestReadSettledStableFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte("a: 1\n"), 0o600))
	start := time.Now()
	data, err := readSettled(context.Background(), p, SettleInterval, settleAttempts)
	require.NoError(t, err)
	assert.Equal(t, "a: 1\n", string(data))
	assert.GreaterOrEqual(t, time.Since(start), SettleInterval, "two reads, the settle interval apart")
}

// rewrite keeps rewriting p in place (truncate, then two writes) until
// the test ends.
func rewrite(t *testing.T, p string) {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(stop); wg.Wait() })
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = f.WriteString("outputs: []\n")
			time.Sleep(time.Millisecond)
			_, _ = f.WriteString("# " + strings.Repeat("x", i%7) + "\n")
			_ = f.Close()
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// A file being rewritten all along is refused with one line naming it,
// as a config.Problem (FILE:LINE: field: problem), after the attempts.
func TestReadSettledRefusesAFileThatKeepsChanging(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte("outputs: []\n"), 0o600))
	rewrite(t, p)
	// The writer rewrites every ~6 ms; a settle interval 40 times that keeps
	// a starved writer (a loaded 2-core box) from looking like a still file.
	_, err := readSettled(context.Background(), p, 250*time.Millisecond, 5)
	require.Error(t, err)
	var ps config.Problems
	require.ErrorAs(t, err, &ps)
	assert.Equal(t, p+":1: config: changing while read (being written?): it must stay unchanged for 100ms; write the new file beside it and rename it into place", err.Error())
}

// The same content rewritten is still a change: the mtime moved, so the
// file was written between the reads.
func TestReadSettledSeesARewriteOfTheSameBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte("a: 1\n"), 0o600))
	first, err := readOnce(p)
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, os.WriteFile(p, []byte("a: 1\n"), 0o600))
	second, err := readOnce(p)
	require.NoError(t, err)
	assert.False(t, first.same(second))
	// A rename over it is another file (inode), the same bytes or not.
	tmp := p + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte("a: 1\n"), 0o600))
	require.NoError(t, os.Chtimes(tmp, second.info.ModTime(), second.info.ModTime()))
	require.NoError(t, os.Rename(tmp, p))
	third, err := readOnce(p)
	require.NoError(t, err)
	assert.False(t, second.same(third))
}

// A file replaced by a rename while it is read settles on the new one.
func TestReadSettledAfterARename(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte("old: 1\n"), 0o600))
	go func() {
		time.Sleep(SettleInterval / 2)
		tmp := filepath.Join(dir, "agent.yaml.tmp")
		_ = os.WriteFile(tmp, []byte("new: 1\n"), 0o600)
		_ = os.Rename(tmp, p)
	}()
	data, err := readSettled(context.Background(), p, SettleInterval, settleAttempts)
	require.NoError(t, err)
	assert.Equal(t, "new: 1\n", string(data))
}

// Other errors come at once, with the path; a directory or a FIFO (which
// would block the reload) is not a configuration file.
func TestReadSettledOtherErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := readSettled(context.Background(), filepath.Join(dir, "missing.yaml"), time.Hour, 5)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), filepath.Join(dir, "missing.yaml")+": ")
	_, err = readSettled(context.Background(), dir, time.Hour, 5)
	require.EqualError(t, err, dir+": not a regular file")
	fifo := filepath.Join(dir, "fifo.yaml")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	_, err = readSettled(context.Background(), fifo, time.Hour, 5)
	require.EqualError(t, err, fifo+": not a regular file")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(p, []byte("a: 1\n"), 0o600))
	_, err = readSettled(ctx, p, time.Hour, 5)
	require.True(t, errors.Is(err, context.Canceled), "a stopping agent does not wait: %v", err)
}
