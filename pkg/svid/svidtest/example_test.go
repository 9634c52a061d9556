package svidtest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// A Workload API with two identities, told apart by their hints; a
// svid.Source (go-spiffe's Workload API client underneath) follows them as
// it would a SPIRE agent. In a test,
// svidtest.Start(t, cfg) does the directory, Start and Stop in one line.
func Example() {
	dir, _ := os.MkdirTemp("", "svidtest")
	defer os.RemoveAll(dir)

	srv, err := svidtest.New(svidtest.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Identities: []svidtest.Identity{
			{ID: spiffeid.RequireFromString("spiffe://example.org/api"), Hint: "api"},
			{ID: spiffeid.RequireFromString("spiffe://example.org/db"), Hint: "db"},
		},
		TTL: time.Hour,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Start(filepath.Join(dir, "api.sock")); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := svid.NewSource(svid.WithAddr(srv.Addr()))
	_ = src.Start(ctx)
	defer src.Close()
	if err := src.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}
	x509ctx := src.X509Context()
	for _, sv := range x509ctx.SVIDs {
		_, _, err := x509svid.Verify(sv.Certificates, x509ctx.Bundles)
		fmt.Println(sv.ID, sv.Hint, "verifies:", err == nil)
	}
	// Output:
	// spiffe://example.org/api api verifies: true
	// spiffe://example.org/db db verifies: true
}

// A test rotates the SVIDs and continues once the code under test's source
// serves the new one, with no polling loop of its own. In a test,
// svidtest.Start(t, cfg) replaces New, Start and Stop.
func ExampleServer_RotateSVIDsAndWait() {
	dir, _ := os.MkdirTemp("", "svidtest")
	defer os.RemoveAll(dir)
	srv, _ := svidtest.New(svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	if err := srv.Start(filepath.Join(dir, "api.sock")); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := svid.NewSource(svid.WithAddr(srv.Addr()))
	_ = src.Start(ctx)
	defer func() { _ = src.Close() }()
	if err := src.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}
	before, _ := src.GetX509SVID()

	after, err := srv.RotateSVIDsAndWait(ctx, src)
	if err != nil {
		fmt.Println(err)
		return
	}
	now, _ := src.GetX509SVID()
	fmt.Println(after.ID, "rotated:", before.Certificates[0].SerialNumber.Cmp(after.Certificates[0].SerialNumber) != 0)
	fmt.Println("the source serves it:", now.Certificates[0].Equal(after.Certificates[0]))
	// Output:
	// spiffe://example.org/workload rotated: true
	// the source serves it: true
}
