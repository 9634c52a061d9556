package agent_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		_ = c.Close()
	}
	return err == nil
}

// TestReloadMovesAProxyAndItsMetrics: a proxy whose listen address changes
// is a new proxy on the new address and a drain of the old one; its
// metrics move with its name (registering both at once would be refused
// as a duplicate), a port already taken refuses the whole reload, and
// every goroutine of the drained proxy is gone at the end (goleak).
func TestReloadMovesAProxyAndItsMetrics(t *testing.T) {
	first := freeAddr(t)
	cfg, dir := setup(t, first)
	path := filepath.Join(dir, "agent.yaml")
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	a := startAgent(t, cfg)
	require.True(t, listening(first))

	// The new address is taken: nothing changes.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(orig), first, taken.Addr().String(), 1)), 0o600))
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	res := a.Reload(rctx, path)
	require.ErrorContains(t, res.Err, "proxies[0].listen")
	require.Equal(t, 1.0, metricstest.Value(t, a.Registry(), "identity_agent_config_reload_failed", nil))
	require.True(t, listening(first), "a refused reload leaves the proxy where it was")
	require.NoError(t, taken.Close())

	second := freeAddr(t)
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(orig), first, second, 1)), 0o600))
	res = a.Reload(rctx, path)
	require.NoError(t, res.Err)
	require.Equal(t, []string{"proxy p: restarted on " + second}, res.Changes)
	require.True(t, listening(second))
	require.Eventually(t, func() bool { return !listening(first) }, 10*time.Second, 20*time.Millisecond)
	// One series set for proxy p, from the new proxy, gathered without a
	// duplicate error.
	_, found, err := metricstest.Lookup(a.Registry(), "identity_agent_proxy_connections_open", map[string]string{"proxy": "p"})
	require.NoError(t, err)
	require.True(t, found)
	r := a.Report()
	require.Len(t, r.Proxies, 1)
	require.Equal(t, second, r.Proxies[0].Listen)
	require.Equal(t, uint64(2), r.Config.Reloads)
	require.Equal(t, 2.0, metricstest.Value(t, a.Registry(), "identity_agent_config_reloads_total", nil))
	require.Equal(t, 0.0, metricstest.Value(t, a.Registry(), "identity_agent_config_reload_failed", nil),
		"the last reload was applied")
	require.NotNil(t, r.Config.LastFailedReload)
	require.Empty(t, r.Config.LastReload.Error)
}

// startReloadable runs an agent from setup's file (proxy p on addr) and
// returns it with the file's directory and content.
func startReloadable(t *testing.T, addr string) (a *agent.Agent, dir, orig string) {
	t.Helper()
	cfg, dir := setup(t, addr)
	b, err := os.ReadFile(filepath.Join(dir, "agent.yaml"))
	require.NoError(t, err)
	return startAgent(t, cfg), dir, string(b)
}

// reloadWith writes content over the agent's file in dir and reloads it;
// content must differ from what is there, or the test proves nothing.
func reloadWith(t *testing.T, a *agent.Agent, dir, content string) agent.ReloadResult {
	t.Helper()
	path := filepath.Join(dir, "agent.yaml")
	old, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NotEqual(t, string(old), content, "the edit changed nothing")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return a.Reload(ctx, path)
}

// TestReloadRestartsAProxyOnItsOwnAddress: a change that tlsproxy.Update
// cannot make in place (here the SVID hint) but that keeps the listen
// address is applied: the new proxy takes over the address the old one
// held, rather than the reload being refused as "address in use".
func TestReloadRestartsAProxyOnItsOwnAddress(t *testing.T) {
	addr := freeAddr(t)
	a, dir, orig := startReloadable(t, addr)

	edited := strings.Replace(orig, "drain_timeout: 2s}", "drain_timeout: 2s, hint: other}", 1)
	res := reloadWith(t, a, dir, edited)
	require.NoError(t, res.Err)
	require.Equal(t, []string{"proxy p: restarted on " + addr}, res.Changes)
	require.True(t, listening(addr))
	r := a.Report()
	require.Len(t, r.Proxies, 1)
	require.Equal(t, addr, r.Proxies[0].Listen)
}

