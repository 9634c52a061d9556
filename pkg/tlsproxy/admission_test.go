package tlsproxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// attacker keeps n plain TCP connections to addr open, sending nothing,
// and replaces each one the proxy closes at once, as in issue 11. The
// connections come from sources in turn.
type attacker struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	dials  atomic.Int64
	mu     sync.Mutex
	open   map[net.Conn]struct{}
}

func startAttacker(t testing.TB, addr string, n int, sources []net.IP) *attacker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &attacker{cancel: cancel, open: map[net.Conn]struct{}{}}
	for i := range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sources[i%len(sources)]}}
		a.wg.Go(func() {
			buf := make([]byte, 1)
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					// Backlog full or shutting down: try again, a little later.
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				a.dials.Add(1)
				a.mu.Lock()
				a.open[c] = struct{}{}
				a.mu.Unlock()
				_, _ = c.Read(buf) // until the proxy closes it (or Stop does)
				a.mu.Lock()
				delete(a.open, c)
				a.mu.Unlock()
				_ = c.Close()
			}
		})
	}
	t.Cleanup(a.stop)
	return a
}

func (a *attacker) stop() {
	a.cancel()
	a.mu.Lock()
	for c := range a.open {
		_ = c.Close()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// loopbackSources returns n distinct loopback source addresses from
// 127.0.x.y (Linux routes all of 127/8 to lo), or skips the test where
// only 127.0.0.1 is configured (macOS).
func loopbackSources(t testing.TB, base byte, n int) []net.IP {
	t.Helper()
	var ips []net.IP
	for i := range n {
		ip := net.IPv4(127, 0, base, byte(2+i))
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ip})
		if err != nil {
			t.Skipf("loopback source %s unavailable (only 127.0.0.1 on this OS?): %v", ip, err)
		}
		_ = ln.Close()
		ips = append(ips, ip)
	}
	return ips
}

// ensureFDs raises the soft RLIMIT_NOFILE to what the test needs (Go
// already raises it to the hard limit at start-up; this is for hosts where
// the hard limit itself is low), or skips.
func ensureFDs(t testing.TB, need uint64) {
	t.Helper()
	var l syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l))
	if uint64(l.Cur) >= need { //nolint:unconvert // int64 on some platforms
		return
	}
	if uint64(l.Max) < need { //nolint:unconvert // int64 on some platforms
		t.Skipf("RLIMIT_NOFILE hard limit %d < %d needed", l.Max, need)
	}
	old := l
	l.Cur = l.Max
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l))
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// authorizedRequests sends requests through cli (each on a new
// connection, like Connection: close) from workers goroutines until at
// least min requests are done and until() holds, and returns how many
// succeeded and were sent.
func authorizedRequests(t testing.TB, cli string, workers, minimum int, until func() bool) (ok, total int) {
	t.Helper()
	var okN, totalN atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Minute) // a bound, not an expectation
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				if int(totalN.Load()) >= minimum && until() || time.Now().After(deadline) {
					return
				}
				totalN.Add(1)
				if oneRequest(cli, fmt.Sprintf("req-%d-%d", w, i)) == nil {
					okN.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(okN.Load()), int(totalN.Load())
}

func oneRequest(addr, msg string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != msg+"\n" {
		return fmt.Errorf("got %q", line)
	}
	return nil
}

