package tlsproxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// keepAlive is an HTTP/1.1 keep-alive connection straight to a server
// proxy, presenting one identity's SVID, with requests written by hand
// so the test sees exactly when the proxy closes it.
type keepAlive struct {
	c *tls.Conn
	r *bufio.Reader
}

func dialKeepAlive(t testing.TB, e *env, addr string, id spiffeid.ID) *keepAlive {
	t.Helper()
	s, err := e.srv.CA().IssueX509SVID(id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	c, err := tls.Dial("tcp", addr, e.tlsClientConfig(s))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &keepAlive{c: c, r: bufio.NewReader(c)}
}

func (k *keepAlive) send(path string) error {
	_ = k.c.SetDeadline(time.Now().Add(15 * time.Second))
	_, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: svc\r\n\r\n", path)
	return err
}

// read returns the status and body of the next response, and whether it
// said Connection: close.
func (k *keepAlive) read() (int, string, bool, error) {
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return 0, "", false, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Close, err
}

func (k *keepAlive) get(t testing.TB, path string) string {
	t.Helper()
	require.NoError(t, k.send(path))
	code, body, _, err := k.read()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code, body)
	return body
}

// closedWithin reports whether the proxy closed the connection: a read
// returns EOF or a reset, and not a timeout, within d.
func (k *keepAlive) closedWithin(d time.Duration) error {
	_ = k.c.SetReadDeadline(time.Now().Add(d))
	b, err := k.r.ReadByte()
	if err == nil {
		return fmt.Errorf("read %q from a connection that should be closed", b)
	}
	if isTimeoutErr(err) {
		return fmt.Errorf("still open after %s", d)
	}
	return nil
}

// TestUpdateRevokesHTTPKeepAlive (issue 18 item 4): in HTTP mode, an
// update that removes a peer from allow closes its idle keep-alive
// connection at once, lets a request in flight finish and then closes,
// cuts a request that outlives drain_timeout, and leaves a peer that is
// still allowed served on its connection.
func TestUpdateRevokesHTTPKeepAlive(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	entered := make(chan string, 4)
	backend := tcpHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			entered <- r.URL.Path
			<-release
		case "/hang":
			entered <- r.URL.Path
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
		}
		fmt.Fprintf(w, "ok %s", r.URL.Path)
	}))
	cfg := tlsproxy.Config{Name: "web", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: backend, HTTP: true,
		Allow: []string{clientID.String(), otherID.String()}, DrainTimeout: 2 * time.Second}
	srv := startProxy(t, cfg, e.server)
	addr := srv.Addr().String()

	idle := dialKeepAlive(t, e, addr, clientID)
	busy := dialKeepAlive(t, e, addr, clientID)
	stuck := dialKeepAlive(t, e, addr, clientID)
	kept := dialKeepAlive(t, e, addr, otherID)
	for _, k := range []*keepAlive{idle, busy, stuck, kept} {
		require.Equal(t, "ok /", k.get(t, "/"))
	}
	require.NoError(t, busy.send("/slow"))
	require.NoError(t, stuck.send("/hang"))
	for range 2 {
		select {
		case <-entered:
		case <-time.After(15 * time.Second):
			t.Fatal("the slow requests did not reach the backend")
		}
	}

	cfg.Listen, cfg.Allow = addr, []string{otherID.String()}
	start := time.Now()
	require.NoError(t, srv.Update(cfg))

	require.NoError(t, idle.closedWithin(10*time.Second), "an idle keep-alive connection of a revoked peer closes at once")
	close(release)
	code, body, closing, err := busy.read()
	require.NoError(t, err, "the request in flight finishes")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok /slow", body)
	assert.True(t, closing, "its response says Connection: close")
	require.NoError(t, busy.closedWithin(10*time.Second), "then its connection closes")
	require.NoError(t, stuck.closedWithin(15*time.Second), "a request that outlives drain_timeout is cut")
	assert.GreaterOrEqual(t, time.Since(start), cfg.DrainTimeout, "not before drain_timeout")

	for i := range 5 {
		assert.Equal(t, "ok /", kept.get(t, "/"), "request %d of a peer still allowed", i)
	}
	assert.Equal(t, uint64(3), srv.Stats().ConnectionsRevoked)
}

