package tlsproxy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest/observer"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestPairCarriesHTTP: client proxy → server proxy → Go HTTP backend,
// with keep-alive and fresh connections; later ones resume the TLS session.
func TestPairCarriesHTTP(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, httpBackend(t), nil)
	url := "http://" + cli.Addr().String()

	c := httpClient(t)
	for i := range 5 {
		body := get(t, c, fmt.Sprintf("%s/keepalive/%d", url, i), nil)
		require.Contains(t, body, fmt.Sprintf("path=/keepalive/%d", i))
	}
	// Fresh connections: the first full handshake left a ticket, so later
	// handshakes resume, and resumption still ran our verification.
	for i := range 5 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 15 * time.Second}
		body := get(t, c, fmt.Sprintf("%s/fresh/%d", url, i), nil)
		require.Contains(t, body, fmt.Sprintf("path=/fresh/%d", i))
	}
	require.Eventually(t, func() bool { return srv.Stats().ConnectionsOpen <= 1 }, 10*time.Second, 20*time.Millisecond)
	st := srv.Stats()
	assert.GreaterOrEqual(t, st.ConnectionsTotal, uint64(6))
	assert.GreaterOrEqual(t, st.HandshakesResumed, uint64(3), "TLS session resumption between our proxies")
	assert.Equal(t, st.HandshakesResumed, cli.Stats().HandshakesResumed)
	assert.Positive(t, st.BytesToTarget)
	assert.Positive(t, st.BytesFromTarget)
	assert.Equal(t, cli.Stats().BytesToTarget, st.BytesToTarget, "same payload on both hops")
	for _, cause := range []tlsproxy.Cause{tlsproxy.CauseNoCert, tlsproxy.CauseOther, tlsproxy.CauseUnauthorizedID} {
		assert.Zero(t, srv.Stats().HandshakeFailures[cause])
	}
	assert.Equal(t, float64(st.ConnectionsTotal), srv.metric(t, "identity_agent_proxy_connections_total", nil))
	assert.Equal(t, float64(st.BytesFromTarget), srv.metric(t, "identity_agent_proxy_bytes_total", map[string]string{"direction": "from_target"}))
}

// TestClientRejectsWrongServer: the client proxy checks the server's ID.
func TestClientRejectsWrongServer(t *testing.T) {
	e := newEnv(t)
	_, cli := pair(t, e, echoBackend(t), func(_, c *tlsproxy.Config) {
		c.Allow = []string{"spiffe://example.org/somebody-else"}
	})
	conn, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadAll(conn) // closed without data once the handshake fails
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(cli.rejections(tlsproxy.CauseUnauthorizedID)) == 1 }, 10*time.Second, 20*time.Millisecond)
	entry := cli.rejections(tlsproxy.CauseUnauthorizedID)[0]
	assert.Equal(t, serverID.String(), fieldString(entry, "peer_id"))
}