// TestIdleAttackersDoNotStarve reproduces issue 11's attack on a
// server-mode proxy with max_conns 100 and handshake_timeout 3s (the rest
// default): attackers keep 150, and 1,000, idle TCP connections open and
// replace each one closed. Authorized requests through a client proxy,
// each on a new connection, must succeed at >= 99% while the attack
// lasts at least one handshake deadline (every attacker connection is
// then cut and replaced at least once), and the handshake pool never
// grows past its limit.
func TestIdleAttackersDoNotStarve(t *testing.T) {
	const handshakeTimeout = 3 * time.Second
	for _, tc := range []struct {
		name      string
		attackers int
		sources   func(t *testing.T) []net.IP
	}{
		// The legitimate client proxy's own address: only the oldest-idle-first
		// shedding tells them apart.
		{"150 from the client's own address", 150, func(*testing.T) []net.IP { return []net.IP{net.IPv4(127, 0, 0, 1)} }},
		// Issue 18: above the per-source cap from the client's own address,
		// every attacker connection sheds one of that address's handshakes,
		// and an authorized ClientHello not yet read must not be the one.
		{"1000 from the client's own address", 1000, func(*testing.T) []net.IP { return []net.IP{net.IPv4(127, 0, 0, 1)} }},
		{"150 from one other address", 150, func(t *testing.T) []net.IP { return loopbackSources(t, 0, 1) }},
		// Above the per-source cap: the attacker pushes out its own connections.
		{"1000 from one other address", 1000, func(t *testing.T) []net.IP { return loopbackSources(t, 0, 1) }},
		// Below the per-source cap each, within the pool together.
		{"1000 from 100 addresses", 1000, func(t *testing.T) []net.IP { return loopbackSources(t, 1, 100) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sources := tc.sources(t)
			ensureFDs(t, uint64(2*tc.attackers+1024))
			e := newEnv(t)
			srv, cli := pair(t, e, echoBackend(t), func(s, _ *tlsproxy.Config) {
				s.MaxConns = 100
				s.HandshakeTimeout = handshakeTimeout
			})
			st := srv.Stats()
			require.Equal(t, tlsproxy.DefaultMaxHandshakes, st.MaxHandshakes, "defaults must not be lowered by RLIMIT_NOFILE here")

			a := startAttacker(t, srv.Addr().String(), tc.attackers, sources)
			held := min(tc.attackers, st.MaxHandshakesPerSource*len(sources))
			require.Eventually(t, func() bool { return srv.Stats().ConnectionsHandshaking >= int64(held*9/10) },
				60*time.Second, 20*time.Millisecond, "the attack did not build up")

			// Sample the pool while requests run: it must stay within its limits.
			var maxSeen atomic.Int64
			stopSampling := make(chan struct{})
			var sampler sync.WaitGroup
			sampler.Go(func() {
				for {
					select {
					case <-stopSampling:
						return
					case <-time.After(5 * time.Millisecond):
					}
					if n := srv.Stats().ConnectionsHandshaking; n > maxSeen.Load() {
						maxSeen.Store(n)
					}
				}
			})
			start := time.Now()
			ok, total := authorizedRequests(t, cli.Addr().String(), 4, 200, func() bool {
				return time.Since(start) > handshakeTimeout+500*time.Millisecond
			})
			close(stopSampling)
			sampler.Wait()
			a.stop()

			st = srv.Stats()
			t.Logf("%s: %d/%d authorized requests succeeded (%.2f%%); attacker dialed %d times; shed %v; handshake timeouts %d; max handshaking seen %d",
				tc.name, ok, total, 100*float64(ok)/float64(total), a.dials.Load(), st.HandshakesShed,
				st.HandshakeFailures[tlsproxy.CauseTimeout], maxSeen.Load())
			assert.GreaterOrEqual(t, float64(ok), 0.99*float64(total), "authorized success rate under attack")
			assert.LessOrEqual(t, maxSeen.Load(), int64(st.MaxHandshakes))
			assert.Empty(t, srv.logs.FilterMessage("accept failed").All(), "no file-descriptor exhaustion")
			// Every attacker connection was cut at least once while we measured.
			assert.Greater(t, a.dials.Load(), int64(tc.attackers))
		})
	}
}

// TestHandshakePoolShedsOldestIdle: with a small handshake pool, a flood
// of idle connections is held to it, the oldest idle ones are closed to
// admit newcomers, memory stays bounded, and an authorized client that
// arrives in the middle of the flood is served.
func TestHandshakePoolShedsOldestIdle(t *testing.T) {
	e := newEnv(t)
	const pool, flood = 50, 400
	srv, cli := pair(t, e, echoBackend(t), func(s, _ *tlsproxy.Config) {
		s.MaxHandshakes = pool
		s.HandshakeTimeout = time.Minute // longer than the test: only shedding can free slots
	})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flood {
		c, err := net.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	// From one address, the flood meets the per-source cap (never above
	// the pool) as soon as the pool is full: either reason makes room.
	shed := func() uint64 { s := srv.Stats().HandshakesShed; return s["pool_full"] + s["source_cap"] }
	require.Eventually(t, func() bool { return shed() == flood-pool }, 30*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(pool), srv.Stats().ConnectionsHandshaking)
	// The oldest were closed, the newest are still open.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if i < flood-pool {
			assert.False(t, isTimeout(err), "connection %d (old) should have been shed", i)
		} else {
			assert.True(t, isTimeout(err), "connection %d (new) should still be open: %v", i, err)
		}
	}
	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	grown := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d KiB for %d idle connections (%d held)", grown/1024, flood, pool)
	assert.Less(t, grown, int64(16<<20), "memory per pending connection must stay small")

	// Served during the flood: the client proxy's connection sends its
	// ClientHello at once, so it is never the oldest idle one.
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, bufio.NewReader(c), "served during the flood")
	assert.Equal(t, int64(1), srv.Stats().ConnectionsAuthenticated)
	assert.NotEmpty(t, srv.logs.FilterMessage("handshaking connections shed to admit new ones").All())
	assert.Equal(t, float64(shed()), srv.metric(t, "identity_agent_proxy_handshakes_shed_total", map[string]string{"reason": "pool_full"})+
		srv.metric(t, "identity_agent_proxy_handshakes_shed_total", map[string]string{"reason": "source_cap"}))
}

