package tlsproxy_test

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestUpdateRevokesEstablishedConnections (issue 18 item 4): an update
// that removes a peer from the allow list closes that peer's established
// TCP-mode connection at once and refuses its new ones, while a peer
// still allowed keeps its connection (to the target it was accepted
// under); the newly allowed peer reaches the new target.
func TestUpdateRevokesEstablishedConnections(t *testing.T) {
	e := newEnv(t)
	first := echoBackend(t)
	second := tcpBackend(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte("second:" + line)); err != nil {
				return
			}
		}
	})
	srv, cli := pair(t, e, first, func(s, _ *tlsproxy.Config) { s.Allow = []string{clientID.String(), "spiffe://example.org/third"} })
	other := startProxy(t, tlsproxy.Config{Name: "other", Mode: tlsproxy.ModeClient, Listen: "127.0.0.1:0",
		Target: srv.Addr().String(), Allow: []string{serverID.String()}}, e.source(t, "other"))

	long, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer long.Close()
	lr := bufio.NewReader(long)
	roundTrip(t, long, lr, "before the update")
	require.Error(t, oneRequest(other.Addr().String(), "other, not yet allowed"))
	// Under TLS 1.3 the client sees the refusal before the server has
	// counted and logged it: wait for both, so that this rejection cannot
	// land after `before` is read below and pass for the client's.
	waitRejection(t, srv, tlsproxy.CauseUnauthorizedID, otherID.String(), 1)

	// An update that keeps the peer allowed leaves its connection alone.
	cfg := tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: first,
		Allow: []string{clientID.String()}}
	require.NoError(t, srv.Update(cfg))
	roundTrip(t, long, lr, "still allowed")

	cfg = tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: second,
		Allow: []string{otherID.String()}, HandshakeTimeout: 2 * time.Second, MaxConns: 10}
	require.NoError(t, srv.Update(cfg))
	assert.Equal(t, second, srv.Stats().Target)
	assert.Equal(t, 10, srv.Stats().MaxConns)

	// The established connection of the removed peer is closed at once.
	requireClosed(t, long, lr, 10*time.Second)
	assert.Equal(t, uint64(1), srv.Stats().ConnectionsRevoked)
	ended := srv.logs.FilterMessage("established connection closed: peer no longer allowed").All()
	require.Len(t, ended, 1)
	assert.Equal(t, clientID.String(), fieldString(ended[0], "peer_id"))
	assert.Equal(t, "revoked", fieldString(ended[0], "cause"))
	assert.Equal(t, 1.0, srv.metric(t, "identity_agent_proxy_connections_ended_total", map[string]string{"cause": "revoked"}))
	// A new connection from the removed peer is refused...
	before := srv.Stats().HandshakeFailures[tlsproxy.CauseUnauthorizedID]
	require.Error(t, oneRequest(cli.Addr().String(), "client, no longer allowed"))
	// The counter is bumped just before the log line is written: wait for
	// the client's own line, then for the count.
	waitRejection(t, srv, tlsproxy.CauseUnauthorizedID, clientID.String(), 1)
	require.Eventually(t, func() bool {
		return srv.Stats().HandshakeFailures[tlsproxy.CauseUnauthorizedID] == before+1
	}, 10*time.Second, 10*time.Millisecond)
	// ...and the newly allowed one reaches the new target.
	c, err := net.Dial("tcp", other.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(15*time.Second)))
	_, err = c.Write([]byte("hello\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "second:hello\n", line)
	assert.NotEmpty(t, srv.logs.FilterMessage("proxy updated").All())
	// A peer still allowed keeps its connection through a narrowing update.
	require.NoError(t, srv.Update(tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: second,
		Allow: []string{otherID.String(), "spiffe://example.org/third"}}))
	require.NoError(t, srv.Update(tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: second,
		Allow: []string{otherID.String()}}))
	require.NoError(t, c.SetDeadline(time.Now().Add(15*time.Second)))
	_, err = c.Write([]byte("again\n"))
	require.NoError(t, err)
	line, err = bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "second:again\n", line)
	assert.Equal(t, uint64(1), srv.Stats().ConnectionsRevoked)
}

// requireClosed waits up to within for the proxy to close c: a read
// returns an error (EOF or reset) and no data.
func requireClosed(t testing.TB, c net.Conn, r *bufio.Reader, within time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	line, err := r.ReadString('\n')
	require.Error(t, err, "the connection must be closed; read %q", line)
	require.False(t, isTimeoutErr(err), "the connection was still open after %s", within)
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestUpdateRefusesWhatNeedsANewProxy: name, mode, listen and http cannot
// change in place, and an invalid config changes nothing.
func TestUpdateRefusesWhatNeedsANewProxy(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), nil)
	base := tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Target: echoBackend(t), Allow: []string{clientID.String()}}
	for _, tc := range []struct {
		mutate func(*tlsproxy.Config)
		want   string
	}{
		{func(c *tlsproxy.Config) { c.Name = "renamed" }, `proxy "srv": update: name: "renamed"`},
		{func(c *tlsproxy.Config) { c.Mode = tlsproxy.ModeClient }, `proxy "srv": update: mode`},
		{func(c *tlsproxy.Config) { c.Listen = "127.0.0.1:1" }, `proxy "srv": update: listen: 127.0.0.1:1: a new address needs a new proxy`},
		{func(c *tlsproxy.Config) { c.HTTP = true }, `proxy "srv": update: http`},
		{func(c *tlsproxy.Config) { c.Allow = []string{"nope"} }, `proxy "srv": allow[0]: "nope"`},
		{func(c *tlsproxy.Config) { c.MaxHandshakes = -1 }, `proxy "srv": max_handshakes: -1: must not be negative`},
	} {
		cfg := base
		tc.mutate(&cfg)
		assert.ErrorContains(t, srv.Update(cfg), tc.want)
	}
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, bufio.NewReader(c), "unchanged")
	// The bound address is the same address.
	base.Listen = srv.Addr().String()
	require.NoError(t, srv.Update(base))
}

// TestUpdateHTTPTarget: in HTTP mode each request goes to the target in
// force when it arrives, and pooled upstream connections to the old one
// are dropped.
func TestUpdateHTTPTarget(t *testing.T) {
	e := newEnv(t)
	first, second := httpBackend(t), httpBackend(t)
	srv, cli := pair(t, e, first, func(s, _ *tlsproxy.Config) { s.HTTP, s.RewriteHost = true, true })
	url := "http://" + cli.Addr().String() + "/x"
	assert.Contains(t, get(t, httpClient(t), url, nil), "host="+first+"\n")
	require.NoError(t, srv.Update(tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Target: second, HTTP: true, RewriteHost: true,
		Allow: []string{clientID.String()}}))
	assert.Contains(t, get(t, httpClient(t), url, nil), "host="+second+"\n")
}

// waitRejection waits until p has logged n rejections of peer for cause.
func waitRejection(t *testing.T, p *proxyUnderTest, cause tlsproxy.Cause, peer string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		got := 0
		for _, e := range p.rejections(cause) {
			if fieldString(e, "peer_id") == peer {
				got++
			}
		}
		return got == n
	}, 10*time.Second, 10*time.Millisecond, "%s: %d rejection(s) of %s never logged", cause, n, peer)
}
