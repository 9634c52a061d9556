package tlsproxy_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestUpdateKeepsEstablishedConnections: an update that removes a peer
// from the allow list leaves that peer's established connection flowing,
// refuses its new connections, and admits the newly allowed peer; the new
// target applies to new connections only.
func TestUpdateKeepsEstablishedConnections(t *testing.T) {
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
	srv, cli := pair(t, e, first, nil)
	other := startProxy(t, tlsproxy.Config{Name: "other", Mode: tlsproxy.ModeClient, Listen: "127.0.0.1:0",
		Target: srv.Addr().String(), Allow: []string{serverID.String()}}, e.source(t, "other"))

	long, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer long.Close()
	lr := bufio.NewReader(long)
	roundTrip(t, long, lr, "before the update")
	require.Error(t, oneRequest(other.Addr().String(), "other, not yet allowed"))

	cfg := tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: srv.Addr().String(), Target: second,
		Allow: []string{otherID.String()}, HandshakeTimeout: 2 * time.Second, MaxConns: 10}
	require.NoError(t, srv.Update(cfg))
	assert.Equal(t, second, srv.Stats().Target)
	assert.Equal(t, 10, srv.Stats().MaxConns)

	// The established connection goes on, to the old target.
	roundTrip(t, long, lr, "after the update")
	// A new connection from the removed peer is refused...
	before := srv.Stats().HandshakeFailures[tlsproxy.CauseUnauthorizedID]
	require.Error(t, oneRequest(cli.Addr().String(), "client, no longer allowed"))
	require.Eventually(t, func() bool {
		return srv.Stats().HandshakeFailures[tlsproxy.CauseUnauthorizedID] == before+1
	}, 10*time.Second, 10*time.Millisecond)
	entries := srv.rejections(tlsproxy.CauseUnauthorizedID)
	assert.Equal(t, clientID.String(), fieldString(entries[len(entries)-1], "peer_id"))
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