// TestIndependentPeersAndRejections: curl and openssl with the right
// SVID get through; every kind of bad peer is rejected with its cause in
// the log and the metrics, and the proxy keeps serving.
func TestIndependentPeersAndRejections(t *testing.T) {
	for _, tool := range []string{"curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required: %v", tool, err)
		}
	}
	e := newEnv(t)
	srv := startProxy(t, tlsproxy.Config{Name: "web", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: httpBackend(t), Allow: []string{clientID.String(), "spiffe://partner.org/*"},
		HandshakeTimeout: 5 * time.Second}, e.server)
	port := srv.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()

	good, err := e.client.GetX509SVID()
	require.NoError(t, err)
	goodCert, goodKey := writePEM(t, dir, "good", good)
	caFile := writeBundle(t, dir, e.srv.CA().X509Bundle().X509Authorities())
	url := fmt.Sprintf("https://localhost:%d/curl", port)
	resolve := fmt.Sprintf("localhost:%d:127.0.0.1", port)

	curl := func(args ...string) (string, error) {
		base := []string{"-sS", "--max-time", "15", "--resolve", resolve, "--cacert", caFile}
		out, err := exec.Command("curl", append(base, args...)...).CombinedOutput()
		return string(out), err
	}
	stillServing := func() {
		t.Helper()
		out, err := curl("--cert", goodCert, "--key", goodKey, url)
		require.NoError(t, err, out)
		require.Contains(t, out, "path=/curl")
	}
	stillServing()

	// openssl s_client as an independent TLS stack.
	cmd := exec.Command("openssl", "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port),
		"-cert", goodCert, "-key", goodKey, "-CAfile", caFile, "-verify_return_error", "-quiet", "-ign_eof")
	cmd.Stdin = strings.NewReader("GET /openssl HTTP/1.0\r\nHost: x\r\n\r\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "path=/openssl")

	// A federated trust domain member that the allow list names.
	partner, err := e.srv.FederatedCA(partnerTD).IssueX509SVID(spiffeid.RequireFromString("spiffe://partner.org/batch"),
		time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	pc, pk := writePEM(t, dir, "partner", partner)
	out2, err := curl("--cert", pc, "--key", pk, url)
	require.NoError(t, err, out2)

	foreignCA, err := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("evil.org"))
	require.NoError(t, err)
	impostorCA, err := svidtest.NewCA(td) // claims example.org, not in the bundle
	require.NoError(t, err)
	now := time.Now()
	mint := func(ca *svidtest.CA, id string, nb, na time.Time) (string, string) {
		s, err := ca.IssueX509SVID(spiffeid.RequireFromString(id), nb, na)
		require.NoError(t, err)
		return writePEM(t, dir, strings.NewReplacer(":", "_", "/", "_").Replace(id)+nb.String()[:4], s)
	}

	cases := []struct {
		name   string
		cause  tlsproxy.Cause
		peerID string
		reject func() error
	}{
		{"wrong ID", tlsproxy.CauseUnauthorizedID, otherID.String(), func() error {
			c, k := mint(e.srv.CA(), otherID.String(), now.Add(-time.Minute), now.Add(time.Hour))
			_, err := curl("--cert", c, "--key", k, url)
			return err
		}},
		{"foreign trust domain", tlsproxy.CauseUnknownCA, "spiffe://evil.org/client", func() error {
			c, k := mint(foreignCA, "spiffe://evil.org/client", now.Add(-time.Minute), now.Add(time.Hour))
			_, err := curl("--cert", c, "--key", k, url)
			return err
		}},
		{"impostor CA for our trust domain", tlsproxy.CauseUnknownCA, clientID.String(), func() error {
			c, k := mint(impostorCA, clientID.String(), now.Add(-time.Minute), now.Add(time.Hour))
			_, err := curl("--cert", c, "--key", k, url)
			return err
		}},
		{"expired", tlsproxy.CauseExpired, clientID.String(), func() error {
			c, k := mint(e.srv.CA(), clientID.String(), now.Add(-2*time.Hour), now.Add(-time.Hour))
			_, err := curl("--cert", c, "--key", k, url)
			return err
		}},
		{"no certificate", tlsproxy.CauseNoCert, "", func() error {
			_, err := curl(url)
			return err
		}},
		{"no certificate (openssl)", tlsproxy.CauseNoCert, "", func() error {
			cmd := exec.Command("openssl", "s_client", "-connect", fmt.Sprintf("127.0.0.1:%d", port), "-quiet", "-ign_eof")
			cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
			out, _ := cmd.CombinedOutput()
			if strings.Contains(string(out), "path=") {
				return nil
			}
			return fmt.Errorf("rejected: %s", out)
		}},
		{"plaintext HTTP", tlsproxy.CauseNotTLS, "", func() error {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)) //nolint:noctx // bounded by the proxy closing
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
			return fmt.Errorf("rejected: %v", err)
		}},
		{"garbage bytes", tlsproxy.CauseNotTLS, "", func() error {
			c, err := net.Dial("tcp", srv.Addr().String())
			require.NoError(t, err)
			defer c.Close()
			_, _ = c.Write([]byte("\x00\x07\xffgarbage\r\n\x01\x02\x03 not a TLS record at all"))
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			if n > 0 {
				return nil
			}
			return fmt.Errorf("rejected")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := srv.metric(t, "identity_agent_proxy_handshake_failures_total", map[string]string{"cause": string(tc.cause)})
			require.Error(t, tc.reject(), "peer must be rejected")
			require.Eventually(t, func() bool {
				return srv.metric(t, "identity_agent_proxy_handshake_failures_total", map[string]string{"cause": string(tc.cause)}) == before+1
			}, 10*time.Second, 20*time.Millisecond)
			// The counter is bumped just before the log line is written:
			// wait for the line, then check there is exactly one.
			var logs []observer.LoggedEntry
			require.Eventually(t, func() bool {
				logs = srv.rejections(tc.cause)
				return len(logs) >= int(before)+1
			}, 10*time.Second, 20*time.Millisecond, "rejection never logged")
			require.Len(t, logs, int(before)+1, "logged once")
			last := logs[len(logs)-1]
			assert.Equal(t, tc.peerID, fieldString(last, "peer_id"))
			assert.Contains(t, fieldString(last, "peer_addr"), "127.0.0.1:")
			stillServing()
		})
	}
	// Every rejection was counted once and under exactly one cause.
	var total uint64
	for _, n := range srv.Stats().HandshakeFailures {
		total += n
	}
	assert.Equal(t, uint64(len(cases)), total)
	assert.Len(t, srv.logs.FilterMessage("connection rejected").All(), len(cases))
}

