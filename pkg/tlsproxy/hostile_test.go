package tlsproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestResumedSessionIsReverified: a client that resumes a session after
// its CA left the bundle is rejected. go-spiffe's VerifyPeerCertificate
// alone would let the resumption through.
func TestResumedSessionIsReverified(t *testing.T) {
	ca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	now := time.Now()
	serverSVID, err := ca.IssueX509SVID(serverID, now.Add(-time.Minute), now.Add(time.Hour), "localhost")
	require.NoError(t, err)
	clientSVID, err := ca.IssueX509SVID(clientID, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	bundles := x509bundle.NewSet(ca.X509Bundle())

	core, logs := observer.New(zapcore.WarnLevel)
	// Static go-spiffe sources: an SVID is an x509svid.Source, a Set an x509bundle.Source.
	p, err := tlsproxy.New(tlsproxy.Config{Name: "static", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{"spiffe://example.org/*"}}, serverSVID, bundles, tlsproxy.WithLogger(zap.New(core)))
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })

	roots := ca.X509Bundle().X509Authorities()
	cfg := clientConfig(roots, clientSVID)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	dial := func() (*tls.Conn, error) {
		c, err := tls.Dial("tcp", p.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "x\n"); err != nil {
			c.Close()
			return nil, err
		}
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	for i := range 2 {
		c, err := dial()
		require.NoError(t, err)
		require.Equal(t, i == 1, c.ConnectionState().DidResume)
		c.Close()
	}

	// The trust domain's CA is replaced: the client's certificate is no
	// longer trusted, though its session ticket is still valid.
	other, err := svidtest.NewCA(td)
	require.NoError(t, err)
	bundles.Add(other.X509Bundle())
	_, err = dial()
	require.Error(t, err)
	require.Eventually(t, func() bool { return p.Stats().HandshakeFailures[tlsproxy.CauseUnknownCA] == 1 }, 10*time.Second, 10*time.Millisecond)
	entries := logs.FilterMessage("connection rejected").All()
	require.Len(t, entries, 1)
	assert.Equal(t, clientID.String(), fieldString(entries[0], "peer_id"))
}

