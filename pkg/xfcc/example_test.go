package xfcc_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/xfcc"
)

func ExampleParse() {
	e, err := xfcc.Parse("By=spiffe://example.org/server;Hash=8a2d7a04ce5c5e0d8cd1a10d3dc8c8fbd9e8d3b9e6a3c7c1d8b7f5e6a4c2b1a0;URI=spiffe://example.org/client")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("client:", e.URI)
	fmt.Println("verified by:", e.By)
	_, err = xfcc.Parse("URI=spiffe://example.org/client")
	fmt.Println(err)
	// Output:
	// client: spiffe://example.org/client
	// verified by: spiffe://example.org/server
	// xfcc: parse "URI=spiffe://example.org/client": no Hash
}

// A backend behind the HTTP-mode proxy reads the client's identity from
// the request context; a request that did not come through the proxy has
// no identity and is refused. Serve it where only the proxy can reach it
// (see the package documentation).
func ExampleMiddleware() {
	batch, _ := mtls.ParseAllow([]string{"spiffe://example.org/batch/*"})
	h := xfcc.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := xfcc.PeerID(r.Context())
		fmt.Fprintf(w, "hello %s", id)
	}), xfcc.WithAuthorizer(batch))

	for _, header := range []string{
		"By=spiffe://example.org/api;Hash=8a2d7a04ce5c5e0d8cd1a10d3dc8c8fbd9e8d3b9e6a3c7c1d8b7f5e6a4c2b1a0;URI=spiffe://example.org/batch/nightly",
		"By=spiffe://example.org/api;Hash=8a2d7a04ce5c5e0d8cd1a10d3dc8c8fbd9e8d3b9e6a3c7c1d8b7f5e6a4c2b1a0;URI=spiffe://example.org/web",
		"",
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if header != "" {
			r.Header.Set(xfcc.Header, header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Println(w.Code, strings.TrimSpace(w.Body.String()))
	}
	// Output:
	// 200 hello spiffe://example.org/batch/nightly
	// 403 Forbidden: xfcc: client spiffe://example.org/web: SPIFFE ID "spiffe://example.org/web" is not allowed
	// 401 Unauthorized: xfcc: no X-Forwarded-Client-Cert header: not forwarded by identity-agent's proxy
}
