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
// writes run, and checks every byte, then a half-close.
func TestBulkIntegrity(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), nil)
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