// TestHTTPModeHeader: the verified client ID reaches the backend in XFCC;
// forged copies, in any spelling, do not.
func TestHTTPModeHeader(t *testing.T) {
	e := newEnv(t)
	_, cli := pair(t, e, httpBackend(t), func(s, _ *tlsproxy.Config) { s.HTTP = true })
	c := httpClient(t)
	body := get(t, c, "http://"+cli.Addr().String()+"/h", map[string]string{
		"X-Forwarded-Client-Cert": "URI=spiffe://example.org/admin",
		"x-forwarded-client-cert": "URI=spiffe://example.org/admin2",
		"X_Forwarded_Client_Cert": "URI=spiffe://example.org/admin3",
	})
	leaf, err := e.client.GetX509SVID()
	require.NoError(t, err)
	sum := sha256.Sum256(leaf.Certificates[0].Raw)
	want := fmt.Sprintf("By=%s;Hash=%s;URI=%s", serverID, hex.EncodeToString(sum[:]), clientID)
	assert.Contains(t, body, "xfcc="+want+"\n")
	assert.Contains(t, body, "xfcc_count=1\n")
	assert.Contains(t, body, "forged=[]\n")
	assert.NotContains(t, body, "admin")
}

// RewriteHost sends the target's address as Host (Ollama refuses a
// non-local Host) and keeps the caller's in X-Forwarded-Host.
func TestHTTPModeRewriteHost(t *testing.T) {
	e := newEnv(t)
	backend := httpBackend(t)
	_, keep := pair(t, e, backend, func(s, _ *tlsproxy.Config) { s.HTTP = true })
	_, rewrite := pair(t, e, backend, func(s, _ *tlsproxy.Config) { s.HTTP = true; s.RewriteHost = true })
	c := httpClient(t)
	req := func(addr string) string {
		r, err := http.NewRequest(http.MethodGet, "http://"+addr+"/api/tags", nil)
		require.NoError(t, err)
		r.Host = "models.example.com"
		resp, err := c.Do(r)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(b)
	}
	assert.Contains(t, req(keep.Addr().String()), "host=models.example.com\n")
	body := req(rewrite.Addr().String())
	assert.Contains(t, body, "host="+backend+"\n")
	assert.Contains(t, body, "x_forwarded_host=models.example.com\n")

	_, err := tlsproxy.New(tlsproxy.Config{Name: "x", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: backend,
		Allow: []string{clientID.String()}, RewriteHost: true}, e.server, e.server)
	require.ErrorContains(t, err, "rewrite_host")
}

const asgiApp = `
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    hdrs = [(k.decode(), v.decode()) for k, v in scope["headers"]]
    xfcc = [v for k, v in hdrs if k.replace("_", "-") == "x-forwarded-client-cert"]
    body = ("uvicorn path=%s xfcc=%s\n" % (scope["path"], xfcc)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
`

