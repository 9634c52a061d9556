package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// The service and its client on the test Workload API: the allowed client
// answers the allowed client, and the client refuses a server that is not
// the one it wants.
func TestServeAndGet(t *testing.T) {
	api := svidtest.Start(t, svidtest.Config{Identities: []svidtest.Identity{
		{ID: spiffeid.RequireFromString("spiffe://example.org/server"), Hint: "server"},
		{ID: spiffeid.RequireFromString("spiffe://example.org/client"), Hint: "client"},
	}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	src, err := startSource(ctx, api.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, src, ln, "spiffe://example.org/client") }()
	defer func() { cancel(); _ = <-done }()

	url := "https://" + ln.Addr().String() + "/"
	body, err := get(ctx, src, url, "spiffe://example.org/server")
	if err != nil || body != "hello spiffe://example.org/client\n" {
		t.Fatalf("get = %q, %v", body, err)
	}
	if _, err := get(ctx, src, url, "spiffe://example.org/other"); err == nil || !strings.Contains(err.Error(), "spiffe://example.org/server") {
		t.Fatalf("get from a server that is not the wanted ID: %v, want a refusal naming it", err)
	}
}
