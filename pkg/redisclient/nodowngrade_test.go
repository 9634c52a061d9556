package redisclient

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// sentinel stands where the plaintext port would be and records every
// byte sent to it: a downgrade would show up as a connection carrying
// "AUTH default <password>".
type sentinel struct {
	l    net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	n    int
	data []byte
}

func newSentinel(t *testing.T) *sentinel {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &sentinel{l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.n++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { _ = c.Close() }()
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				b, _ := io.ReadAll(c)
				s.mu.Lock()
				s.data = append(s.data, b...)
				s.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); s.wg.Wait() })
	return s
}

func (s *sentinel) addr() string { return s.l.Addr().String() }

func (s *sentinel) seen() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n, string(s.data)
}

// serveTLS runs a TLS listener that completes handshakes with cert and
// then holds the connection until the test ends.
func serveTLS(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	return acceptLoop(t, l, func(c net.Conn) {
		_ = c.(*tls.Conn).Handshake()
		_, _ = io.Copy(io.Discard, c)
	})
}

// acceptLoop hands each connection of l to handle (which owns it) until
// the test ends; every goroutine is waited for.
func acceptLoop(t *testing.T, l net.Listener, handle func(net.Conn)) string {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); handle(c) }()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

type dualClient struct {
	c   *Client
	reg *prometheus.Registry
	log *observer.ObservedLogs
}

func newDual(t *testing.T, e *redistest.Env, tlsAddr, plainAddr string, o ...Option) *dualClient {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	reg := prometheus.NewRegistry()
	opts := append([]Option{
		WithTLS(tlsAddr, e.Client, e.Client, tlsconfig.AuthorizeID(serverID)),
		WithPlaintext(plainAddr), WithPasswordFile(e.PasswordFile), WithName("dual"),
		WithRegisterer(reg), WithLogger(zap.New(core)),
		WithRedisOptions(func(o *redis.Options) { o.MaxRetries = -1; o.DialerRetries = 1 }),
	}, o...)
	c, err := New(ModeDualAuth, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &dualClient{c: c, reg: reg, log: logs}
}

func (d *dualClient) failures(t *testing.T, cause string) float64 {
	t.Helper()
	return metricstest.Value(t, d.reg, "identity_agent_redis_client_tls_failures_total", map[string]string{"client": "dual", "cause": cause})
}

// assertRefused checks that an authentication failure on the TLS port was
// returned with its cause, counted and logged, and that nothing reached
// the plaintext side.
func assertRefused(t *testing.T, d *dualClient, s *sentinel, cause string) {
	t.Helper()
	ctx := redistest.Context(t)
	for i := 0; i < 3; i++ { // again and again: no quiet fallback later either
		err := d.c.Redis().Ping(ctx).Err()
		require.Error(t, err)
		var te *TLSError
		require.True(t, errors.As(err, &te), "want a *TLSError, got %T: %v", err, err)
		assert.Equal(t, cause, te.Cause, "%v", err)
		assert.False(t, te.Unreachable())
	}
	n, data := s.seen()
	assert.Zero(t, n, "a connection reached the plaintext port")
	assert.NotContains(t, data, testPassword)
	assert.GreaterOrEqual(t, d.failures(t, cause), 3.0)
	assert.Zero(t, d.failures(t, CauseUnreachable))
	h, _ := d.c.Health(ctx)
	assert.Zero(t, h.Fallbacks)
	assert.GreaterOrEqual(t, h.TLSAuthFailures, uint64(3))
	assert.Contains(t, h.LastTLSAuthError, cause)
	assert.Zero(t, metricstest.Value(t, d.reg, "identity_agent_redis_client_fallbacks_total", map[string]string{"client": "dual"}))
	logged := d.log.FilterMessageSnippet("refusing to fall back").FilterField(zap.String("cause", cause)).All()
	require.NotEmpty(t, logged, "the authentication failure is logged as such")
	assert.Equal(t, zap.ErrorLevel, logged[0].Level)
}

// A real redis-server that presents another workload's SVID (a valid
// chain, the wrong SPIFFE ID): dual_auth must not send the password to
// the plaintext port.
func TestDualAuthWrongServerIDDoesNotDowngrade(t *testing.T) {
	e := redistest.NewEnv(t)
	_, certs, key, bundle := redistest.SVIDPEM(t, e.Client) // spiffe://example.org/worker
	for path, data := range map[string][]byte{e.Files.CertFile: certs, e.Files.KeyFile: key, e.Files.CAFile: bundle} {
		require.NoError(t, writeFileRename(path, data))
	}
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Password: true})
	s := newSentinel(t)
	d := newDual(t, e, r.TLSAddr(), s.addr())
	assertRefused(t, d, s, CauseServerID)
	err := d.c.Redis().Ping(redistest.Context(t)).Err()
	assert.Contains(t, err.Error(), "spiffe://example.org/worker", "the error names the ID the server presented")

	// The same server, authorized by that ID, works: the failure above was
	// the authorization, nothing else.
	ok, err := New(ModeDualAuth, WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(clientID)),
		WithPlaintext(s.addr()), WithPasswordFile(e.PasswordFile))
	require.NoError(t, err)
	defer func() { _ = ok.Close() }()
	require.NoError(t, ok.Redis().Ping(redistest.Context(t)).Err())
}

