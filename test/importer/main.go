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

	"github.com/identity-agent/identity-agent/pkg/mtls"
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

// serve answers "hello <peer ID>" over mTLS to the client IDs allow
// admits (the proxy's allow grammar), presenting the SVID hinted "server".
func serve(ctx context.Context, src *svid.Source, ln net.Listener, allow string) error {
	authz, err := mtls.ParseAllow([]string{allow})
	if err != nil {
		return err
	}
	srv := &http.Server{
		TLSConfig:         mtls.ServerConfig(src.X509SVIDSource(svid.Selector{Hint: "server"}), src, authz),
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := mtls.PeerID(r.TLS)
			if err != nil {
				http.Error(w, err.Error(), http.StatusUnauthorized)
				return
			}
			_, _ = fmt.Fprintf(w, "hello %s\n", id)
		}),
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return srv.ServeTLS(ln, "", "")
}

// get fetches url over mTLS with the SVID hinted "client", accepting only a
// server that want admits.
func get(ctx context.Context, src *svid.Source, url, want string) (string, error) {
	authz, err := mtls.ParseAllow([]string{want})
	if err != nil {
		return "", err
	}
	tr := &http.Transport{TLSClientConfig: mtls.ClientConfig(src.X509SVIDSource(svid.Selector{Hint: "client"}), src, authz)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
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