// TestReloadAfterRunReturnsAtOnce: a reload asked of an agent that has
// stopped (a SIGHUP racing SIGTERM) is refused at once, not left waiting
// for a Run loop that will never read it.
func TestReloadAfterRunReturnsAtOnce(t *testing.T) {
	cfg, dir := setup(t, "127.0.0.1:0")
	ready := make(chan struct{})
	a, err := newAgent(t, cfg, agent.Options{OnReady: func() { close(ready) }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-ready
	cancel()
	require.NoError(t, <-done)

	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	start := time.Now()
	res := a.Reload(rctx, filepath.Join(dir, "agent.yaml"))
	require.ErrorContains(t, res.Err, "agent stopped")
	require.NoError(t, rctx.Err(), "Reload returned only when its context ended (after %s)", time.Since(start))
}

// TestReloadRenamesAProxyOnItsAddress: a proxy renamed (or any proxy that
// takes over the address of one the reload removes) gets the address as
// the old one drains; the reload is not refused as "address in use".
func TestReloadRenamesAProxyOnItsAddress(t *testing.T) {
	addr := freeAddr(t)
	a, dir, orig := startReloadable(t, addr)

	edited := strings.Replace(orig, "{name: p, ", "{name: q, ", 1)
	res := reloadWith(t, a, dir, edited)
	require.NoError(t, res.Err)
	require.ElementsMatch(t, []string{"proxy q: added", "proxy p: removed (draining)"}, res.Changes)
	require.True(t, listening(addr))
	r := a.Report()
	require.Len(t, r.Proxies, 1)
	require.Equal(t, "q", r.Proxies[0].Name)
	require.True(t, r.Proxies[0].Running)
}

// TestReloadRefusesAnOutputItCannotCreate: a reload that adds an output
// whose directory cannot be created (its parent is a file), together with
// a new proxy and another new output, is refused as a whole: the proxy
// does not stay listening, the other output's directory is not left
// behind, and the running configuration carries on.
func TestReloadRefusesAnOutputItCannotCreate(t *testing.T) {
	addr := freeAddr(t)
	a, dir, orig := startReloadable(t, addr)

	require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o600))
	added := freeAddr(t)
	edited := strings.Replace(orig, "proxies:\n", fmt.Sprintf(
		"  - {name: fresh, dir: \"%s/new/fresh\", cert_file: svid.pem, key_file: key.pem}\n"+
			"  - {name: bad, dir: \"%s/file/bad\", cert_file: svid.pem, key_file: key.pem}\n"+
			"proxies:\n"+
			"  - {name: extra, mode: server, listen: \"%s\", target: \"127.0.0.1:1\", allow: [spiffe://example.org/client]}\n",
		dir, dir, added), 1)
	res := reloadWith(t, a, dir, edited)
	// Pointed at the output's line and field, like every other refusal.
	require.ErrorContains(t, res.Err, "agent.yaml:6: outputs[2].dir: ")
	require.False(t, listening(added), "the refused reload's proxy must not stay listening")
	require.NoDirExists(t, filepath.Join(dir, "new"))
	r := a.Report()
	require.Len(t, r.Proxies, 1)
	require.Len(t, r.Outputs, 1)
	require.True(t, listening(addr))
}

// TestShutdownCutsTheDrainOfARemovedProxy: a proxy a reload removed drains
// in the background under its own drain_timeout (5m here) while an
// authorized connection stays open through it. Stopping the agent must not
// wait for that: the drain is cut at shutdown's own deadline (the 30 s
// default), or `systemctl stop` would hang until SIGKILL.
func TestShutdownCutsTheDrainOfARemovedProxy(t *testing.T) {
	dir := t.TempDir()
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), TTL: time.Hour,
		Identities: []svidtest.Identity{{ID: spiffeid.RequireFromString("spiffe://example.org/svc")}}})
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	listen := freeAddr(t)
	base := fmt.Sprintf(`workload_api: {socket: "%s"}
admin: {socket: "%s/admin.sock"}
outputs:
  - {name: svc, dir: "%s/out", cert_file: svid.pem, key_file: key.pem}
`, srv.Addr(), dir, dir)
	withProxy := base + fmt.Sprintf(`proxies:
  - {name: p, mode: server, listen: "%s", target: "%s", allow: [spiffe://example.org/client], drain_timeout: 5m}
`, listen, echo.Addr())
	path := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(path, []byte(withProxy), 0o600))
	cfg, err := config.Parse(path, []byte(withProxy), func(string) string { return "" })
	require.NoError(t, err)
	ready := make(chan struct{})
	a, err := newAgent(t, cfg, agent.Options{OnReady: func() { close(ready) }})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-ready

	client, err := srv.CA().IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/client"), time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	tcfg := tlsconfig.MTLSClientConfig(staticSVID{client}, srv.CA().X509Bundle(), tlsconfig.AuthorizeAny())
	conn, err := tls.Dial("tcp", listen, tcfg)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("x"))
	require.NoError(t, err)
	buf := make([]byte, 1)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err, "the connection is through to the echo server")

	res := reloadWith(t, a, dir, base)
	require.NoError(t, res.Err)
	require.Contains(t, res.Changes, "proxy p: removed (draining)")

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		// The cut drain is reported (its connection had to be closed).
		t.Logf("Run returned after %s: %v", time.Since(start).Round(time.Second), err)
	case <-time.After(2 * time.Minute):
		t.Fatal("shutdown waited for the removed proxy's 5m drain")
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(buf)
	require.Error(t, err, "the drained connection was closed at shutdown")
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }
