package mtls_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func ExampleParseAllow() {
	authz, err := mtls.ParseAllow([]string{
		"spiffe://example.org/traefik", // exactly this workload
		"spiffe://example.org/batch/*", // /batch and everything below it
		"spiffe://partner.org",         // any workload of a federated trust domain
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(authz)
	for _, id := range []string{
		"spiffe://example.org/traefik",
		"spiffe://example.org/batch/nightly",
		"spiffe://partner.org/etl",
		"spiffe://example.org/web",
	} {
		fmt.Println(id, authz.Authorize(spiffeid.RequireFromString(id), nil) == nil)
	}
	_, err = mtls.ParseAllow(nil)
	fmt.Println(err)
	_, err = mtls.ParseAllow([]string{"spiffe://example.org/web", "spiffe://example.org/*/x"})
	fmt.Println(err)
	// Output:
	// allow spiffe://example.org/traefik, spiffe://example.org/batch/*, spiffe://partner.org
	// spiffe://example.org/traefik true
	// spiffe://example.org/batch/nightly true
	// spiffe://partner.org/etl true
	// spiffe://example.org/web false
	// at least one allowed SPIFFE ID is required (there is no allow-anyone)
	// allow[1] "spiffe://example.org/*/x": "*" is only allowed as a final "/*" path segment
}

// Any go-spiffe authorizer becomes an Authorizer with a description; the
// description is what logs show and what Fingerprint identifies it by.
func ExampleDescribe() {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	authz := mtls.Describe("any workload of example.org", tlsconfig.AuthorizeMemberOf(td))
	fmt.Println(authz, authz.Authorize(spiffeid.RequireFromString("spiffe://example.org/web"), nil) == nil)
	fmt.Println(authz.Authorize(spiffeid.RequireFromString("spiffe://evil.org/web"), nil))
	// Output:
	// any workload of example.org true
	// unexpected trust domain "evil.org"
}

// A reload compares fingerprints: an edited list is a change, the same
// list parsed again is not.
func ExampleFingerprint() {
	a, _ := mtls.ParseAllow([]string{"spiffe://example.org/web"})
	b, _ := mtls.ParseAllow([]string{"spiffe://example.org/web"})
	c, _ := mtls.ParseAllow([]string{"spiffe://example.org/web", "spiffe://example.org/batch/*"})
	fmt.Println(mtls.Fingerprint(a) == mtls.Fingerprint(b), mtls.Fingerprint(a) == mtls.Fingerprint(c))
	// Output: true false
}

// startWorkloadAPI starts a development Workload API with two identities
// (in a test: svidtest.Start(t, cfg)) and one svid.Source watching it, as
// a process on a host with a SPIRE agent would have.
func startWorkloadAPI(dir string) (*svidtest.Server, *svid.Source, error) {
	api, err := svidtest.New(svidtest.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Identities: []svidtest.Identity{
			{ID: spiffeid.RequireFromString("spiffe://example.org/api"), Hint: "api"},
			{ID: spiffeid.RequireFromString("spiffe://example.org/client"), Hint: "client"},
		},
		TTL: time.Hour,
	})
	if err != nil {
		return nil, nil, err
	}
	if err := api.Start(filepath.Join(dir, "api.sock")); err != nil {
		return nil, nil, err
	}
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := src.Start(context.Background()); err != nil {
		api.Stop()
		return nil, nil, err
	}
	if err := src.WaitReady(ctx); err != nil {
		_ = src.Close()
		api.Stop()
		return nil, nil, err
	}
	return api, src, nil
}

// A net/http server that terminates SPIFFE mTLS itself and an http.Client
// that presents its own SVID. Each picks its SVID from one svid.Source by
// hint; the Source is also the bundle source, so rotations of either apply
// to the next handshake.
func ExampleServerConfig() {
	dir, _ := os.MkdirTemp("", "mtlsex")
	defer os.RemoveAll(dir)
	api, src, err := startWorkloadAPI(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer api.Stop()
	defer src.Close()

	// The server: only spiffe://example.org/client may call it.
	allow, err := mtls.ParseAllow([]string{"spiffe://example.org/client"})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{
		TLSConfig:         mtls.ServerConfig(src.X509SVIDSource(svid.Selector{Hint: "api"}), src, allow),
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := mtls.PeerID(r.TLS)
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			fmt.Fprintf(w, "hello %s\n", id)
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }() // the certificate comes from TLSConfig
	defer srv.Close()

	// The client: it accepts only spiffe://example.org/api as the server.
	server, _ := mtls.ParseAllow([]string{"spiffe://example.org/api"})
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: mtls.ClientConfig(src.X509SVIDSource(svid.Selector{Hint: "client"}), src, server)},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))
	// Output: 200 OK hello spiffe://example.org/client
}

// Listen and Dial do the same for a raw connection; Dial returns once the
// handshake has verified and authorized the server.
func ExampleDial() {
	dir, _ := os.MkdirTemp("", "mtlsex")
	defer os.RemoveAll(dir)
	api, src, err := startWorkloadAPI(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer api.Stop()
	defer src.Close()

	clients, _ := mtls.ParseAllow([]string{"spiffe://example.org/client"})
	ln, err := mtls.Listen("tcp", "127.0.0.1:0", src.X509SVIDSource(svid.Selector{Hint: "api"}), src, clients)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(c, "echo: "+line)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	servers, _ := mtls.ParseAllow([]string{"spiffe://example.org/api"})
	c, err := mtls.Dial(ctx, "tcp", ln.Addr().String(), src.X509SVIDSource(svid.Selector{Hint: "client"}), src, servers)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	state := c.ConnectionState()
	peer, _ := mtls.PeerID(&state)
	fmt.Println("connected to", peer)
	_, _ = io.WriteString(c, "hi\n")
	reply, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(reply)
	// Output:
	// connected to spiffe://example.org/api
	// echo: hi
}