// TestUvicornBackend: a real uvicorn app on a unix socket behind an
// HTTP-mode server proxy, reached through the client proxy.
func TestUvicornBackend(t *testing.T) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import uvicorn").Run(); err != nil {
		t.Fatalf("uvicorn is required (%s -m uvicorn): %v", python, err)
	}
	e := newEnv(t)
	appDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(appDir, "app.py"), []byte(asgiApp), 0o600))
	sock := filepath.Join(e.sockDir, "uv.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, python, "-m", "uvicorn", "--app-dir", appDir, "--uds", sock, "--log-level", "warning", "app:app")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	require.Eventually(t, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, 20*time.Second, 50*time.Millisecond, "uvicorn did not start")

	srv, cli := pair(t, e, "unix://"+sock, func(s, _ *tlsproxy.Config) { s.HTTP = true })
	c := httpClient(t)
	for i := range 3 {
		body := get(t, c, fmt.Sprintf("http://%s/ollama/%d", cli.Addr(), i), map[string]string{"X_Forwarded_Client_Cert": "URI=forged"})
		require.Contains(t, body, fmt.Sprintf("uvicorn path=/ollama/%d", i))
		require.Contains(t, body, "URI="+clientID.String())
		require.NotContains(t, body, "forged")
	}
	assert.Equal(t, "unix://"+sock, srv.Stats().Target)
	assert.Positive(t, srv.Stats().BytesFromTarget)
}

// TestHalfCloseAndUnixListener: a client that shuts its write side still
// gets the answer, through a client proxy listening on a unix socket that
// WithUnixListener created (the agent's makes it 0600, see
// internal/agent).
func TestHalfCloseAndUnixListener(t *testing.T) {
	e := newEnv(t)
	sock := filepath.Join(e.sockDir, "cli.sock")
	var asked string
	listenUnix := tlsproxy.WithUnixListener(func(path string) (net.Listener, error) {
		asked = path
		return net.Listen("unix", path)
	})
	_, cli := pair(t, e, echoBackend(t), func(_, c *tlsproxy.Config) { c.Listen = "unix://" + sock }, listenUnix)
	assert.Equal(t, sock, asked)
	assert.Equal(t, "unix://"+sock, cli.Stats().Listen)

	c, err := net.Dial("unix", sock)
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(15*time.Second)))
	_, err = io.WriteString(c, "ping")
	require.NoError(t, err)
	require.NoError(t, c.(*net.UnixConn).CloseWrite())
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "pingbye", string(got))
	assert.Equal(t, uint64(4), cli.Stats().BytesToTarget)
}

// TestRotation: a long-lived connection survives SVID and CA rotation;
// new connections present the new certificate.
func TestRotation(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), nil)
	long, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer long.Close()
	lr := bufio.NewReader(long)
	roundTrip(t, long, lr, "before")

	// Warm up resumption so we can see that rotation breaks it once.
	for range 2 {
		c, err := net.Dial("tcp", cli.Addr().String())
		require.NoError(t, err)
		roundTrip(t, c, bufio.NewReader(c), "warm")
		c.Close()
	}

	// An independent TLS client with its own session cache: it would
	// happily resume a session from before the rotation if the server
	// proxy let it.
	sessions := tls.NewLRUClientSessionCache(8)
	presented := func() (serial string, resumed bool) {
		s, err := e.client.GetX509SVID()
		require.NoError(t, err)
		cfg := e.tlsClientConfig(s)
		cfg.ClientSessionCache = sessions
		c, err := tls.Dial("tcp", srv.Addr().String(), cfg)
		require.NoError(t, err)
		defer c.Close()
		roundTrip(t, c, bufio.NewReader(c), "direct") // also receives the session ticket
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), c.ConnectionState().DidResume
	}
	_, _ = presented()
	_, resumed := presented()
	require.True(t, resumed, "direct client resumes before rotation")

	for _, rot := range []struct {
		name   string
		rotate func() error
	}{{"svid", e.srv.RotateSVIDs}, {"ca", e.srv.RotateCA}} {
		t.Run(rot.name, func(t *testing.T) {
			oldServer, oldClient := currentSerial(t, e.server), currentSerial(t, e.client)
			require.NoError(t, rot.rotate())
			require.Eventually(t, func() bool {
				return currentSerial(t, e.server) != oldServer && currentSerial(t, e.client) != oldClient
			}, 20*time.Second, 20*time.Millisecond, "sources did not see the rotation")
			newServer := currentSerial(t, e.server)

			roundTrip(t, long, lr, "after-"+rot.name) // existing connection continues

			serial, resumed := presented()
			assert.Equal(t, newServer, serial, "new connections present the new SVID")
			assert.False(t, resumed, "sessions from before the rotation are not resumed")
			_, resumed = presented()
			assert.True(t, resumed, "the new session resumes")

			resumedBefore := srv.Stats().HandshakesResumed
			for i := range 3 {
				c, err := net.Dial("tcp", cli.Addr().String())
				require.NoError(t, err)
				roundTrip(t, c, bufio.NewReader(c), fmt.Sprintf("new-%d", i))
				c.Close()
			}
			// The first new connection could not resume a session bound to
			// the old SVID; the later ones resume the new session.
			assert.Equal(t, resumedBefore+2, srv.Stats().HandshakesResumed)
		})
	}
	roundTrip(t, long, lr, "end")
}

