package tlsproxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
	"github.com/identity-agent/identity-agent/pkg/xfcc"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	partnerTD = spiffeid.RequireTrustDomainFromString("partner.org")
	serverID  = spiffeid.RequireFromString("spiffe://example.org/server")
	clientID  = spiffeid.RequireFromString("spiffe://example.org/client")
	otherID   = spiffeid.RequireFromString("spiffe://example.org/other")
)

// env is a dev Workload API with one source per identity, as separate
// agents on separate hosts would have.
type env struct {
	srv     *svidtest.Server
	server  *workloadapi.X509Source
	client  *workloadapi.X509Source
	sockDir string // a short directory for the test's own unix sockets
}

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv with the dev Workload API's config changed by mutate.
func newEnvWith(t testing.TB, mutate func(*svidtest.Config)) *env {
	t.Helper()
	cfg := svidtest.Config{
		TrustDomain: td,
		Identities: []svidtest.Identity{
			{ID: serverID, Hint: "server", DNSNames: []string{"localhost"}},
			{ID: clientID, Hint: "client"},
			{ID: otherID, Hint: "other"},
		},
		TTL:       time.Hour, // rotations in tests are explicit
		Federated: []spiffeid.TrustDomain{partnerTD},
		// RotateCA publishes the next root at once and signs with it this
		// much later, as SPIRE does (in days); tests wait for the switch.
		CAActivationDelay: 100 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv := svidtest.Start(t, cfg)
	e := &env{srv: srv, sockDir: svidtest.ShortDir(t, "tp")}
	e.server = e.source(t, "server")
	e.client = e.source(t, "client")
	return e
}

func (e *env) source(t testing.TB, hint string) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr(e.srv.Addr())),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.Hint == hint {
					return s
				}
			}
			return svids[0]
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// proxyUnderTest is a started proxy with its own log observer and registry.
type proxyUnderTest struct {
	*tlsproxy.Proxy
	logs *observer.ObservedLogs
	reg  *prometheus.Registry
}

func startProxy(t testing.TB, cfg tlsproxy.Config, src *workloadapi.X509Source, opts ...tlsproxy.Option) *proxyUnderTest {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	opts = append([]tlsproxy.Option{tlsproxy.WithLogger(zap.New(core)), tlsproxy.WithRegisterer(reg)}, opts...)
	p, err := tlsproxy.New(cfg, src, src, opts...)
	require.NoError(t, err)
	require.NoError(t, p.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return &proxyUnderTest{Proxy: p, logs: logs, reg: reg}
}

// metric returns the value of this proxy's series name{proxy, labels}.
func (p *proxyUnderTest) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	all := map[string]string{"proxy": p.Stats().Name}
	maps.Copy(all, labels)
	return metricstest.Value(t, p.reg, name, all)
}

// rejections returns the "connection rejected" log entries with the given cause.
func (p *proxyUnderTest) rejections(cause tlsproxy.Cause) []observer.LoggedEntry {
	return p.logs.FilterMessage("connection rejected").FilterField(zap.String("cause", string(cause))).All()
}

func fieldString(e observer.LoggedEntry, key string) string {
	for _, f := range e.Context {
		if f.Key == key {
			return f.String
		}
	}
	return ""
}

// pair starts a server proxy in front of target and a client proxy in
// front of it, authorizing each other.
func pair(t testing.TB, e *env, target string, mutate func(s, c *tlsproxy.Config), opts ...tlsproxy.Option) (srv, cli *proxyUnderTest) {
	t.Helper()
	sc := tlsproxy.Config{Name: "srv", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Target: target,
		Allow: []string{clientID.String()}}
	cc := tlsproxy.Config{Name: "cli", Mode: tlsproxy.ModeClient, Listen: "127.0.0.1:0",
		Allow: []string{serverID.String()}}
	if mutate != nil {
		mutate(&sc, &cc)
	}
	srv = startProxy(t, sc, e.server, opts...)
	cc.Target = srv.Addr().String()
	cli = startProxy(t, cc, e.client, opts...)
	return srv, cli
}

// httpBackend is a real Go HTTP server that echoes what the proxy told it.
func httpBackend(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var forged []string
		for k := range r.Header {
			if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), xfcc.Header) && k != xfcc.Header {
				forged = append(forged, k)
			}
		}
		fmt.Fprintf(w, "path=%s\nxfcc=%s\nxfcc_count=%d\nforged=%v\nhost=%s\nx_forwarded_host=%s\n", r.URL.Path,
			r.Header.Get(xfcc.Header), len(r.Header.Values(xfcc.Header)), forged, r.Host, r.Header.Get("X-Forwarded-Host"))
	})}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

// echoBackend echoes each connection; after the peer half-closes it
// writes "bye" and closes.
func echoBackend(t testing.TB) string {
	t.Helper()
	return tcpBackend(t, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		_, _ = c.Write([]byte("bye"))
	})
}

// sinkBackend reads and discards.
func sinkBackend(t testing.TB) string {
	t.Helper()
	return tcpBackend(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// tcpBackend serves each connection with handle on a loopback listener,
// closing the connection when handle returns. When the test ends it stops
// accepting, closes the connections still open and waits for the handlers.
func tcpBackend(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var (
		mu     sync.Mutex
		open   = map[net.Conn]struct{}{}
		closed bool
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				_ = c.Close()
				continue
			}
			open[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(open, c)
					mu.Unlock()
					_ = c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// roundTrip writes a line and reads it back.
func roundTrip(t testing.TB, c net.Conn, r *bufio.Reader, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(15*time.Second)))
	_, err := io.WriteString(c, msg+"\n")
	require.NoError(t, err)
	line, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, msg+"\n", line)
}

func httpClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

func get(t testing.TB, c *http.Client, url string, hdr map[string]string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header[k] = []string{v} // raw key: forged spellings must reach the proxy as sent
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	return string(body)
}

// tlsClientConfig presents s and trusts the dev CA bundle, without
// SPIFFE authorization: a plain TLS peer checking the DNS SAN.
func (e *env) tlsClientConfig(s *x509svid.SVID) *tls.Config {
	return clientConfig(e.srv.CA().X509Bundle().X509Authorities(), s)
}

func clientConfig(rootCerts []*x509.Certificate, s *x509svid.SVID) *tls.Config {
	roots := x509.NewCertPool()
	for _, c := range rootCerts {
		roots.AddCert(c)
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if s != nil {
		cert := tls.Certificate{PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
		for _, c := range s.Certificates {
			cert.Certificate = append(cert.Certificate, c.Raw)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// writePEM writes an SVID's chain and key, returning their paths.
func writePEM(t testing.TB, dir, name string, s *x509svid.SVID) (certPath, keyPath string) {
	t.Helper()
	certPEM, keyDER, err := s.Marshal()
	require.NoError(t, err)
	certPath = filepath.Join(dir, name+".crt")
	keyPath = filepath.Join(dir, name+".key")
	require.NoError(t, os.WriteFile(certPath, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyPath, keyDER, 0o600))
	return certPath, keyPath
}

func writeBundle(t testing.TB, dir string, certs []*x509.Certificate) string {
	t.Helper()
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	p := filepath.Join(dir, "bundle.pem")
	require.NoError(t, os.WriteFile(p, b, 0o600))
	return p
}

func currentSerial(t testing.TB, src *workloadapi.X509Source) string {
	t.Helper()
	s, err := src.GetX509SVID()
	require.NoError(t, err)
	return s.Certificates[0].SerialNumber.String()
}
