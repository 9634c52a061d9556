package xfcc_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
	"github.com/identity-agent/identity-agent/pkg/xfcc"
)

var (
	serverID = spiffeid.RequireFromString("spiffe://example.org/server")
	clientID = spiffeid.RequireFromString("spiffe://example.org/client")
	otherID  = spiffeid.RequireFromString("spiffe://example.org/other")
)

// behindProxy is the layout the package documentation asks for: a backend
// wrapped in Middleware on a 0600 unix socket, an HTTP-mode server proxy
// (the real tlsproxy.Proxy) in front of it, and mTLS clients that reach
// the proxy with their own SVIDs.
type behindProxy struct {
	src     *svid.Source
	sock    string // the backend's socket
	proxy   *tlsproxy.Proxy
	headers chan string // the raw XFCC header of each request the backend served
}

func newBehindProxy(t *testing.T, opts ...xfcc.Option) *behindProxy {
	t.Helper()
	api := svidtest.Start(t, svidtest.Config{
		Identities: []svidtest.Identity{{ID: serverID, Hint: "server"}, {ID: clientID, Hint: "client"}, {ID: otherID, Hint: "other"}},
		TTL:        time.Hour,
	})
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	require.NoError(t, src.Start(context.Background()))
	t.Cleanup(func() { _ = src.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, src.WaitReady(ctx))

	b := &behindProxy{src: src, sock: filepath.Join(svidtest.ShortDir(t, "xfcc"), "backend.sock"), headers: make(chan string, 16)}
	ln, err := net.Listen("unix", b.sock)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(b.sock, 0o600))
	backend := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: xfcc.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.headers <- r.Header.Get(xfcc.Header)
		e, _ := xfcc.FromContext(r.Context())
		id, ok := xfcc.PeerID(r.Context())
		fmt.Fprintf(w, "peer=%s ok=%v by=%s hash=%s", id, ok, e.By, e.Hash)
	}), opts...)}
	go func() { _ = backend.Serve(ln) }()
	t.Cleanup(func() { _ = backend.Close() })

	b.proxy, err = tlsproxy.New(tlsproxy.Config{Name: "api", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: "unix://" + b.sock, HTTP: true, Allow: []string{clientID.String(), otherID.String()}},
		src.X509SVIDSource(svid.Selector{Hint: "server"}), src)
	require.NoError(t, err)
	require.NoError(t, b.proxy.Start(context.Background()))
	t.Cleanup(func() { _ = b.proxy.Close() })
	return b
}

// client is an http.Client presenting hint's SVID and accepting only the
// server proxy's ID.
func (b *behindProxy) client(t *testing.T, hint string) *http.Client {
	t.Helper()
	servers, err := mtls.ParseAllow([]string{serverID.String()})
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: mtls.ClientConfig(b.src.X509SVIDSource(svid.Selector{Hint: hint}), b.src, servers)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

func do(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header[k] = []string{v} // raw keys: forged spellings reach the proxy as sent
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestMiddlewareReadsTheHeaderTheProxyWrites: through the real proxy, the
// backend's Middleware finds the verified client's ID, the proxy's ID and
// the hash of the client's certificate, whatever forged copies the client
// sent; and the raw header is exactly what Parse reads and String writes.
func TestMiddlewareReadsTheHeaderTheProxyWrites(t *testing.T) {
	b := newBehindProxy(t)
	url := "https://" + b.proxy.Addr().String() + "/"
	forged := map[string]string{
		"X-Forwarded-Client-Cert": "Hash=" + strings.Repeat("0", 64) + ";URI=spiffe://example.org/admin",
		"x-forwarded-client-cert": "URI=spiffe://example.org/admin2",
		"X_Forwarded_Client_Cert": "URI=spiffe://example.org/admin3",
		// Hop-by-hop removal must not take the proxy's own header away.
		"Connection": "keep-alive, X-Forwarded-Client-Cert",
	}
	for _, hint := range []string{"client", "other"} {
		leaf, err := b.src.X509SVIDSource(svid.Selector{Hint: hint}).GetX509SVID()
		require.NoError(t, err)
		sum := sha256.Sum256(leaf.Certificates[0].Raw)
		want := xfcc.Element{By: serverID, Hash: hex.EncodeToString(sum[:]), URI: leaf.ID}

		code, body := do(t, b.client(t, hint), url, forged)
		require.Equal(t, http.StatusOK, code, body)
		assert.Equal(t, fmt.Sprintf("peer=%s ok=true by=%s hash=%s", leaf.ID, serverID, want.Hash), body)
		raw := <-b.headers
		assert.Equal(t, "By="+serverID.String()+";Hash="+want.Hash+";URI="+leaf.ID.String(), raw, "the proxy's exact header")
		assert.Equal(t, want.String(), raw, "the proxy formats with Element.String")
		got, err := xfcc.Parse(raw)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
}

// TestMiddlewareAuthorizerBehindProxy: the proxy admits both clients, the
// backend's own authorizer only one; the other gets 403 from the backend.
func TestMiddlewareAuthorizerBehindProxy(t *testing.T) {
	only, err := mtls.ParseAllow([]string{clientID.String()})
	require.NoError(t, err)
	b := newBehindProxy(t, xfcc.WithAuthorizer(only))
	url := "https://" + b.proxy.Addr().String() + "/"
	code, body := do(t, b.client(t, "client"), url, nil)
	assert.Equal(t, http.StatusOK, code, body)
	code, body = do(t, b.client(t, "other"), url, nil)
	assert.Equal(t, http.StatusForbidden, code)
	assert.Contains(t, body, `SPIFFE ID "spiffe://example.org/other" is not allowed`)
}

// TestMiddlewareRefusesDirectRequests: a local user who reaches the
// backend without the proxy and sends no header, two headers, another
// spelling or a malformed one gets 401, never a request served as nobody.
// (A well-formed forgery passes: that is why the backend must be reachable
// only through the proxy; see doc.go.)
func TestMiddlewareRefusesDirectRequests(t *testing.T) {
	b := newBehindProxy(t)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", b.sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	direct := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	valid := "Hash=" + strings.Repeat("a", 64) + ";URI=spiffe://example.org/admin"
	for name, hdr := range map[string]map[string]string{
		"no header":       nil,
		"malformed":       {"X-Forwarded-Client-Cert": "URI=spiffe://example.org/admin"},
		"underscore":      {"X-Forwarded-Client-Cert": valid, "X_Forwarded_Client_Cert": valid},
		"two elements":    {"X-Forwarded-Client-Cert": valid + "," + valid},
		"not a SPIFFE ID": {"X-Forwarded-Client-Cert": "Hash=" + strings.Repeat("a", 64) + ";URI=https://example.org/admin"},
	} {
		code, body := do(t, direct, "http://backend/", hdr)
		assert.Equal(t, http.StatusUnauthorized, code, "%s: %s", name, body)
	}
	req, err := http.NewRequest(http.MethodGet, "http://backend/", nil)
	require.NoError(t, err)
	req.Header.Add(xfcc.Header, valid)
	req.Header.Add(xfcc.Header, valid)
	resp, err := direct.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "two headers")
	select {
	case h := <-b.headers:
		t.Fatalf("the handler served a request with %q", h)
	default:
	}
}
