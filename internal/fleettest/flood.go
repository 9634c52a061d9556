package fleettest

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// IdleFlood is a local attacker that keeps n connections open to a
// listener without sending a byte, and replaces each one the listener
// closes at once.
type IdleFlood struct {
	held    atomic.Int64
	dials   atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
}

// StartIdleFlood opens n connections with dial, each in its own goroutine;
// Stop closes them all.
func StartIdleFlood(n int, dial func() (net.Conn, error)) *IdleFlood {
	f := &IdleFlood{stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	for range n {
		f.wg.Go(func() {
			buf := make([]byte, 512)
			for {
				select {
				case <-f.stop:
					return
				default:
				}
				c, err := dial()
				f.dials.Add(1)
				if err != nil {
					select {
					case <-f.stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				f.mu.Lock()
				if f.stopped {
					f.mu.Unlock()
					_ = c.Close()
					return
				}
				f.conns[c] = struct{}{}
				f.mu.Unlock()
				f.held.Add(1)
				for { // until the listener closes it
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				f.held.Add(-1)
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
				_ = c.Close()
			}
		})
	}
	return f
}

// Held is how many connections are open now; Dials how many were opened.
func (f *IdleFlood) Held() int64  { return f.held.Load() }
func (f *IdleFlood) Dials() int64 { return f.dials.Load() }

// Stop closes every connection and waits for the goroutines.
func (f *IdleFlood) Stop() {
	close(f.stop)
	f.mu.Lock()
	f.stopped = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
