package tlsproxy_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// laggingBundles serves the trust bundles of src as they were lag ago:
// a peer whose Workload API push arrives later than its partner's, as
// happens between two hosts.
type laggingBundles struct {
	src    x509bundle.Source
	td     spiffeid.TrustDomain
	lag    time.Duration
	mu     sync.Mutex
	seen   []seenBundle // oldest first
	cancel context.CancelFunc
	done   chan struct{}
}

type seenBundle struct {
	at time.Time
	b  *x509bundle.Bundle
}

func newLaggingBundles(t testing.TB, src x509bundle.Source, lag time.Duration) *laggingBundles {
	t.Helper()
	b, err := src.GetX509BundleForTrustDomain(td)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	l := &laggingBundles{src: src, td: td, lag: lag, seen: []seenBundle{{time.Time{}, b}}, cancel: cancel, done: make(chan struct{})}
	go l.watch(ctx)
	t.Cleanup(func() { l.cancel(); <-l.done })
	return l
}

func (l *laggingBundles) watch(ctx context.Context) {
	defer close(l.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
		b, err := l.src.GetX509BundleForTrustDomain(l.td)
		if err != nil {
			continue
		}
		l.mu.Lock()
		if !l.seen[len(l.seen)-1].b.Equal(b) {
			l.seen = append(l.seen, seenBundle{time.Now(), b})
		}
		l.mu.Unlock()
	}
}

func (l *laggingBundles) GetX509BundleForTrustDomain(d spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if d != l.td {
		return l.src.GetX509BundleForTrustDomain(d)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := time.Now().Add(-l.lag)
	cur := l.seen[0].b
	for _, s := range l.seen {
		if s.at.After(cut) {
			break
		}
		cur = s.b
	}
	return cur, nil
}

// caRotationRun drives connection-per-request load (as wrk with
// Connection: close) through a client → server pair whose bundles each lag
// their Workload API by 50 ms, while the CA rotates every interval.
type caRotationRun struct {
	srv, cli *proxyUnderTest
	// ok: completed at once; retried: failed once, completed on the
	// caller's one retry; failed: failed twice.
	ok, retried, failed atomic.Int64
	serverIssuers       map[string]bool
}

func runCARotation(t *testing.T, immediate bool, rotations int, interval time.Duration) *caRotationRun {
	e := newEnvWith(t, func(c *svidtest.Config) {
		c.UnsafeImmediateCASwitch = immediate
		c.CAActivationDelay = interval / 2
	})
	backend := echoBackend(t)
	const lag = 50 * time.Millisecond
	start := func(cfg tlsproxy.Config, src x509svid.Source, bundles x509bundle.Source) *proxyUnderTest {
		core, logs := observer.New(zapcore.DebugLevel)
		reg := prometheus.NewRegistry()
		p, err := tlsproxy.New(cfg, src, bundles, tlsproxy.WithLogger(zap.New(core)), tlsproxy.WithRegisterer(reg))
		require.NoError(t, err)
		require.NoError(t, p.Start(context.Background()))
		t.Cleanup(func() { _ = p.Close() })
		return &proxyUnderTest{Proxy: p, logs: logs, reg: reg}
	}
	r := &caRotationRun{serverIssuers: map[string]bool{}}
	r.srv = start(tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: backend,
		Allow: []string{clientID.String()}}, e.server, newLaggingBundles(t, e.server, lag))
	r.cli = start(tlsproxy.Config{Name: "cli", Mode: tlsproxy.ModeClient, Listen: "127.0.0.1:0", Target: r.srv.Addr().String(),
		Allow: []string{serverID.String()}}, e.client, newLaggingBundles(t, e.client, lag))

	// The root that signed the server's current SVID (their subjects are
	// alike): tells when a rotation has been activated.
	issuer := func() string {
		s, err := e.server.GetX509SVID()
		require.NoError(t, err)
		for _, root := range e.srv.CA().X509Bundle().X509Authorities() {
			if s.Certificates[0].CheckSignatureFrom(root) == nil {
				return root.SerialNumber.String()
			}
		}
		return ""
	}
	var issuersMu sync.Mutex
	sawIssuers := func() int {
		issuersMu.Lock()
		defer issuersMu.Unlock()
		r.serverIssuers[issuer()] = true
		return len(r.serverIssuers)
	}
	sawIssuers()
	ctx, cancel := context.WithCancel(context.Background())
	var load sync.WaitGroup
	defer func() { cancel(); load.Wait() }() // also when a require below fails
	load.Go(func() {
		for ctx.Err() == nil {
			sawIssuers()
			time.Sleep(5 * time.Millisecond)
		}
	})
	for w := range 8 {
		load.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				msg := fmt.Sprintf("w%d-%d", w, i)
				err := oneRequest(r.cli.Addr().String(), msg)
				if err == nil {
					r.ok.Add(1)
					continue
				}
				t.Logf("request %s failed, retrying once: %v", msg, err)
				time.Sleep(300 * time.Millisecond)
				if err := oneRequest(r.cli.Addr().String(), msg); err != nil {
					r.failed.Add(1)
					t.Logf("request %s failed again: %v", msg, err)
				} else {
					r.retried.Add(1)
				}
			}
		})
	}
	for range rotations {
		time.Sleep(interval)
		require.NoError(t, e.srv.RotateCA())
	}
	// The last prepared CA activates after its delay; the load runs on
	// until both proxies present SVIDs signed by it and one more lag.
	want := rotations + 1
	require.Eventually(t, func() bool { return sawIssuers() == want }, 30*time.Second, 10*time.Millisecond, "every rotation activated")
	time.Sleep(interval / 2)
	cancel()
	load.Wait()
	t.Logf("immediate=%v: %d requests ok at once, %d on the caller's one retry, %d lost across %d CA rotations; client handshake failures %v, retries %d; server handshake failures %v",
		immediate, r.ok.Load(), r.retried.Load(), r.failed.Load(), rotations, r.cli.Stats().HandshakeFailures, r.cli.Stats().HandshakeRetries, r.srv.Stats().HandshakeFailures)
	return r
}

