package svid

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// unixSocketPath returns the file system path of a unix:// Workload API
// address, or "" for any other address.
func unixSocketPath(addr string) string {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "unix" {
		return ""
	}
	p := u.Path
	if p == "" {
		p = u.Opaque
	}
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// socketWatcher reports when a unix socket path is created, e.g. by a
// SPIRE agent that restarted. Waiting out a reconnect backoff of up to
// retry_max instead could let a short-lived SVID issued at the agent's
// restart expire unused. It watches the socket's directory with fsnotify,
// or, while that directory does not exist, the nearest ancestor that does,
// moving down as the missing directories appear.
type socketWatcher struct {
	path string
	log  *zap.Logger
	w    *fsnotify.Watcher
}

func newSocketWatcher(path string, log *zap.Logger) (*socketWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &socketWatcher{path: path, log: log, w: w}, nil
}

// run sends on appeared (without blocking: it has a buffer) every time the
// socket path is created, until ctx ends; then it closes the watcher.
func (sw *socketWatcher) run(ctx context.Context, appeared chan<- struct{}) {
	defer func() { _ = sw.w.Close() }()
	dir := filepath.Dir(sw.path)
	watched := ""
	arm := func() {
		if watched != "" {
			_ = sw.w.Remove(watched)
			watched = ""
		}
		for d := dir; ; d = filepath.Dir(d) {
			err := sw.w.Add(d)
			if err == nil {
				watched = d
				return
			}
			if !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
				sw.log.Warn("cannot watch for the Workload API socket; reconnects wait for the backoff",
					zap.String("dir", d), zap.Error(err))
				return
			}
		}
	}
	arm()
	for {
		select {
		case <-ctx.Done():
			return
		case err, ok := <-sw.w.Errors:
			if !ok {
				return
			}
			sw.log.Debug("socket watch", zap.Error(err))
		case ev, ok := <-sw.w.Events:
			if !ok {
				return
			}
			switch {
			case ev.Name == sw.path && ev.Has(fsnotify.Create) && watched == dir:
				select {
				case appeared <- struct{}{}:
				default:
				}
			case ev.Name == watched && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)):
				// The watched directory itself went away: watch higher up.
				arm()
				// It may be back already, socket included.
				sw.checkNow(watched == dir, appeared)
			case watched != dir && ev.Has(fsnotify.Create) && isOnPath(ev.Name, dir):
				// A missing directory on the way appeared: watch lower down.
				arm()
				sw.checkNow(watched == dir, appeared)
			}
		}
	}
}

// checkNow covers a socket created between a directory's appearance and
// the watch on it.
func (sw *socketWatcher) checkNow(atDir bool, appeared chan<- struct{}) {
	if !atDir {
		return
	}
	if fi, err := os.Lstat(sw.path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		select {
		case appeared <- struct{}{}:
		default:
		}
	}
}

// isOnPath reports whether p is dir or one of its ancestors.
func isOnPath(p, dir string) bool {
	return p == dir || strings.HasPrefix(dir, p+string(filepath.Separator))
}
