package tlsproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestSlowClientSurvivesSameSourceChurn (issue 18): attackers on the
// client's own address keep far more idle connections than its per-source
// share and replace each one closed at once. An authorized client that is
// descheduled for a moment between connect and its ClientHello (here 20ms,
// as a loaded machine does to it) must still be served: before the shed
// grace the accept loop churned the share within a millisecond and reset
// the client before it had written anything.
func TestSlowClientSurvivesSameSourceChurn(t *testing.T) {
	const attackers, clients, pause = 50, 10, 20 * time.Millisecond
	ca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	now := time.Now()
	serverSVID, err := ca.IssueX509SVID(serverID, now.Add(-time.Minute), now.Add(time.Hour), "localhost")
	require.NoError(t, err)
	clientSVID, err := ca.IssueX509SVID(clientID, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	p, err := tlsproxy.New(tlsproxy.Config{Name: "grace", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{clientID.String()}, MaxHandshakesPerSource: 8},
		serverSVID, x509bundle.NewSet(ca.X509Bundle()), tlsproxy.WithLogger(zap.NewNop()))
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	addr := p.Addr().String()

	a := startAttacker(t, addr, attackers, []net.IP{net.IPv4(127, 0, 0, 1)})
	require.Eventually(t, func() bool { return a.dials.Load() > 2*attackers }, 60*time.Second, 10*time.Millisecond,
		"the attackers did not churn")
	cfg := clientConfig(ca.X509Bundle().X509Authorities(), clientSVID)
	served := 0
	for i := range clients {
		err := func() error {
			raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				return err
			}
			defer raw.Close()
			time.Sleep(pause) // descheduled between connect and ClientHello
			c := tls.Client(raw, cfg)
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := fmt.Sprintf("slow %d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				return err
			}
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err
			}
			if line != msg {
				return fmt.Errorf("got %q", line)
			}
			return nil
		}()
		if err != nil {
			t.Logf("client %d: %v", i, err)
			continue
		}
		served++
	}
	a.stop()
	assert.Equal(t, clients, served, "slow authorized clients served while their address churned")
	t.Logf("attacker dials: %d; shed: %v", a.dials.Load(), p.Stats().HandshakesShed)
}