// TestCARotationLosesNothing: with the CA rotating as SPIRE does (the next
// root published first, signing later), a client → server pair under
// connection-per-request load completes every request at once, even though
// each peer receives its bundle updates 50 ms after the Workload API sent
// them. With the CA switching at once (svidtest's unsafe mode), every
// request completes within one retry: the client proxy retries a
// handshake that failed on trust once by itself (the server's new SVID
// reached it before the root it chains to), the rare refusal the server
// sends after a TLS 1.3 client finished its side reaches the caller, whose
// one retry succeeds, and both proxies report the cause with the peer.
func TestCARotationLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("rotates the CA under load for several seconds")
	}
	t.Run("prepare then activate", func(t *testing.T) {
		r := runCARotation(t, false, 4, 1500*time.Millisecond)
		assert.Zero(t, r.failed.Load()+r.retried.Load(), "requests lost across CA rotations")
		assert.Positive(t, r.ok.Load())
		for _, p := range []*proxyUnderTest{r.srv, r.cli} {
			for cause, n := range p.Stats().HandshakeFailures {
				assert.Zero(t, n, "%s: %s handshake failures", p.Name(), cause)
			}
		}
		assert.Zero(t, r.cli.Stats().HandshakeRetries)
	})
	t.Run("immediate switch", func(t *testing.T) {
		r := runCARotation(t, true, 4, 1500*time.Millisecond)
		assert.Zero(t, r.failed.Load(), "requests that failed on their one retry")
		cst, sst := r.cli.Stats(), r.srv.Stats()
		// The server's new SVID reached the client before the root it
		// chains to: unknown_ca at the client, naming the server...
		require.Positive(t, cst.HandshakeFailures[tlsproxy.CauseUnknownCA])
		e := r.cli.rejections(tlsproxy.CauseUnknownCA)[0]
		assert.Equal(t, serverID.String(), fieldString(e, "peer_id"))
		assert.Equal(t, r.srv.Addr().String(), fieldString(e, "peer_addr"))
		assert.Positive(t, r.cli.metric(t, "identity_agent_proxy_handshake_failures_total", map[string]string{"cause": "unknown_ca"}))
		// ...which refused the server's certificate: the server reports
		// peer_rejected for that client's address.
		require.Positive(t, sst.HandshakeFailures[tlsproxy.CausePeerRejected])
		assert.NotEmpty(t, fieldString(r.srv.rejections(tlsproxy.CausePeerRejected)[0], "peer_addr"))
		// The client's new SVID can also reach a server whose bundle lags:
		// in TLS 1.3 the client's handshake is done before the server has
		// checked its certificate, so the server's refusal reaches the
		// caller as a closed connection, and the caller's one retry
		// succeeds; the server names the client.
		for _, e := range r.srv.rejections(tlsproxy.CauseUnknownCA) {
			assert.Equal(t, clientID.String(), fieldString(e, "peer_id"))
		}
		// The client proxy retried each connection at most once, and only
		// for trust failures; a retry fails only if a push is late by
		// more than the retry delay (seen under -race), and then the
		// caller's retry succeeded.
		assert.Positive(t, cst.HandshakeRetries)
		assert.Equal(t, float64(cst.HandshakeRetries), r.cli.metric(t, "identity_agent_proxy_handshake_retries_total", nil))
		var total uint64
		for _, n := range cst.HandshakeFailures {
			total += n
		}
		trust := cst.HandshakeFailures[tlsproxy.CauseUnknownCA] + cst.HandshakeFailures[tlsproxy.CausePeerRejected]
		assert.Equal(t, trust, total, "no other kind of failure")
		assert.LessOrEqual(t, total, 2*cst.HandshakeRetries)
	})
}
