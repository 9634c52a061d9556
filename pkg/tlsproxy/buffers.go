package tlsproxy

import (
	"sync"
	"sync/atomic"
)

// Relay chunk sizes. A stream starts on small chunks; once its reads fill
// them it is a bulk stream and moves to large chunks while the proxy's
// budget lasts. On loopback a 512 KiB chunk moves the same bytes with an
// eighth of the read/write calls and wake-ups of a 64 KiB one, which cut
// the proxy pair's CPU per GB by about a fifth (docs/BENCHMARKS.md).
const (
	smallChunk = 64 << 10
	largeChunk = 512 << 10
)

// DefaultBulkBufferBudget is how many bytes of large relay buffers one
// proxy may have in use at once (WithBulkBufferBudget). A bulk stream
// holds two per direction while data flows and none while it waits, so
// the default lets about 14 stream directions run at full speed; the
// rest run on 64 KiB buffers, correctly, a little slower.
const DefaultBulkBufferBudget = 16 << 20

// relayBuf is one pooled buffer: a chunk of plaintext plus an eighth for
// the TLS record overhead (22 bytes per 16 KiB record) of a write batch,
// or for reading ahead a few records.
type relayBuf struct {
	b     []byte
	large bool
}

// chunk is the plaintext part of the buffer: what one read fills.
func (r *relayBuf) chunk() []byte {
	if r.large {
		return r.b[:largeChunk]
	}
	return r.b[:smallChunk]
}

// bufPool hands out relay buffers. Large ones are counted against a
// budget so bulk streams cannot pin unbounded memory; idle ones cached in
// the sync.Pools are freed by the garbage collector like any pool's.
type bufPool struct {
	small, large sync.Pool
	largeInUse   atomic.Int64
	largeMax     int64
}

func newBufPool(budgetBytes int) *bufPool {
	p := &bufPool{largeMax: int64(budgetBytes / (largeChunk + largeChunk/8))}
	p.small.New = func() any { return &relayBuf{b: make([]byte, smallChunk+smallChunk/8)} }
	p.large.New = func() any { return &relayBuf{b: make([]byte, largeChunk+largeChunk/8), large: true} }
	return p
}

// get returns a large buffer if one is wanted and the budget allows,
// otherwise a small one.
func (p *bufPool) get(large bool) *relayBuf {
	if large && p.reserveLarge() {
		return p.large.Get().(*relayBuf)
	}
	return p.small.Get().(*relayBuf)
}

// reserveLarge takes one large buffer from the budget if any is left.
// A compare-and-swap rather than add-then-undo, so the count never
// passes the budget even for an instant: the gauge and Stats read it,
// and an operator (or a test) must never see more than the budget.
func (p *bufPool) reserveLarge() bool {
	for {
		n := p.largeInUse.Load()
		if n >= p.largeMax {
			return false
		}
		if p.largeInUse.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (p *bufPool) put(b *relayBuf) {
	if b.large {
		p.large.Put(b)
		p.largeInUse.Add(-1)
		return
	}
	p.small.Put(b)
}

// largeBytesInUse is the memory held in large buffers handed out now.
func (p *bufPool) largeBytesInUse() int64 {
	return p.largeInUse.Load() * (largeChunk + largeChunk/8)
}

// bulkHint decides the size of a stream's next buffer from its last read
// of n bytes into chunk: a full chunk means more is waiting, so go large;
// a read under half a small chunk means the burst is over. In between the
// hint stays as it was, so a bulk stream read in uneven pieces stays large.
type bulkHint bool

func (h *bulkHint) observe(n, chunk int) {
	switch {
	case n >= chunk:
		*h = true
	case n < smallChunk/2:
		*h = false
	}
}
