package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Start keeps the outputs up to date in background goroutines and returns
// once they run: it writes on every push from the Source (debounced), runs
// reloads, retries failures with backoff, refreshes JWT-SVIDs, guards the
// files and watches expiry. The goroutines stop when ctx is done or at
// Close, which waits for them. The caller starts the Source; Start does
// not wait for it to be ready. A Manager starts once; only a guard that
// cannot be set up (no inotify/kqueue) is an error.
func (m *Manager) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return errors.New("rotation: Start after Close")
	case m.started:
		return errors.New("rotation: already started")
	}
	var g *guard
	if m.cfg.guard {
		var err error
		if g, err = newGuard(m.log); err != nil {
			return fmt.Errorf("rotation: guard: %w", err)
		}
	}
	m.started = true
	ctx, m.cancel = context.WithCancel(ctx)
	m.running.Store(true)

	// Subscribe before the first write so no push falls in between.
	updates, unsubscribe := m.src.Subscribe()
	if g != nil {
		m.setGuard(g)
		m.wg.Go(func() { g.run(ctx) })
	}
	m.loops = newLoops(ctx, &m.wg)
	for _, r := range m.runners() {
		m.loops.start(r)
	}
	m.wg.Go(func() {
		defer unsubscribe()
		m.fanOut(ctx, updates)
	})
	return nil
}

// Close stops what Start began and waits for it, stops pending timers and
// unregisters the metrics (so a new Manager can register on the same
// Registerer, e.g. after a config reload). The files on disk are left as
// they are. Close is safe to call twice, and without Start (after
// WriteAll); a closed Manager does not start again.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	cancel := m.cancel
	m.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	m.wg.Wait()
	m.running.Store(false)
	for _, r := range m.runners() {
		r.stopTimers()
	}
	var err error
	if g := m.currentGuard(); g != nil {
		m.setGuard(nil)
		err = g.close()
	}
	m.metrics.unregister()
	return err
}

// fanOut wakes every output on the Source's pushes until ctx is done.
// Leading edge: a rotation reaches disk in milliseconds, and the pushes
// that follow it within the debounce are coalesced into one trailing
// write, at most one write per debounce.
func (m *Manager) fanOut(ctx context.Context, updates <-chan struct{}) {
	var (
		timer   = stoppedTimer()
		quiet   bool // a write went out less than one debounce ago
		pending bool // pushes arrived during the quiet period
	)
	defer timer.Stop()
	pushAll := func() {
		for _, r := range m.runners() {
			r.poke(r.pushCh)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-updates:
			if m.cfg.debounce <= 0 {
				pushAll()
				continue
			}
			if quiet {
				pending = true
				continue
			}
			pushAll()
			quiet = true
			timer.Reset(m.cfg.debounce)
		case <-timer.C:
			if pending {
				pending = false
				pushAll()
				timer.Reset(m.cfg.debounce)
				continue
			}
			quiet = false
		}
	}
}

// stoppedTimer is a timer that has not fired and will not until Reset.
func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}
