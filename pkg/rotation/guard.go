package rotation

import (
	"context"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// guard watches the output directories with fsnotify and wakes the owning
// output on any change there. The output decides, with DirWriter.Check,
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
