package tlsproxy

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Admission in two stages. A connection is first "handshaking": accepted,
// not yet authenticated, holding a slot of the handshake pool (at most
// MaxHandshakes, at most MaxHandshakesPerSource per source address). Once
// its handshake succeeded and its peer is allowed it moves to the
// authenticated pool (at most MaxConns). Strangers can only ever occupy
// the first pool, so they cannot take the capacity that authorized peers
// need; and since the first pool makes room by closing its oldest member
// instead of refusing the newcomer, they cannot hold its door shut either:
// an attacker who keeps N idle connections open only pushes out its own
// connections (or waits out the handshake deadline), while an authorized
// client's handshake finishes in a round trip.
//
// Within the pool (and within one source's share of it) the connection
// closed is the one whose handshake has progressed least, oldest first:
// one that has sent nothing, then one that has sent bytes we have not
// answered, then one we answered (its ClientHello was complete and
// valid). An idle socket is the cheapest thing an attacker can hold, and
// every real client sends its ClientHello at once. "Sent nothing" is
// checked against the kernel's receive queue before a connection is shed:
// under a flood of thousands of connections a second the goroutine that
// would read a real client's ClientHello may not have run yet, and
// judging by our own reads alone shed authorized clients arriving from an
// attacker's address (issue 18, 28% of them on a loaded 2-core box).
//
// No connection is shed before it is shedGrace old: when making room
// would close a younger one, the accept loop holds the newcomer and waits
// until the victim has had its grace (see admitWait). A flood that
// replaces each connection at once would otherwise churn a source's share
// as fast as the loop accepts, and shed a real client from the same
// address (every local user is 127.0.0.1) before it was scheduled to send
// its ClientHello (issue 18: 17 of 20 authorized connections reset at
// connect on a loaded 2-core box). The wait costs no descriptor beyond
// the newcomer's: the connections behind it wait in the kernel's accept
// queue, where a real client's ClientHello arrives meanwhile, so it is
// not idle when accepted. Idle attackers stay bounded: the pool plus one
// descriptors, each held at most HandshakeTimeout, and at least
// shedGrace only because the loop accepts at most a pool's worth of them
// per shedGrace.
// Client mode accepts local callers only, which may legitimately wait for
// the server to speak, so there all handshakes count as idle and the
// oldest goes first.

// shedReason says why a handshaking connection was closed to make room.
type shedReason int

const (
	shedPoolFull  shedReason = iota // the handshake pool was full
	shedSourceCap                   // its source address was at its cap
	numShedReasons
)

var shedReasonNames = [numShedReasons]string{"pool_full", "source_cap"}

func (r shedReason) String() string { return shedReasonNames[r] }

// progress is how far a handshaking connection has got.
type progress int

const (
	progIdle     progress = iota // sent nothing
	progSent                     // sent bytes, not yet answered
	progAnswered                 // we sent our handshake flight
	numProgress
)

// limits are the admission limits in force (after fitting them to the
// file-descriptor limit).
type limits struct {
	maxConns, maxHandshakes, perSource int
}

// pending is one connection in the handshake pool.
type pending struct {
	t      *tracked
	src    netip.Addr // zero: no per-source accounting
	at     time.Time  // admitted
	elem   *list.Element
	selem  *list.Element
	level  progress
	shed   bool // closed to make room; its handshake error is not a failure
	reason shedReason
	done   bool // left the pool (authenticated, failed or shed)
}

type admission struct {
	mu      sync.Mutex
	lim     limits
	levels  [numProgress]list.List // *pending by progress, oldest first
	pending int                    // total of levels
	// hasInput reports whether the kernel holds bytes the connection's
	// peer sent that nobody has read yet (nil: never).
	hasInput func(net.Conn) bool
	sources  map[netip.Addr]*list.List
	authed   int
}

func newAdmission(l limits) *admission {
	return &admission{lim: l, sources: map[netip.Addr]*list.List{}, hasInput: hasInput}
}

func (a *admission) setLimits(l limits) {
	a.mu.Lock()
	a.lim = l
	a.mu.Unlock()
}

// sourceKey is the per-source accounting key of a remote address: the
// IPv4 address, or the /64 of an IPv6 one (one host commonly holds a whole
// /64). Unix sockets and unparsable addresses have none.
func sourceKey(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.Is6() {
		if pfx, err := ip.Prefix(64); err == nil {
			return pfx.Addr()
		}
	}
	return ip
}

// admit places t in the handshake pool. It returns nil if the
// authenticated pool is full (t is to be refused), and otherwise the
// connections to close to make room, already out of the pool and marked
// shed; the caller closes them outside the lock.
func (a *admission) admit(t *tracked, src netip.Addr) (*pending, []*pending) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.authed >= a.lim.maxConns {
		return nil, nil
	}
	var victims []*pending
	if src.IsValid() && a.lim.perSource > 0 {
		if l := a.sources[src]; l != nil {
			for l.Len() >= a.lim.perSource {
				victims = append(victims, a.shedLocked(a.leastOfSource(l), shedSourceCap))
			}
		}
	}
	for a.pending >= a.lim.maxHandshakes {
		victims = append(victims, a.shedLocked(a.leastOfPool(), shedPoolFull))
	}
	pc := &pending{t: t, src: src, at: time.Now()}
	pc.elem = a.levels[progIdle].PushBack(pc)
	a.pending++
	if src.IsValid() {
		l := a.sources[src]
		if l == nil {
			l = list.New()
			a.sources[src] = l
		}
		pc.selem = l.PushBack(pc)
	}
	return pc, victims
}