// TestIdleTimeout: an idle connection is closed; one that only moves
// data in one direction is not.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t)
	const idle = time.Second
	srv, cli := pair(t, e, echoBackend(t), func(s, c *tlsproxy.Config) { s.IdleTimeout, c.IdleTimeout = idle, time.Hour })

	quiet, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer quiet.Close()
	roundTrip(t, quiet, bufio.NewReader(quiet), "hi")

	// A long upload to a sink: only one direction moves.
	sink, sinkCli := pair(t, e, sinkBackend(t), func(s, c *tlsproxy.Config) { s.IdleTimeout, c.IdleTimeout = idle, time.Hour })
	busy, err := net.Dial("tcp", sinkCli.Addr().String())
	require.NoError(t, err)
	defer busy.Close()
	deadline := time.Now().Add(5 * idle / 2)
	for time.Now().Before(deadline) {
		_, err := io.WriteString(busy, "x")
		require.NoError(t, err, "busy connection must not be cut")
		time.Sleep(idle / 10)
	}

	// quiet has been idle for > 2*idle: the server proxy closed it, so
	// the client proxy closed ours.
	require.NoError(t, quiet.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = quiet.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	_, err = io.WriteString(busy, "still here\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return srv.Stats().ConnectionsOpen == 0 }, 10*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return sink.Stats().BytesToTarget >= 15 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, int64(1), sink.Stats().ConnectionsOpen)
}

// TestDrain: Shutdown stops accepting, lets a connection finish, and
// cuts the rest at the deadline.
func TestDrain(t *testing.T) {
	e := newEnv(t)
	srv, cli := pair(t, e, echoBackend(t), func(s, _ *tlsproxy.Config) { s.DrainTimeout = time.Minute })
	c, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip(t, c, r, "one")

	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(context.Background()) }()
	require.Eventually(t, func() bool { return srv.Stats().Draining }, 10*time.Second, 10*time.Millisecond)
	_, err = net.Dial("tcp", srv.Addr().String())
	require.Error(t, err, "no new connections while draining")
	roundTrip(t, c, r, "two") // in-flight connection keeps working
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned while a connection was open: %v", err)
	default:
	}
	require.NoError(t, c.(*net.TCPConn).CloseWrite())
	_, _ = io.Copy(io.Discard, r)
	require.NoError(t, <-done)

	// Drain deadline: an idle connection is force-closed.
	_, cli = pair(t, e, echoBackend(t), nil)
	c2, err := net.Dial("tcp", cli.Addr().String())
	require.NoError(t, err)
	defer c2.Close()
	_, err = io.WriteString(c2, "x")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return cli.Stats().ConnectionsOpen == 1 }, 10*time.Second, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, cli.Shutdown(ctx), context.DeadlineExceeded)
	assert.Zero(t, cli.Stats().ConnectionsOpen)
	_, err = io.ReadAll(c2)
	require.NoError(t, err) // closed
}
