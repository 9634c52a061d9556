package tlsproxy

import (
	"container/list"
	"net"
	"net/netip"
	"sync"
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
// Within the pool, connections that have not sent a single byte go first:
// an idle socket is the cheapest thing an attacker can hold, and every
// real client sends its ClientHello at once. Client mode accepts local
// callers only, which may legitimately wait for the server to speak, so
// there all handshakes count as idle and the oldest goes first.

// shedReason says why a handshaking connection was closed to make room.
type shedReason int

const (
	shedPoolFull  shedReason = iota // the handshake pool was full
	shedSourceCap                   // its source address was at its cap
	numShedReasons
)

var shedReasonNames = [numShedReasons]string{"pool_full", "source_cap"}

func (r shedReason) String() string { return shedReasonNames[r] }

// limits are the admission limits in force (after fitting them to the
// file-descriptor limit).
type limits struct {
	maxConns, maxHandshakes, perSource int
}

// pending is one connection in the handshake pool.
type pending struct {
	t      *tracked
	src    netip.Addr // zero: no per-source accounting
	elem   *list.Element
	selem  *list.Element
	active bool // has sent at least one byte
	shed   bool // closed to make room; its handshake error is not a failure
	reason shedReason
	done   bool // left the pool (authenticated, failed or shed)
}

type admission struct {
	mu      sync.Mutex
	lim     limits
	idle    list.List // *pending that sent nothing yet, oldest first
	active  list.List // *pending that sent something, oldest first
	sources map[netip.Addr]*list.List
	authed  int
}

func newAdmission(l limits) *admission {
	return &admission{lim: l, sources: map[netip.Addr]*list.List{}}
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
				victims = append(victims, a.shedLocked(oldestOfSource(l), shedSourceCap))
			}
		}
	}
	for a.idle.Len()+a.active.Len() >= a.lim.maxHandshakes {
		v := a.idle.Front()
		if v == nil {
			v = a.active.Front()
		}
		victims = append(victims, a.shedLocked(v.Value.(*pending), shedPoolFull))
	}
	pc := &pending{t: t, src: src}
	pc.elem = a.idle.PushBack(pc)
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

// oldestOfSource picks the source's oldest connection that has sent
// nothing, or else its oldest.
func oldestOfSource(l *list.List) *pending {
	for e := l.Front(); e != nil; e = e.Next() {
		if pc := e.Value.(*pending); !pc.active {
			return pc
		}
	}
	return l.Front().Value.(*pending)
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
	if pc.active {
		a.active.Remove(pc.elem)
	} else {
		a.idle.Remove(pc.elem)
	}
	if pc.selem != nil {
		l := a.sources[pc.src]
		l.Remove(pc.selem)
		if l.Len() == 0 {
			delete(a.sources, pc.src)
		}
	}
}

// progressed records that pc's peer sent its first bytes.
func (a *admission) progressed(pc *pending) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if pc.done || pc.active {
		return
	}
	a.idle.Remove(pc.elem)
	pc.active = true
	pc.elem = a.active.PushBack(pc)
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
	return a.idle.Len() + a.active.Len(), a.authed, a.lim
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
