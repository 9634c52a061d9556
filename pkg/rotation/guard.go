package rotation

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"go.uber.org/zap"
)

// The guard has two halves: the guard type below watches the output
// directories with fsnotify and wakes the owning output; the outputRunner
// methods after it decide, with atomicdir.Writer.Diff, whether the change was the
// agent's own write (nothing to do) or someone else's, and restore the
// last files written. Every rule about what counts as tampering and how a
// restore goes lives in this file.

// guard watches the output directories with fsnotify and wakes the owning
// output on any change there. The output decides, with atomicdir.Writer.Check,
// whether the change was its own write (nothing to do) or someone else's.
type guard struct {
	w   *fsnotify.Watcher
	log *zap.Logger

	mu       sync.Mutex
	owner    map[string]*outputRunner          // watched dir -> output
	byRunner map[*outputRunner]map[string]bool // output -> its watched dirs
}

func newGuard(log *zap.Logger) (*guard, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	return &guard{
		w:        w,
		log:      log,
		owner:    map[string]*outputRunner{},
		byRunner: map[*outputRunner]map[string]bool{},
	}, nil
}

// set makes dirs the watched set for r.
func (g *guard) set(r *outputRunner, dirs map[string]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.byRunner[r]
	for d := range old {
		if !dirs[d] {
			// The old versioned directory is gone already; the kernel
			// dropped its watch, so an error here is expected.
			_ = g.w.Remove(d)
			delete(g.owner, d)
		}
	}
	cur := map[string]bool{}
	for d := range dirs {
		if old[d] {
			cur[d] = true
			continue
		}
		if err := g.w.Add(d); err != nil {
			// Not written yet, or deleted: the next write adds it again.
			g.log.Debug("guard: cannot watch", zap.String("dir", d), zap.Error(err))
			continue
		}
		g.owner[d] = r
		cur[d] = true
	}
	g.byRunner[r] = cur
}

// forget stops watching r's directories (r was removed by Apply).
func (g *guard) forget(r *outputRunner) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for d := range g.byRunner[r] {
		if g.owner[d] == r {
			_ = g.w.Remove(d)
			delete(g.owner, d)
		}
	}
	delete(g.byRunner, r)
}

func (g *guard) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-g.w.Events:
			if !ok {
				return
			}
			g.mu.Lock()
			r := g.owner[filepath.Dir(ev.Name)]
			if r == nil {
				r = g.owner[ev.Name] // a watched directory itself went away
			}
			if r != nil && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) && g.owner[ev.Name] == r {
				// fsnotify forgets a removed directory; forget it too so
				// the next refresh adds it again.
				delete(g.owner, ev.Name)
				delete(g.byRunner[r], ev.Name)
			}
			g.mu.Unlock()
			if r != nil {
				r.poke(r.guardCh)
			}
		case err, ok := <-g.w.Errors:
			if !ok {
				return
			}
			// An overflow means we may have missed a change: check everything.
			g.log.Warn("guard: fsnotify error; re-checking all outputs", zap.Error(err))
			g.mu.Lock()
			for r := range g.byRunner {
				r.poke(r.guardCh)
			}
			g.mu.Unlock()
		}
	}
}

func (g *guard) close() error {
	return g.w.Close()
}

// guardDelay is how long the loop lets a burst of events settle before
// guardCheck runs.
func (r *outputRunner) guardDelay() time.Duration {
	r.syncMu.Lock()
	n := r.guardRestores
	r.syncMu.Unlock()
	if n == 0 {
		return max(r.m.cfg.debounce, 20*time.Millisecond)
	}
	// Files that stay wrong right after a restore: back off rather than
	// fight whatever keeps changing them.
	return r.m.backoff(n)
}