// TestSlowHandshakeCut: a peer that connects and never finishes the
// handshake is cut at HandshakeTimeout and counted as timeout.
func TestSlowHandshakeCut(t *testing.T) {
	e := newEnv(t)
	srv := startProxy(t, tlsproxy.Config{Name: "slow", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{clientID.String()}, HandshakeTimeout: 300 * time.Millisecond}, e.server)

	silent, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	defer silent.Close()
	// Half a ClientHello, then nothing.
	partial, err := net.Dial("tcp", srv.Addr().String())
	require.NoError(t, err)
	defer partial.Close()
	_, err = partial.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00})
	require.NoError(t, err)

	for _, c := range []net.Conn{silent, partial} {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, err := io.Copy(io.Discard, c)
		require.False(t, isTimeout(err), "proxy did not cut the handshake")
	}
	require.Eventually(t, func() bool { return srv.Stats().HandshakeFailures[tlsproxy.CauseTimeout] == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Len(t, srv.rejections(tlsproxy.CauseTimeout), 2)
	require.Eventually(t, func() bool { return srv.Stats().ConnectionsOpen == 0 }, 10*time.Second, 10*time.Millisecond)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestIdleConnsAreCheap: many established, idle proxied connections
// hold small buffers only, also after each moved bulk data: pooled
// buffers are taken when data is there and given back before waiting.
func TestIdleConnsAreCheap(t *testing.T) {
	e := newEnv(t)
	const n, burst = 100, 256 << 10
	_, cli := pair(t, e, echoBackend(t), nil)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	payload := make([]byte, burst)
	exchange := func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		errc := make(chan error, 1)
		go func() { _, err := c.Write(payload); errc <- err }()
		_, err := io.ReadFull(c, make([]byte, burst))
		require.NoError(t, err)
		require.NoError(t, <-errc)
	}
	// Warm up pools and session tickets.
	w, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	exchange(w)
	w.Close()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		c, err := net.Dial("tcp", cli.Addr().String())
		require.NoError(t, err)
		exchange(c)
		conns = append(conns, c)
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perConn := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
	t.Logf("heap per idle proxied connection after a %d KiB echo (both proxies, 4 sockets, 2 TLS ends): %d KiB", burst>>10, perConn>>10)
	// Holding the pooled buffers while idle would cost 2 proxies x 3 x 72 KiB.
	assert.Less(t, perConn, int64(200<<10))
}

func TestConfigValidation(t *testing.T) {
	ca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	s, err := ca.IssueX509SVID(serverID, time.Now(), time.Now().Add(time.Hour))
	require.NoError(t, err)
	bundles := x509bundle.NewSet(ca.X509Bundle())
	good := tlsproxy.Config{Name: "ollama", Mode: tlsproxy.ModeServer, Listen: "0.0.0.0:6701",
		Target: "127.0.0.1:11434", Allow: []string{"spiffe://example.org/traefik"}}
	_, err = tlsproxy.New(good, s, bundles)
	require.NoError(t, err)

	for _, tc := range []struct {
		mutate func(*tlsproxy.Config)
		want   string
	}{
		{func(c *tlsproxy.Config) { c.Name = "" }, `proxy "": name: must not be empty`},
		{func(c *tlsproxy.Config) { c.Mode = "sideways" }, `proxy "ollama": mode: "sideways"`},
		{func(c *tlsproxy.Config) { c.Listen = "6701" }, `proxy "ollama": listen: "6701"`},
		{func(c *tlsproxy.Config) { c.Listen = "unix://relative.sock" }, `proxy "ollama": listen: "unix://relative.sock": unix socket path must be absolute`},
		{func(c *tlsproxy.Config) { c.Target = "10.0.0.5:11434" }, `proxy "ollama": target: "10.0.0.5:11434": plaintext target must be a loopback`},
		{func(c *tlsproxy.Config) { c.Target = "ollama.internal:11434" }, `proxy "ollama": target: "ollama.internal:11434": plaintext target must be a loopback`},
		{func(c *tlsproxy.Config) { c.Target = "http://127.0.0.1:11434" }, `proxy "ollama": target: "http://127.0.0.1:11434": want host:port or unix:///path`},
		{func(c *tlsproxy.Config) { c.Mode, c.Listen = tlsproxy.ModeClient, "0.0.0.0:1" }, `proxy "ollama": listen: "0.0.0.0:1": plaintext listener must be a loopback`},
		{func(c *tlsproxy.Config) { c.Mode, c.HTTP = tlsproxy.ModeClient, true; c.Listen = "127.0.0.1:1" }, `proxy "ollama": http: HTTP mode is only available in server mode`},
		{func(c *tlsproxy.Config) { c.Allow = nil }, `proxy "ollama": allow: at least one allowed SPIFFE ID is required`},
		{func(c *tlsproxy.Config) { c.Allow = []string{"traefik"} }, `proxy "ollama": allow[0]: "traefik"`},
		{func(c *tlsproxy.Config) { c.IdleTimeout = -time.Second }, `proxy "ollama": idle_timeout: -1s: must not be negative`},
		{func(c *tlsproxy.Config) { c.MaxConns = -1 }, `proxy "ollama": max_conns: -1: must not be negative`},
	} {
		cfg := good
		cfg.Allow = append([]string(nil), good.Allow...)
		tc.mutate(&cfg)
		_, err := tlsproxy.New(cfg, s, bundles)
		assert.ErrorContains(t, err, tc.want)
	}
	// The explicit unsafe flag, localhost, IPv6 loopback and unix sockets pass.
	for _, mutate := range []func(*tlsproxy.Config){
		func(c *tlsproxy.Config) { c.Target, c.UnsafeAllowNonLoopbackPlaintext = "10.0.0.5:11434", true },
		func(c *tlsproxy.Config) { c.Target = "localhost:11434" },
		func(c *tlsproxy.Config) { c.Target = "[::1]:11434" },
		func(c *tlsproxy.Config) { c.Target = "unix:///run/ollama.sock" },
		func(c *tlsproxy.Config) {
			c.Mode, c.Listen, c.Target = tlsproxy.ModeClient, "127.0.0.1:16701", "model-host.example:6701"
		},
	} {
		cfg := good
		mutate(&cfg)
		_, err := tlsproxy.New(cfg, s, bundles)
		assert.NoError(t, err)
	}
	_, err = tlsproxy.New(good, nil, bundles)
	assert.ErrorContains(t, err, `proxy "ollama": an X.509-SVID source and a bundle source are required`)
}
