package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/identity-agent/identity-agent/internal/config"
)

// A configuration file is used only once it has stayed the same for
// SettleInterval: it is read, read again SettleInterval later, and only
// two byte-identical reads of one unchanged file (same inode, size and
// mtime, and no change while each read ran) count. An editor that
// rewrites the file in place (truncate, then write) passes through
// shorter versions that are often valid YAML; a reload that applied one
// would remove outputs and proxies and add them back a moment later.
// Such a writer finishes in well under a millisecond; one that pauses
// longer than SettleInterval in the middle of the file cannot be told
// from one that has finished, which is why the docs ask for a write
// beside the file and a rename.
//
// After settleAttempts reads that never matched the previous one, the
// file is refused (changingMsg): nothing is applied and the running
// configuration carries on.
const (
	SettleInterval = 100 * time.Millisecond
	settleAttempts = 5
)

// changingMsg is the refusal of a file that did not hold still.
var changingMsg = fmt.Sprintf("changing while read (being written?): it must stay unchanged for %v; write the new file beside it and rename it into place", SettleInterval)

// errTorn is a read during which the file changed.
var errTorn = errors.New("changed during the read")

// snapshot is one read of the file and what fstat said of it.
type snapshot struct {
	data []byte
	info os.FileInfo
}

func (s snapshot) same(o snapshot) bool {
	return os.SameFile(s.info, o.info) && s.info.Size() == o.info.Size() &&
		s.info.ModTime().Equal(o.info.ModTime()) && bytes.Equal(s.data, o.data)
}

// readOnce reads path with an fstat before and after; errTorn when the
// two differ or the bytes read are not the size fstat reports.
func readOnce(path string) (snapshot, error) {
	// O_NONBLOCK: opening a FIFO planted at the path must not block the
	// reload; a regular file reads the same with it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return snapshot{}, err
	}
	defer func() { _ = f.Close() }()
	before, err := f.Stat()
	if err != nil {
		return snapshot{}, err
	}
	if !before.Mode().IsRegular() {
		return snapshot{}, errors.New("not a regular file")
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return snapshot{}, err
	}
	after, err := f.Stat()
	if err != nil {
		return snapshot{}, err
	}
	s := snapshot{data: data, info: after}
	if before.Size() != after.Size() || !before.ModTime().Equal(after.ModTime()) || int64(len(data)) != after.Size() {
		return s, errTorn
	}
	return s, nil
}

// readSettled returns the content of path once two reads settle apart
// agree (see SettleInterval). Errors other than the file changing (no
// such file, permission) are returned at once, prefixed with path.
func readSettled(ctx context.Context, path string, settle time.Duration, attempts int) ([]byte, error) {
	prev, err := readOnce(path)
	prevOK := err == nil
	if err != nil && !errors.Is(err, errTorn) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	t := time.NewTimer(settle)
	defer t.Stop()
	for range attempts {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", path, ctx.Err())
		case <-t.C:
		}
		cur, err := readOnce(path)
		if err != nil && !errors.Is(err, errTorn) {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		curOK := err == nil
		if prevOK && curOK && prev.same(cur) {
			return cur.data, nil
		}
		prev, prevOK = cur, curOK
		t.Reset(settle)
	}
	return nil, config.Problems{{File: path, Line: 1, Field: "config", Msg: changingMsg}}
}

// load is Load under ctx (a reload gives up its waits when the agent
// stops).
func load(ctx context.Context, path string, getenv func(string) string, env EnvFunc) (*Plan, error) {
	data, err := readSettled(ctx, path, SettleInterval, settleAttempts)
	if err != nil {
		return nil, err
	}
	return parse(path, data, getenv, env)
}