// A listener on the TLS port presenting a chain from a foreign CA, even
// one claiming the right SPIFFE ID.
func TestDualAuthForeignChainDoesNotDowngrade(t *testing.T) {
	e := redistest.NewEnv(t)
	foreign, err := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("evil.org"))
	require.NoError(t, err)
	impostor, err := foreign.IssueX509SVID(serverID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	cert := tls.Certificate{PrivateKey: impostor.PrivateKey}
	for _, c := range impostor.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	s := newSentinel(t)
	d := newDual(t, e, serveTLS(t, cert), s.addr())
	assertRefused(t, d, s, CauseUntrustedChain)

	// Not TLS at all on the TLS port (the server answered, in the wrong
	// protocol): a bad handshake, no fallback either.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	notTLS := acceptLoop(t, l, func(c net.Conn) {
		_, _ = io.WriteString(c, "-ERR this is not TLS\r\n")
		_, _ = io.Copy(io.Discard, c)
	})
	s2 := newSentinel(t)
	assertRefused(t, newDual(t, e, notTLS, s2.addr()), s2, CauseHandshake)
}

// An unreachable TLS port still falls back: refused, reset right after
// accept, and silent until the TLS dial timeout.
func TestDualAuthUnreachableTLSFallsBack(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{Password: true}) // phase A server: no TLS port at all

	reset, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	resetAddr := acceptLoop(t, reset, func(c net.Conn) {
		_ = c.(*net.TCPConn).SetLinger(0) // RST, before any TLS byte
		_ = c.Close()
	})
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	silentAddr := acceptLoop(t, silent, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })

	for name, addr := range map[string]string{
		"refused": "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)),
		"reset":   resetAddr,
		"silent":  silentAddr,
	} {
		t.Run(name, func(t *testing.T) {
			ctx := redistest.Context(t)
			d := newDual(t, e, addr, r.PlainAddr(), WithTLSDialTimeout(300*time.Millisecond))
			require.NoError(t, d.c.Redis().Set(ctx, "k-"+name, "v", 0).Err())
			h, err := d.c.Health(ctx)
			require.NoError(t, err)
			assert.Equal(t, PathPlaintext, h.Path)
			assert.GreaterOrEqual(t, h.Fallbacks, uint64(1))
			assert.Zero(t, h.TLSAuthFailures)
			assert.GreaterOrEqual(t, d.failures(t, CauseUnreachable), 1.0)
			for _, c := range []string{CauseServerID, CauseUntrustedChain, CauseHandshake} {
				assert.Zero(t, d.failures(t, c), c)
			}
		})
	}
}

// TLS port down (fallback), then back with a chain that does not verify:
// new connections stop falling back and report the failure instead.
func TestDualAuthTLSBackWithBadChainStopsFallback(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{Password: true})
	ctx := redistest.Context(t)
	port := redistest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	d := newDual(t, e, addr, r.PlainAddr(), WithRetryTLSInterval(100*time.Millisecond))
	require.NoError(t, d.c.Redis().Ping(ctx).Err())
	h, err := d.c.Health(ctx)
	require.NoError(t, err)
	require.Equal(t, PathPlaintext, h.Path)

	foreign, err := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("evil.org"))
	require.NoError(t, err)
	impostor, err := foreign.IssueX509SVID(serverID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	cert := tls.Certificate{PrivateKey: impostor.PrivateKey}
	for _, c := range impostor.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	l, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	acceptLoop(t, l, func(c net.Conn) { _ = c.(*tls.Conn).Handshake(); _, _ = io.Copy(io.Discard, c) })

	require.Eventually(t, func() bool {
		c, err := d.c.d.dial(ctx, "tcp", "")
		if err == nil {
			_ = c.Close() // still skipping TLS: a plaintext connection
			return false
		}
		var te *TLSError
		return errors.As(err, &te) && te.Cause == CauseUntrustedChain
	}, 10*time.Second, 50*time.Millisecond)
	assert.GreaterOrEqual(t, d.failures(t, CauseUntrustedChain), 1.0)
}
