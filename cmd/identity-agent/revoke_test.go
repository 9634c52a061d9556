package main_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

const revokeConfig = `workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
log: {level: info}
outputs:
  - {name: svc, dir: %[2]s/out, cert_file: svid.pem, key_file: key.pem}
proxies:
  - {name: web, mode: server, spiffe_id: spiffe://example.org/svc, http: true, listen: %[3]q, target: %[4]q, allow: [%[6]s], drain_timeout: 5s}
  - {name: tcp, mode: server, spiffe_id: spiffe://example.org/svc, listen: %[5]q, target: %[7]q, allow: [%[6]s], drain_timeout: 5s}
  - {name: life, mode: server, spiffe_id: spiffe://example.org/svc, listen: %[8]q, target: %[7]q, allow: [%[6]s], max_conn_lifetime: 2s}
`

// httpGet sends one keep-alive request on m and reads the response.
func (m *mtlsConn) httpGet(path string) (string, error) {
	_ = m.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(m.conn, "GET %s HTTP/1.1\r\nHost: svc\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(m.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), err
}

// closedWithin reports nil once the agent has closed m (EOF or reset
// without data) within d.
func (m *mtlsConn) closedWithin(d time.Duration) error {
	_ = m.conn.SetReadDeadline(time.Now().Add(d))
	b, err := m.r.ReadByte()
	if err == nil {
		return fmt.Errorf("read %q from a connection that should be closed", b)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return fmt.Errorf("still open %s later", d)
	}
	return nil
}

// TestReloadRevokesOpenConnections is issue 18 item 4 against the real
// binary: a reload that removes a client's ID from allow closes its open
// HTTP keep-alive connection and its TCP-mode connection within
// drain_timeout, a peer still allowed keeps both of its connections
// served, and max_conn_lifetime closes a long connection.
func TestReloadRevokesOpenConnections(t *testing.T) {
	dir := svidtest.ShortDir(t, "rv")
	srv, apiSock := startDevAPI(t, time.Hour)
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	})}
	go func() { _ = hs.Serve(backend) }()
	t.Cleanup(func() { _ = hs.Close() })
	echo := echoServer(t)
	webAddr, tcpAddr, lifeAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	client := spiffeid.RequireFromString("spiffe://example.org/client")
	other := spiffeid.RequireFromString("spiffe://example.org/other")
	cfg := filepath.Join(dir, "agent.yaml")
	write := func(allow string) {
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(revokeConfig, apiSock, dir, webAddr, backend.Addr().String(),
			tcpAddr, allow, echo, lifeAddr)), 0o600))
	}
	write(client.String() + ", " + other.String())
	logs := startAgent(t, cfg)
	waitStatus(t, cfg, 0)

	dial := func(addr string, id spiffeid.ID) *mtlsConn {
		t.Helper()
		m, err := dialProxy(srv, addr, id)
		require.NoError(t, err)
		t.Cleanup(func() { _ = m.conn.Close() })
		return m
	}
	webClient, webOther := dial(webAddr, client), dial(webAddr, other)
	tcpClient, tcpOther := dial(tcpAddr, client), dial(tcpAddr, other)
	for i := range 3 {
		for _, m := range []*mtlsConn{webClient, webOther} {
			got, err := m.httpGet(fmt.Sprintf("/%d", i))
			require.NoError(t, err)
			require.Equal(t, fmt.Sprintf("hello /%d", i), got)
		}
		for _, m := range []*mtlsConn{tcpClient, tcpOther} {
			got, err := m.roundTrip("x")
			require.NoError(t, err)
			require.Equal(t, "echo: x", got)
		}
	}

	// max_conn_lifetime: the connection works, then closes by itself.
	long := dial(lifeAddr, client)
	got, err := long.roundTrip("while young")
	require.NoError(t, err)
	require.Equal(t, "echo: while young", got)
	require.NoError(t, long.closedWithin(20*time.Second), "max_conn_lifetime 2s must close the connection")

	write(other.String())
	res := runCLI(t, "reload", "--config", cfg)
	require.Equal(t, 0, res.code, "%+v", res)
	require.Contains(t, res.stdout, "proxy web: updated in place")
	require.Contains(t, res.stdout, "proxy tcp: updated in place")

	// drain_timeout is 5s; both connections are idle, so they close at once.
	require.NoError(t, webClient.closedWithin(5*time.Second), "HTTP keep-alive connection of a revoked client")
	require.NoError(t, tcpClient.closedWithin(5*time.Second), "TCP-mode connection of a revoked client")
	for i := range 5 {
		got, err := webOther.httpGet(fmt.Sprintf("/after-%d", i))
		require.NoError(t, err, "a client still allowed keeps its keep-alive connection")
		require.Equal(t, fmt.Sprintf("hello /after-%d", i), got)
		got, err = tcpOther.roundTrip("still")
		require.NoError(t, err, "a client still allowed keeps its TCP connection")
		require.Equal(t, "echo: still", got)
	}
	if fresh, err := dialProxy(srv, webAddr, client); err == nil {
		_, err = fresh.httpGet("/new")
		_ = fresh.conn.Close()
		require.Error(t, err, "a new connection of the revoked client is refused")
	}
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), "established connection closed: peer no longer allowed") == 2
	}, 10*time.Second, 100*time.Millisecond, "one line per revoked connection; logs:\n%s", logs)
	assert.Contains(t, logs.String(), client.String())
	st := statusJSON(t, cfg)
	proxies, _ := st["proxies"].([]any)
	revoked := 0.0
	for _, p := range proxies {
		revoked += p.(map[string]any)["connections_revoked"].(float64)
	}
	assert.Equal(t, 2.0, revoked, "status counts the revoked connections")
}