// shedGrace is the least time a handshaking connection has to send its
// first bytes before it may be shed to make room: ample for a client
// that is merely descheduled, and short enough that a churning flood
// still moves a source's share (256 by default) 2,560 times a second.
const shedGrace = 100 * time.Millisecond

// admitWait reports how long the accept loop must hold a newcomer from
// src before admit may shed for it: until the connection admit would close
// is shedGrace old. Zero when nothing younger would be shed.
func (a *admission) admitWait(src netip.Addr, now time.Time) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.authed >= a.lim.maxConns {
		return 0 // refused without shedding
	}
	var wait time.Duration
	young := func(pc *pending) {
		if d := shedGrace - now.Sub(pc.at); d > wait {
			wait = d
		}
	}
	if src.IsValid() && a.lim.perSource > 0 {
		if l := a.sources[src]; l != nil && l.Len() >= a.lim.perSource {
			young(a.leastOfSource(l))
		}
	}
	if a.pending >= a.lim.maxHandshakes && a.pending > 0 {
		young(a.leastOfPool())
	}
	return wait
}

// reallyIdle reports whether pc has sent nothing, asking the kernel when
// our reads have not seen anything yet; one found to have sent bytes
// moves up a level.
func (a *admission) reallyIdle(pc *pending) bool {
	if pc.level != progIdle {
		return false
	}
	if a.hasInput != nil && pc.t != nil && a.hasInput(pc.t.raw) {
		a.raiseLocked(pc, progSent)
		return false
	}
	return true
}

// leastOfPool picks the pool's connection with the least progress, oldest first.
func (a *admission) leastOfPool() *pending {
	for e := a.levels[progIdle].Front(); e != nil; {
		pc := e.Value.(*pending)
		e = e.Next() // before reallyIdle may move pc to another list
		if a.reallyIdle(pc) {
			return pc
		}
	}
	for lvl := progSent; lvl < numProgress; lvl++ {
		if e := a.levels[lvl].Front(); e != nil {
			return e.Value.(*pending)
		}
	}
	panic("tlsproxy: admission: shedding from an empty pool")
}

// leastOfSource picks the source's connection with the least progress,
// oldest first.
func (a *admission) leastOfSource(l *list.List) *pending {
	var best *pending
	for e := l.Front(); e != nil; e = e.Next() {
		pc := e.Value.(*pending)
		if a.reallyIdle(pc) {
			return pc
		}
		if best == nil || pc.level < best.level {
			best = pc
		}
	}
	return best
}

func (a *admission) shedLocked(pc *pending, r shedReason) *pending {
	a.removeLocked(pc)
	pc.shed, pc.reason = true, r
	return pc
}

func (a *admission) removeLocked(pc *pending) {
	if pc.done {
		return
	}
	pc.done = true
	a.levels[pc.level].Remove(pc.elem)
	a.pending--
	if pc.selem != nil {
		l := a.sources[pc.src]
		l.Remove(pc.selem)
		if l.Len() == 0 {
			delete(a.sources, pc.src)
		}
	}
}

// progressed records that pc's handshake got to level.
func (a *admission) progressed(pc *pending, level progress) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !pc.done {
		a.raiseLocked(pc, level)
	}
}

func (a *admission) raiseLocked(pc *pending, level progress) {
	if level <= pc.level {
		return
	}
	a.levels[pc.level].Remove(pc.elem)
	pc.level = level
	pc.elem = a.levels[level].PushBack(pc)
}

// authenticate moves pc to the authenticated pool. False if pc was shed
// meanwhile or the authenticated pool filled up during its handshake.
func (a *admission) authenticate(pc *pending) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if pc.shed {
		return false
	}
	a.removeLocked(pc)
	if a.authed >= a.lim.maxConns {
		return false
	}
	a.authed++
	return true
}

// leave ends pc's stay in the handshake pool without authentication.
// It reports whether pc had been shed.
func (a *admission) leave(pc *pending) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.removeLocked(pc)
	return pc.shed
}

// isShed reports whether pc was closed to make room.
func (a *admission) isShed(pc *pending) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return pc.shed
}

// release frees an authenticated slot.
func (a *admission) release() {
	a.mu.Lock()
	a.authed--
	a.mu.Unlock()
}

// counts returns the connections in each pool.
func (a *admission) counts() (handshaking, authenticated int, l limits) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pending, a.authed, a.lim
}

// fitLimits lowers l so that a proxy at its limits stays within the
// file-descriptor limit: each handshake holds one descriptor, each
// authenticated connection two (three in HTTP mode, with its pooled
// upstream), and fdReserve stay for everything else. It reports whether
// anything had to change.
func fitLimits(l limits, nofile uint64, perAuthed int) (limits, bool) {
	need := uint64(l.maxHandshakes) + uint64(perAuthed)*uint64(l.maxConns) + fdReserve
	if nofile == 0 || need <= nofile {
		return l, false
	}
	avail := float64(0)
	if nofile > fdReserve {
		avail = float64(nofile - fdReserve)
	}
	f := avail / float64(need-fdReserve)
	out := limits{
		maxConns:      max(1, int(float64(l.maxConns)*f)),
		maxHandshakes: max(1, int(float64(l.maxHandshakes)*f)),
	}
	out.perSource = min(l.perSource, out.maxHandshakes)
	return out, true
}

// fdReserve is what fitLimits leaves for the rest of the process: the
// Workload API, admin socket, logs, the Go runtime, other listeners.
const fdReserve = 128
