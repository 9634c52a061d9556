package tlsproxy

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestBufPoolBudget(t *testing.T) {
	p := newBufPool(2 * (largeChunk + largeChunk/8))
	a, b, c := p.get(true), p.get(true), p.get(true)
	assert.True(t, a.large)
	assert.True(t, b.large)
	assert.False(t, c.large, "a third large buffer is over the budget: small instead")
	assert.Len(t, c.chunk(), smallChunk)
	assert.Len(t, a.chunk(), largeChunk)
	assert.Equal(t, int64(2), p.largeInUse.Load())

	p.put(a)
	p.put(c)
	assert.Equal(t, int64(1), p.largeInUse.Load(), "returning a large buffer frees its budget; a small one does not count")
	d := p.get(true)
	assert.True(t, d.large)
	p.put(b)
	p.put(d)
	assert.Zero(t, p.largeInUse.Load())

	assert.False(t, p.get(false).large, "small asked, small given")
	assert.False(t, newBufPool(0).get(true).large, "budget 0: never large")
	assert.Zero(t, newBufPool(0).largeInUse.Load())
}

// TestBufPoolCountNeverPassesBudget: with the budget used up, getters
// racing for a large buffer must not lift the count (which the gauge and
// Stats report) above the budget even for an instant. An add-then-undo
// counter did, and CI once read three buffers under a budget of two.
func TestBufPoolCountNeverPassesBudget(t *testing.T) {
	p := newBufPool(2 * (largeChunk + largeChunk/8))
	held := []*relayBuf{p.get(true), p.get(true)}

	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				p.put(p.get(true)) // over budget: a small buffer, and the count must not move
			}
		})
	}
	var highest int64
	for range 200_000 {
		highest = max(highest, p.largeInUse.Load())
	}
	stop.Store(true)
	wg.Wait()
	assert.Equal(t, int64(2), highest)
	for _, b := range held {
		p.put(b)
	}
	assert.Zero(t, p.largeInUse.Load())
}

func TestBulkHint(t *testing.T) {
	var h bulkHint
	h.observe(smallChunk-1, smallChunk)
	assert.False(t, bool(h), "a read that did not fill the chunk is not bulk")
	h.observe(smallChunk, smallChunk)
	assert.True(t, bool(h), "a full chunk: more is waiting")
	h.observe(smallChunk, largeChunk)
	assert.True(t, bool(h), "a partial large read of a bulk stream stays large")
	h.observe(smallChunk/2-1, largeChunk)
	assert.False(t, bool(h), "a short read ends the burst")
}