// guardCheck compares the disk with the last files written and restores
// them if they were deleted, replaced or altered. The agent's own writes
// pass the check, so they never cause a rewrite.
func (r *outputRunner) guardCheck(ctx context.Context) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if r.lastFiles == nil {
		return
	}
	// Diff is Check with the reason, which the log line needs.
	diff, err := r.writer.Diff(r.lastFiles)
	if diff == "" && err == nil {
		r.guardRestores = 0
		r.refreshWatchesLocked()
		return
	}
	r.guardRestores++
	r.log.Warn("output files were deleted or altered on disk; restoring them",
		zap.String("dir", r.out.Dir), zap.String("diff", diff), zap.NamedError("check_error", err))
	changed, werr := r.restore(r.lastFiles)
	r.hook(writeEvent{Output: r.out.Name, Changed: changed, Err: werr, At: time.Now()})
	if werr != nil {
		r.writeFailed("restore failed", "", fmt.Errorf("restore %s: %w", r.out.Dir, werr))
		r.poke(r.guardCh) // try again after the backoff
		return
	}
	r.refreshWatchesLocked()
	// Only a restore that does not stick counts against the guard: that is
	// the one case (something rewriting the files, or writer and checker
	// disagreeing) where restoring again at once would loop.
	if d, err := r.writer.Diff(r.lastFiles); d == "" && err == nil {
		r.guardRestores = 0
	} else {
		r.log.Warn("restored files still differ; backing off", zap.String("diff", d), zap.NamedError("check_error", err),
			zap.Duration("next_check", r.m.backoff(r.guardRestores)))
	}
	if !changed {
		return
	}
	r.stMu.Lock()
	r.st.LastWrite = time.Now()
	r.st.LastWriteError = ""
	r.stMu.Unlock()
	// The service may have read the altered files (or restarted without
	// them); reload so it runs with what is on disk again.
	r.reloadPending, r.reloadNext = true, 0
	if err := r.runReloads(ctx); err != nil {
		r.failures++
		r.poke(r.pushCh) // the push path owns the reload retry
		return
	}
	if err := r.verifyServed(ctx, r.lastSVID, true); err != nil {
		r.failures++
		r.poke(r.pushCh)
	}
}

// restore writes files back over whatever was done to them. What stands in
// the way (a directory in place of ..data or of a file name, a plain file
// or someone else's link in place of a link, a version directory with
// altered files or swapped for a link) is not deleted at once:
// atomicdir.Writer.Restore moves it aside under a .quarantine- name in the output
// directory, narrowing nothing but an altered version of our own, never
// following a link, and each move is logged for the operator to inspect.
// The quarantine keeps the newest atomicdir.QuarantineKeep entries for at most
// atomicdir.QuarantineMaxAge, so a chmod flood cannot pile up copies of keys.
func (r *outputRunner) restore(files []atomicdir.File) (bool, error) {
	if _, err := os.Lstat(r.out.Dir); errors.Is(err, fs.ErrNotExist) {
		return r.write(files) // recreates the directory; nothing to move aside
	}
	changed, moved, err := r.writer.Restore(files, time.Now())
	for _, m := range moved {
		r.log.Warn("guard: moved aside what stood in the way of the output files; kept for inspection (the newest 3, for at most 24h)",
			zap.String("dir", r.out.Dir), zap.String("path", m.From), zap.String("found", m.What), zap.String("moved_to", m.To))
	}
	return changed, err
}

// refreshWatches points the guard at the output's directory and at the
// directories its files resolve to (the current versioned directory):
// writes through a symlink only show up on the directory holding the
// real file.
func (r *outputRunner) refreshWatches() {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.refreshWatchesLocked()
}

func (r *outputRunner) refreshWatchesLocked() {
	g := r.m.currentGuard()
	if g == nil {
		return
	}
	dirs := map[string]bool{r.out.Dir: true}
	// Only directories inside the output's own: a name someone pointed
	// elsewhere is a difference to restore, not a place to watch.
	real, err := filepath.EvalSymlinks(r.out.Dir)
	if err != nil {
		g.set(r, dirs)
		return
	}
	for _, n := range r.names {
		p, err := filepath.EvalSymlinks(filepath.Join(r.out.Dir, n))
		if err != nil {
			continue
		}
		if d := filepath.Dir(p); strings.HasPrefix(d, real+string(filepath.Separator)) {
			dirs[d] = true
		}
	}
	g.set(r, dirs)
}
