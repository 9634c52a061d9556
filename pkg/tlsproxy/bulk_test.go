package tlsproxy_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestBulkIntegrity pushes large random payloads both ways through the
// pair on several connections at once, so the batched TLS reads and
// writes run, and checks every byte, then a half-close. It runs with the
// default large-buffer budget, with none, and with room for one large
// buffer, so streams switch sizes mid-transfer and mix them.
func TestBulkIntegrity(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget int
	}{
		{"default budget", tlsproxy.DefaultBulkBufferBudget},
		{"no large buffers", 0},
		{"one large buffer", 600 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) { bulkIntegrity(t, tlsproxy.WithBulkBufferBudget(tc.budget)) })
	}
}

func bulkIntegrity(t *testing.T, opts ...tlsproxy.Option) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), nil, opts...)
	const conns, size = 4, 8 << 20
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, size)
			_, _ = rand.Read(payload)
			c, err := net.Dial("tcp", cli.Addr().String())
			if !assert.NoError(t, err) {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			go func() {
				// Uneven write sizes: record boundaries land everywhere.
				rest := payload
				for len(rest) > 0 {
					n := min(len(rest), 1+len(rest)%(200<<10))
					if _, err := c.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
				}
				_ = c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(bufio.NewReader(c))
			if !assert.NoError(t, err) {
				return
			}
			want := append(payload, "bye"...)
			assert.Equal(t, len(want), len(got))
			assert.Equal(t, sha256.Sum256(want), sha256.Sum256(got))
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool { return srv.Stats().BytesFromTarget == conns*(size+3) }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, uint64(conns*size), srv.Stats().BytesToTarget)
	assert.Equal(t, uint64(conns*size), cli.Stats().BytesToTarget)
}

// BenchmarkPairThroughput: bytes/s through client proxy → server proxy →
// a sink, in one process (see bench/proxy for the cross-process numbers).
func BenchmarkPairThroughput(b *testing.B) {
	e := newEnv(b)
	_, cli := pair(b, e, sinkBackend(b), nil)
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(b, err)
	defer c.Close()
	chunk := bytes.Repeat([]byte("x"), 128<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPairNewConnections: new connections through the pair, each
// one request and reply, with TLS session resumption.
func BenchmarkPairNewConnections(b *testing.B) {
	e := newEnv(b)
	_, cli := pair(b, e, echoBackend(b), func(s, c *tlsproxy.Config) { s.MaxConns, c.MaxConns = 4096, 4096 })
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 16)
		for pb.Next() {
			c, err := net.Dial("tcp", cli.Addr().String())
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = c.Write([]byte("ping\n"))
			_, _ = io.ReadAtLeast(c, buf, 5)
			_ = c.Close()
		}
	})
}

// TestBulkBufferBudgetHolds: streams into a backend that stops reading pin
// the relay buffers they hold. Large ones never exceed the budget (the
// rest of the streams run on small buffers), the gauge shows them, and
// they are all returned when the streams end.
func TestBulkBufferBudgetHolds(t *testing.T) {
	const budget = 2 * (576 << 10) // two large buffers (512 KiB + 1/8 each)
	e := newEnv(t)
	backend, release := stalledBackend(t)
	srv, cli := pair(t, e, backend, nil, tlsproxy.WithBulkBufferBudget(budget))

	chunk := bytes.Repeat([]byte("b"), 256<<10)
	var conns []net.Conn
	var wg sync.WaitGroup
	for range 3 {
		c, err := net.Dial("tcp", cli.Addr().String())
		require.NoError(t, err)
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for { // until the connection is closed below
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
	}
	// Writers block once every buffer on the way is full; the client proxy
	// then holds its whole budget in large buffers.
	require.Eventually(t, func() bool { return cli.Stats().BulkBufferBytes == budget }, 20*time.Second, 10*time.Millisecond,
		"client proxy holds %d bytes of large buffers", cli.Stats().BulkBufferBytes)
	for range 50 {
		for _, p := range []*proxyUnderTest{srv, cli} {
			require.LessOrEqual(t, p.Stats().BulkBufferBytes, int64(budget))
		}
		time.Sleep(2 * time.Millisecond)
	}
	// The gauge reports the same count (Eventually: until every writer has
	// stalled, a buffer can still be returned and taken again).
	assert.Eventually(t, func() bool {
		return cli.metric(t, "identity_agent_proxy_bulk_buffer_bytes", nil) == float64(budget)
	}, 20*time.Second, 10*time.Millisecond)

	release()
	for _, c := range conns {
		_ = c.Close()
	}
	wg.Wait()
	for _, p := range []*proxyUnderTest{srv, cli} {
		require.Eventually(t, func() bool { return p.Stats().BulkBufferBytes == 0 && p.Stats().ConnectionsOpen == 0 },
			20*time.Second, 10*time.Millisecond, "%s: %+v", p.Stats().Name, p.Stats())
	}
}

// stalledBackend accepts connections and reads nothing until release,
// then drains them.
func stalledBackend(t *testing.T) (addr string, release func()) {
	t.Helper()
	gate := make(chan struct{})
	addr = tcpBackend(t, func(c net.Conn) {
		<-gate
		_, _ = io.Copy(io.Discard, c)
	})
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // runs before tcpBackend's cleanup, which waits for the handlers
	return addr, release
}