// TestRevokedHTTPRequestNeverReachesTarget: a request that the proxy
// reads after its peer was revoked is answered 403 and not forwarded.
func TestRevokedHTTPRequestNeverReachesTarget(t *testing.T) {
	e := newEnv(t)
	hits := make(chan string, 16)
	release := make(chan struct{})
	backend := tcpHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.URL.Path
		if r.URL.Path == "/slow" {
			<-release
		}
		fmt.Fprint(w, "ok")
	}))
	cfg := tlsproxy.Config{Name: "web", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: backend, HTTP: true,
		Allow: []string{clientID.String()}}
	srv := startProxy(t, cfg, e.server)
	k := dialKeepAlive(t, e, srv.Addr().String(), clientID)
	// Two pipelined requests: the second is read only after the first
	// is answered, by then the peer is revoked.
	require.NoError(t, k.send("/slow"))
	require.NoError(t, k.send("/after"))
	require.Equal(t, "/slow", <-hits)
	cfg.Listen, cfg.Allow = srv.Addr().String(), []string{otherID.String()}
	require.NoError(t, srv.Update(cfg))
	close(release)
	code, _, _, err := k.read()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code, "the request in flight is served")
	if code, _, _, err := k.read(); err == nil {
		assert.Equal(t, http.StatusForbidden, code, "a request read after the revocation is refused")
	}
	require.NoError(t, k.closedWithin(10*time.Second))
	select {
	case p := <-hits:
		t.Fatalf("%s reached the target after the revocation", p)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestMaxConnLifetime: a connection is closed max_conn_lifetime after its
// handshake, in TCP mode at once and in HTTP mode after its response;
// an update that sets a lifetime applies it to established connections.
func TestMaxConnLifetime(t *testing.T) {
	e := newEnv(t)
	echo := echoBackend(t)
	srv, cli := pair(t, e, echo, func(s, _ *tlsproxy.Config) { s.MaxConnLifetime = time.Second })
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "within its lifetime")
	requireClosed(t, c, r, 15*time.Second)
	assert.Equal(t, uint64(1), srv.Stats().ConnectionsLifetimeEnded)
	assert.Zero(t, srv.Stats().ConnectionsRevoked)
	require.NoError(t, oneRequest(cli.Addr().String(), "a new connection is served"))

	// Set by an update: reaches the connection already open.
	srv2, cli2 := pair(t, e, echo, nil)
	c2, err := net.Dial("tcp", cli2.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	r2 := bufio.NewReader(c2)
	roundTrip(t, c2, r2, "no lifetime yet")
	require.NoError(t, srv2.Update(tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv2.Addr().String(), Target: echo,
		Allow: []string{clientID.String()}, MaxConnLifetime: time.Second}))
	requireClosed(t, c2, r2, 15*time.Second)

	// HTTP mode: the response says Connection: close once the lifetime is up.
	backend := tcpHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	web := startProxy(t, tlsproxy.Config{Name: "web", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: backend, HTTP: true,
		Allow: []string{clientID.String()}, MaxConnLifetime: time.Second}, e.server)
	k := dialKeepAlive(t, e, web.Addr().String(), clientID)
	require.Equal(t, "ok", k.get(t, "/"))
	require.NoError(t, k.closedWithin(15*time.Second))
	assert.Equal(t, uint64(1), web.Stats().ConnectionsLifetimeEnded)

	err = tlsproxy.Config{Name: "x", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: echo,
		Allow: []string{clientID.String()}, MaxConnLifetime: 10 * time.Millisecond}.Validate()
	require.ErrorContains(t, err, "max_conn_lifetime: 10ms: must be 0 (no limit) or at least 1s")
}

// TestRevocationJudgesTheHandshakeCertificate: the peer rotates its SVID
// while its connection stays open; re-authorization uses the certificate
// the connection was authenticated with (the proxy cannot ask the peer
// for another), so the connection stays while its ID is allowed and
// closes when it is not.
func TestRevocationJudgesTheHandshakeCertificate(t *testing.T) {
	e := newEnv(t)
	echo := echoBackend(t)
	srv, cli := pair(t, e, echo, nil)
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "first SVID")
	before := currentSerial(t, e.client)
	require.NoError(t, e.srv.RotateSVIDs())
	require.Eventually(t, func() bool { return currentSerial(t, e.client) != before }, 15*time.Second, 10*time.Millisecond)

	base := tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: echo}
	base.Allow = []string{clientID.String(), otherID.String()}
	require.NoError(t, srv.Update(base))
	roundTrip(t, c, r, "its ID is still allowed")
	require.Zero(t, srv.Stats().ConnectionsRevoked)

	base.Allow = []string{otherID.String()}
	require.NoError(t, srv.Update(base))
	requireClosed(t, c, r, 10*time.Second)
	ended := srv.logs.FilterMessage("established connection closed: peer no longer allowed").All()
	require.Len(t, ended, 1)
	assert.Equal(t, clientID.String(), fieldString(ended[0], "peer_id"))
}

// TestClientModeRevokesServer: in client mode allow names the server; an
// update that removes it closes the connections to it.
func TestClientModeRevokesServer(t *testing.T) {
	e := newEnv(t)
	echo := echoBackend(t)
	_, cli := pair(t, e, echo, nil)
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "to the server")
	cfg := tlsproxy.Config{Name: "cli", Mode: tlsproxy.ModeClient, Listen: cli.Addr().String(), Target: cli.Stats().Target,
		Allow: []string{"spiffe://example.org/another-server"}}
	require.NoError(t, cli.Update(cfg))
	requireClosed(t, c, r, 10*time.Second)
	assert.Equal(t, uint64(1), cli.Stats().ConnectionsRevoked)
}

// tcpHTTP serves h on a loopback listener.
func tcpHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: h}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}
