// Command importer is an mTLS HTTPS service and its client, both on SVIDs
// from the SPIFFE Workload API ($SPIFFE_ENDPOINT_SOCKET), written against
// identity-agent's pkg/ from outside its module.
//
//	importer serve 127.0.0.1:8443 spiffe://example.org/client
//	importer get https://127.0.0.1:8443/ spiffe://example.org/server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: importer serve ADDR PEER-ID | importer get URL PEER-ID")
		os.Exit(2)
	}
	src, err := startSource(ctx, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "importer:", err)
		os.Exit(1)
	}
	defer func() { _ = src.Close() }()
	switch os.Args[1] {
	case "serve":
		ln, err := net.Listen("tcp", os.Args[2])
		if err == nil {
			err = serve(ctx, src, ln, os.Args[3])
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "importer:", err)
			os.Exit(1)
		}
	case "get":
		body, err := get(ctx, src, os.Args[2], os.Args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, "importer:", err)
			os.Exit(1)
		}
		fmt.Print(body)
	default:
		fmt.Fprintln(os.Stderr, "importer: unknown command", os.Args[1])
		os.Exit(2)
	}
}

// startSource follows the Workload API at addr ("" for
// $SPIFFE_ENDPOINT_SOCKET) and waits for the first SVIDs.
func startSource(ctx context.Context, addr string) (*svid.Source, error) {
	var opts []svid.SourceOption
	if addr != "" {
		opts = append(opts, svid.WithAddr(addr))
	}
	src := svid.NewSource(opts...)
	if err := src.Start(ctx); err != nil {
		return nil, err
	}
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := src.WaitReady(wait); err != nil {
		_ = src.Close()
		return nil, err
	}
	return src, nil
}

// serve answers "hello <peer ID>" over mTLS to the one client ID it allows,
// presenting the SVID with hint "server".
func serve(ctx context.Context, src *svid.Source, ln net.Listener, allow string) error {
	peer, err := spiffeid.FromString(allow)
	if err != nil {
		return err
	}
	tlsConf := tlsconfig.MTLSServerConfig(src.X509SVIDSource(svid.Selector{Hint: "server"}), src, tlsconfig.AuthorizeID(peer))
	srv := &http.Server{
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = fmt.Fprintf(w, "hello %s\n", r.TLS.PeerCertificates[0].URIs[0])
		}),
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return srv.ServeTLS(ln, "", "")
}

// get fetches url over mTLS with the SVID hinted "client", accepting only
// the server ID want.
func get(ctx context.Context, src *svid.Source, url, want string) (string, error) {
	peer, err := spiffeid.FromString(want)
	if err != nil {
		return "", err
	}
	tlsConf := tlsconfig.MTLSClientConfig(src.X509SVIDSource(svid.Selector{Hint: "client"}), src, tlsconfig.AuthorizeID(peer))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
