package rotation

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// Change edits a Manager's set of outputs; Apply applies it as a whole.
type Change struct {
	// Remove names outputs to stop. Their files stay on disk: a service
	// may still be reading them, and deleting identity material is an
	// operator's decision, not a side effect of a config edit.
	Remove []string
	// Add are outputs to start. An Add whose Name is also in Remove
	// replaces that output: the new one writes at once, and when its files
	// come out the same as those on disk (content, mode, owner) it writes
	// nothing and runs no reload.
	Add []Output
}

// empty reports whether c changes nothing.
func (c Change) empty() bool { return len(c.Remove) == 0 && len(c.Add) == 0 }

// Apply changes the set of outputs without touching the outputs the
// change does not name: their loops, files, timers and metrics carry on.
// It is all or nothing: the resulting set is validated (names and
// directories unique, every added output valid) and the added outputs'
// directories are checked before anything stops, so an error leaves the
// Manager exactly as it was. Apply works before Start and while started;
// it returns once removed outputs have stopped and added ones run.
func (m *Manager) Apply(ctx context.Context, c Change) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.empty() {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("rotation: Apply after Close")
	}
	return m.apply(c, m.loops)
}

// OutputError is a problem with one output that NewManager or Apply
// refused, named so a caller can point at where that output is configured.
type OutputError struct {
	// Output is the output's Name; Field, when known, the setting at fault
	// ("dir", "name").
	Output, Field string
	Err           error
}

func (e *OutputError) Error() string { return fmt.Sprintf("rotation: output %q: %v", e.Output, e.Err) }
func (e *OutputError) Unwrap() error { return e.Err }

// runners returns the current outputs; the slice is never modified in
// place (apply builds a new one), so callers may range over it unlocked.
func (m *Manager) runners() []*outputRunner {
	m.outsMu.RLock()
	defer m.outsMu.RUnlock()
	return m.outs
}

// newRunners validates outputs as one set together with keep (outputs
// that stay) and builds their runners; it starts nothing. Every check
// comes before the first directory is created, and a directory that
// cannot be created removes those this call made (parents included), so
// a refused set leaves the file system as it found it.
func (m *Manager) newRunners(outputs []Output, keep []*outputRunner) ([]*outputRunner, error) {
	names := map[string]bool{}
	dirs := map[string]string{}
	for _, r := range keep {
		names[r.out.Name] = true
		dirs[r.out.Dir] = r.out.Name
	}
	normalized := make([]Output, 0, len(outputs))
	for i, o := range outputs {
		n, err := o.normalize()
		if err != nil {
			if o.Name == "" {
				return nil, fmt.Errorf("rotation: outputs[%d]: %w", i, err)
			}
			return nil, &OutputError{Output: o.Name, Err: err}
		}
		if names[n.Name] {
			return nil, &OutputError{Output: n.Name, Field: "name", Err: errors.New("name used twice")}
		}
		names[n.Name] = true
		// Two writers swapping links in one directory would undo each
		// other's files.
		if prev, ok := dirs[n.Dir]; ok {
			return nil, &OutputError{Output: n.Name, Field: "dir", Err: fmt.Errorf("dir %s is also used by output %q", n.Dir, prev)}
		}
		dirs[n.Dir] = n.Name
		normalized = append(normalized, n)
	}
	var created []string // top-down per output
	outs := make([]*outputRunner, 0, len(normalized))
	for _, n := range normalized {
		made := missingDirs(n.Dir)
		w, err := atomicdir.NewWriter(n.Dir, atomicdir.WithOwner(n.Owner))
		created = append(created, made...)
		if err != nil {
			// Deepest first; a directory something else filled meanwhile
			// is not empty and stays.
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.Remove(created[i])
			}
			return nil, &OutputError{Output: n.Name, Field: "dir", Err: err}
		}
		outs = append(outs, newOutputRunner(m, n, w))
	}
	return outs, nil
}

// missingDirs lists dir and those of its parents that do not exist yet,
// outermost first: what creating dir would create.
func missingDirs(dir string) []string {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	slices.Reverse(missing)
	return missing
}

// apply swaps the set; loops is nil before Start. The caller holds m.mu.
func (m *Manager) apply(c Change, loops *loops) error {
	current := m.runners()
	remove := map[string]bool{}
	for _, name := range c.Remove {
		if !slices.ContainsFunc(current, func(r *outputRunner) bool { return r.out.Name == name }) {
			return fmt.Errorf("rotation: remove output %q: no such output", name)
		}
		remove[name] = true
	}
	var keep, gone []*outputRunner
	for _, r := range current {
		if remove[r.out.Name] {
			gone = append(gone, r)
		} else {
			keep = append(keep, r)
		}
	}
	added, err := m.newRunners(c.Add, keep)
	if err != nil {
		return err
	}
	// Stop the old runners before the new ones start: a replaced output's
	// old and new runner must never write the same directory at once.
	for _, r := range gone {
		if loops != nil {
			loops.stop(r)
		}
		r.stopTimers()
		if g := m.currentGuard(); g != nil {
			g.forget(r)
		}
	}
	next := append(slices.Clone(keep), added...)
	m.outsMu.Lock()
	m.outs = next
	m.outsMu.Unlock()
	replaced := map[string]bool{}
	for _, r := range added {
		replaced[r.out.Name] = true
	}
	for _, r := range gone {
		if !replaced[r.out.Name] {
			m.metrics.forget(r.out.Name)
		}
	}
	if loops != nil {
		for _, r := range added {
			loops.start(r)
		}
	}
	return nil
}

// loops owns the runners' goroutines once the Manager started: each loop
// has its own cancel, so Apply can stop one output and leave the others
// running.
type loops struct {
	parent context.Context
	wg     *sync.WaitGroup
	byRun  map[*outputRunner]loopHandle
}

type loopHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newLoops(ctx context.Context, wg *sync.WaitGroup) *loops {
	return &loops{parent: ctx, wg: wg, byRun: map[*outputRunner]loopHandle{}}
}

// start runs r's loop, points the guard at it, and asks for a first write
// of what the Source already holds, without waiting for the next push.
func (l *loops) start(r *outputRunner) {
	ctx, cancel := context.WithCancel(l.parent)
	h := loopHandle{cancel: cancel, done: make(chan struct{})}
	l.byRun[r] = h
	r.refreshWatches()
	l.wg.Go(func() {
		defer close(h.done)
		r.loop(ctx)
	})
	r.poke(r.pushCh)
}

// stop cancels r's loop (a reload in progress is cancelled with it) and
// waits until it has returned.
func (l *loops) stop(r *outputRunner) {
	h, ok := l.byRun[r]
	if !ok {
		return
	}
	delete(l.byRun, r)
	h.cancel()
	<-h.done
}
