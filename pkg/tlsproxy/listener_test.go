package tlsproxy_test

import (
	"bufio"
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestListeners: the proxy serves on a listener it is given (its address
// then is the Listen default) and never creates a socket file itself.
func TestListeners(t *testing.T) {
	e := newEnv(t)
	srv, _ := pair(t, e, echoBackend(t), nil)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cli := startProxy(t, tlsproxy.Config{Name: "given", Mode: tlsproxy.ModeClient, Target: srv.Addr().String(),
		Allow: []string{serverID.String()}}, e.client, tlsproxy.WithListener(ln))
	assert.Equal(t, ln.Addr().String(), cli.Stats().Listen)
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	roundTrip(t, c, bufio.NewReader(c), "through a given listener")

	sock := filepath.Join(e.sockDir, "none.sock")
	p, err := tlsproxy.New(tlsproxy.Config{Name: "nosock", Mode: tlsproxy.ModeClient, Listen: "unix://" + sock,
		Target: srv.Addr().String(), Allow: []string{serverID.String()}}, e.client, e.client)
	require.NoError(t, err)
	err = p.Start(context.Background())
	assert.ErrorContains(t, err, `proxy "nosock": listen: unix://`+sock+`: unix sockets need WithUnixListener or WithListener`)
	assert.NoFileExists(t, sock)
	require.NoError(t, p.Close())
}
