package tlsprobe_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var td = spiffeid.RequireTrustDomainFromString("example.org")

func pair(t *testing.T, sv *x509svid.SVID) tls.Certificate {
	t.Helper()
	c := tls.Certificate{PrivateKey: sv.PrivateKey}
	for _, x := range sv.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// serve runs a TLS server on l until the test ends; each connection
// completes a handshake and is closed.
func serve(t *testing.T, l net.Listener, cfg *tls.Config) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, cfg)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			_ = tc.Handshake()
			_ = tc.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
}

func TestServed(t *testing.T) {
	ca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	now := time.Now()
	server, err := ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/redis"), now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	client, err := ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/agent"), now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	for _, c := range ca.X509Bundle().X509Authorities() {
		roots.AddCert(c)
	}
	serverPair := pair(t, server)
	clientPair := pair(t, client)

	t.Run("tcp", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		serve(t, l, &tls.Config{Certificates: []tls.Certificate{serverPair}})
		p, err := tlsprobe.New("tcp://" + l.Addr().String())
		require.NoError(t, err)
		got, err := p.Served(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, server.Certificates[0].Raw, got.Raw)
	})

	t.Run("unix with SNI and a required client certificate", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "s.sock")
		l, err := net.Listen("unix", sock)
		require.NoError(t, err)
		sawSNI := make(chan string, 4)
		serve(t, l, &tls.Config{
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
			GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				sawSNI <- h.ServerName
				return &serverPair, nil
			},
		})
		p, err := tlsprobe.New("unix://"+sock, tlsprobe.WithServerName("redis.internal"), tlsprobe.WithTimeout(3*time.Second))
		require.NoError(t, err)
		assert.Equal(t, "unix://"+sock, p.Address())
		got, err := p.Served(context.Background(), &clientPair)
		require.NoError(t, err)
		assert.Equal(t, server.Certificates[0].Raw, got.Raw)
		assert.Equal(t, "redis.internal", <-sawSNI)

		// Presenting nothing to a server that requires a certificate: the
		// server's certificate is still known (TLS 1.3 sends it first).
		got, err = p.Served(context.Background(), nil)
		require.NoError(t, err)
		assert.Equal(t, server.Certificates[0].Raw, got.Raw)
	})

	t.Run("plaintext endpoint", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := l.Accept()
			if err == nil {
				_, _ = c.Write([]byte("-ERR not TLS\r\n"))
				_ = c.Close()
			}
		}()
		t.Cleanup(func() { _ = l.Close(); <-done })
		p, err := tlsprobe.New("tcp://" + l.Addr().String())
		require.NoError(t, err)
		_, err = p.Served(context.Background(), nil)
		require.ErrorContains(t, err, "probe tcp://"+l.Addr().String()+": TLS handshake")
	})

	t.Run("nothing listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		p, err := tlsprobe.New("tcp://" + addr)
		require.NoError(t, err)
		_, err = p.Served(context.Background(), nil)
		require.ErrorContains(t, err, "connection refused")
	})
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string][2]string{
		"tcp://127.0.0.1:6380": {"tcp", "127.0.0.1:6380"},
		"tcp://[::1]:443":      {"tcp", "[::1]:443"},
		"unix:///run/x.sock":   {"unix", "/run/x.sock"},
	} {
		n, a, err := tlsprobe.ParseAddress(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, [2]string{n, a})
	}
	for in, want := range map[string]string{
		"127.0.0.1:6380":  "want tcp://host:port or unix:///path",
		"tcp://127.0.0.1": "want tcp://host:port",
		"tcp://:6380":     "want tcp://host:port",
		"unix://rel.sock": "must be absolute",
		"https://x:443":   `scheme "https": want tcp or unix`,
		"rediss://x:6380": `scheme "rediss"`,
	} {
		_, _, err := tlsprobe.ParseAddress(in)
		require.ErrorContains(t, err, want, in)
		_, err = tlsprobe.New(in)
		require.Error(t, err)
	}
}
