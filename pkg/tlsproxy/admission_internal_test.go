package tlsproxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// loopbackPairs returns n accepted server-side connections from 127.0.0.1
// and their client ends.
func loopbackPairs(t *testing.T, n int) (server, client []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		s, err := ln.Accept()
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
		server, client = append(server, s), append(client, c)
	}
	return server, client
}

// TestShedSparesUnreadClientHello (issue 18 item 7): a hello client's
// ClientHello can sit in the kernel, unread, while a flood from its own
// address fills the source's share: the proxy's goroutine for it has not
// run yet. Judged by our reads alone it is the oldest idle connection and
// is shed; the kernel's receive queue says it is not idle, and idle
// attackers go first. Both the per-source cap and the full pool.
func TestShedSparesUnreadClientHello(t *testing.T) {
	for _, tc := range []struct {
		name string
		lim  limits
	}{
		{"source cap", limits{maxConns: 10, maxHandshakes: 100, perSource: 4}},
		{"pool full", limits{maxConns: 10, maxHandshakes: 4, perSource: 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const attackers = 40
			server, client := loopbackPairs(t, 1+attackers)
			_, err := client[0].Write([]byte("\x16\x03\x01 a ClientHello"))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return hasInput(server[0]) }, 10*time.Second, time.Millisecond)

			a := newAdmission(tc.lim)
			src := netip.MustParseAddr("127.0.0.1")
			hello, victims := a.admit(&tracked{raw: server[0]}, src)
			require.Empty(t, victims)
			for i, s := range server[1:] {
				_, victims := a.admit(&tracked{raw: s}, src)
				for _, v := range victims {
					require.NotSame(t, hello, v, "the client's handshake was shed for attacker %d", i)
				}
			}
			require.False(t, hello.shed)
			require.Equal(t, progSent, hello.level)
			require.True(t, a.authenticate(hello))
		})
	}
}

// TestShedByProgress: among handshakes that all sent something, the one
// we have not answered goes before the one we answered, whatever their age.
func TestShedByProgress(t *testing.T) {
	server, _ := loopbackPairs(t, 3)
	a := newAdmission(limits{maxConns: 10, maxHandshakes: 2, perSource: 2})
	src := netip.MustParseAddr("127.0.0.1")
	answered, _ := a.admit(&tracked{raw: server[0]}, src)
	sent, _ := a.admit(&tracked{raw: server[1]}, src)
	a.progressed(answered, progAnswered)
	a.progressed(sent, progSent)
	_, victims := a.admit(&tracked{raw: server[2]}, src)
	require.Len(t, victims, 1)
	require.Same(t, sent, victims[0])
	require.False(t, answered.shed)
}
