package admin

import (
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Limits of the admin endpoint's listeners. Anyone on the host can connect
// to metrics_listen, and every connection held is a file descriptor the
// agent's rotations and proxies need, so each listener holds a bounded
// number and bounds how long each may take.
const (
	// MaxSocketConns is the most connections the admin socket holds.
	MaxSocketConns = 16
	// MaxMetricsConns is the most connections metrics_listen holds.
	MaxMetricsConns = 32

	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
)

// FDs is the most file descriptors the admin endpoint holds: each
// listener, its connections at their cap, one more per connection for
// what a request may open while served (the process collector reads
// /proc), and the one a refused connection holds until it is closed.
func FDs(metricsListen bool) int {
	n := 2 + 2*MaxSocketConns
	if metricsListen {
		n += 2 + 2*MaxMetricsConns
	}
	return n
}

// capListener holds at most max connections. Below the cap it accepts
// as any listener. At the cap it accepts atCapBurst connections per
// millisecond (the timer's resolution), so
// that clients wait in the kernel's queue (which costs the agent no
// descriptor) long enough to send their request, and then a connection
// whose request has arrived replaces the one that has waited longest for
// a request (never one being served), while a silent one is closed. An
// attacker holding connections open, idle or replaced at once, then only
// pushes out its own, and costs the agent at most 4,000 accepts a second.
type capListener struct {
	net.Listener
	name string
	max  int
	log  *zap.Logger
	// burst counts accepts at the cap since the last pause; only the
	// accept loop (one goroutine) touches it.
	burst int

	mu      sync.Mutex
	conns   map[*capConn]struct{}
	lastLog time.Time
	shed    uint64 // since lastLog
}

type capConn struct {
	net.Conn
	l    *capListener
	once sync.Once
	// guarded by l.mu
	active bool
	since  time.Time // accepted, or last went idle
	// lastRead is when Read last returned bytes (UnixNano), 0 before.
	lastRead atomic.Int64
}

// atCapBurst is how many connections the accept loop takes per
// millisecond at the cap.
const atCapBurst = 4

func newCapListener(inner net.Listener, name string, max int, log *zap.Logger) *capListener {
	return &capListener{Listener: inner, name: name, max: max, log: log, conns: map[*capConn]struct{}{}}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		if l.full() {
			if l.burst++; l.burst >= atCapBurst {
				l.burst = 0
				time.Sleep(time.Millisecond)
			}
		}
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc := &capConn{Conn: c, l: l, since: time.Now()}
		victim, ok := l.admit(cc)
		if victim != nil {
			_ = victim.Close()
		}
		if ok {
			return cc, nil
		}
		_ = c.Close()
	}
}

func (l *capListener) full() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns) >= l.max
}

// admit takes cc in, naming the connection it replaces, if any; false
// to close it.
func (l *capListener) admit(cc *capConn) (*capConn, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) < l.max {
		l.conns[cc] = struct{}{}
		return nil, true
	}
	var victim *capConn
	if !canPeek || pendingBytes(cc.Conn) {
		victim = l.victim()
	}
	l.shed++
	if now := time.Now(); now.Sub(l.lastLog) >= time.Second {
		l.log.Warn("admin: connection limit reached; a new connection with its request replaces the one idle longest, others are closed",
			zap.String("listener", l.name), zap.Int("max_conns", l.max), zap.Uint64("closed_since_last_line", l.shed))
		l.lastLog, l.shed = now, 0
	}
	if victim == nil {
		return nil, false
	}
	delete(l.conns, victim)
	l.conns[cc] = struct{}{}
	return victim, true
}

// victim is the held connection waiting longest for a request, by when it
// was accepted, went idle or last delivered bytes; one whose request is
// already in the kernel's buffer is not one.
func (l *capListener) victim() *capConn {
	var waiting []*capConn
	for c := range l.conns {
		if !c.active {
			waiting = append(waiting, c)
		}
	}
	if len(waiting) == 0 {
		return nil
	}
	slices.SortFunc(waiting, func(a, b *capConn) int { return a.waitingSince().Compare(b.waitingSince()) })
	for _, c := range waiting {
		if !canPeek || !pendingBytes(c.Conn) {
			return c
		}
	}
	return nil
}

func (c *capConn) waitingSince() time.Time {
	if r := c.lastRead.Load(); r != 0 && time.Unix(0, r).After(c.since) {
		return time.Unix(0, r)
	}
	return c.since
}

// Read notes when bytes arrive: a client sending its request is not the
// one to close.
func (c *capConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	return n, err
}

// connState follows net/http's view of each connection: only one waiting
// for a request (new or idle between requests) may be replaced.
func (l *capListener) connState(c net.Conn, s http.ConnState) {
	cc, ok := c.(*capConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateActive:
		cc.active = true
	case http.StateIdle:
		cc.active, cc.since = false, time.Now()
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, cc)
	}
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return err
}