// TestMaxConnsBoundsAuthenticated: max_conns counts authenticated
// connections only; beyond it new connections are reset at once, and
// served again once one closes.
func TestMaxConnsBoundsAuthenticated(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), func(s, _ *tlsproxy.Config) { s.MaxConns = 2 })
	// Idle strangers do not count against max_conns...
	for range 5 {
		c, err := net.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		defer c.Close()
	}
	require.Eventually(t, func() bool { return srv.Stats().ConnectionsHandshaking == 5 }, 10*time.Second, 10*time.Millisecond)
	var held []net.Conn
	for i := range 2 {
		c, err := net.Dial("tcp", cli.Addr().String())
		require.NoError(t, err)
		defer c.Close()
		roundTrip(t, c, bufio.NewReader(c), fmt.Sprint("held ", i))
		held = append(held, c)
	}
	assert.Equal(t, int64(2), srv.Stats().ConnectionsAuthenticated)
	// ...but a third authorized connection does not fit: while max_conns
	// are open, every newcomer is reset before any handshake.
	require.Error(t, oneRequest(cli.Addr().String(), "third"))
	require.Eventually(t, func() bool { return srv.Stats().ConnectionsRefused >= 1 }, 10*time.Second, 10*time.Millisecond)
	held[0].Close()
	require.Eventually(t, func() bool { return srv.Stats().ConnectionsAuthenticated == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, oneRequest(cli.Addr().String(), "served again"))
}

// TestPerSourceCap: one source cannot hold more than its share of the
// handshake pool; it loses its own oldest connections, others keep theirs.
func TestPerSourceCap(t *testing.T) {
	sources := loopbackSources(t, 0, 2)
	e := newEnv(t)
	srv, _ := pair(t, e, echoBackend(t), func(s, _ *tlsproxy.Config) {
		s.MaxHandshakesPerSource = 10
		s.HandshakeTimeout = time.Minute
	})
	dial := func(src net.IP) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
		c, err := d.Dial("tcp", srv.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	var other []net.Conn
	for range 5 {
		other = append(other, dial(sources[1]))
	}
	for range 30 {
		dial(sources[0])
	}
	require.Eventually(t, func() bool { return srv.Stats().HandshakesShed["source_cap"] == 20 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(15), srv.Stats().ConnectionsHandshaking)
	for _, c := range other {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		assert.True(t, isTimeout(err), "the other source's connection must stay: %v", err)
	}
}

// TestLimitsFitFileDescriptors: limits that RLIMIT_NOFILE cannot hold are
// lowered to fit, with one log line naming both.
func TestLimitsFitFileDescriptors(t *testing.T) {
	e := newEnv(t)
	srv := startProxy(t, tlsproxy.Config{Name: "fd", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{clientID.String()}}, e.server,
		tlsproxy.WithFDLimit(func() (uint64, bool) { return 1024, true }))
	st := srv.Stats()
	assert.Less(t, st.MaxConns, tlsproxy.DefaultMaxConns)
	assert.Less(t, st.MaxHandshakes, tlsproxy.DefaultMaxHandshakes)
	assert.LessOrEqual(t, uint64(st.MaxHandshakes+2*st.MaxConns)+128, uint64(1024))
	lines := srv.logs.FilterMessageSnippet("file descriptor limit (ulimit -n) too low").All()
	require.Len(t, lines, 1)
	assert.Equal(t, float64(st.MaxConns), srv.metric(t, "identity_agent_proxy_limit", map[string]string{"limit": "max_conns"}))

	for _, tc := range []struct {
		conns, hs, per int
		nofile         uint64
		lowered        bool
	}{
		{1024, 2048, 256, 1 << 20, false},
		{1024, 2048, 256, 4096, true},
		{100, 2048, 256, 100, true}, // below the reserve: one of each
	} {
		c, h, p, lowered := tlsproxy.FitLimits(tc.conns, tc.hs, tc.per, tc.nofile, 2)
		assert.Equal(t, tc.lowered, lowered, "%+v", tc)
		assert.GreaterOrEqual(t, c, 1)
		assert.GreaterOrEqual(t, h, 1)
		assert.LessOrEqual(t, p, h)
		if lowered && tc.nofile > 128 {
			assert.LessOrEqual(t, uint64(h+2*c)+128, tc.nofile, "%+v", tc)
		}
	}
}
