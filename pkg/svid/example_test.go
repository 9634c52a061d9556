package svid_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// A workload with two registration entries gets two SVIDs; the selector
// picks one by SPIRE hint or SPIFFE ID, and says what was offered when
// nothing matches.
func ExampleSelector() {
	ca, _ := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	now := time.Now()
	web, _ := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/web"), now, now.Add(time.Hour))
	web.Hint = "web"
	db, _ := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/db"), now, now.Add(time.Hour))
	db.Hint = "db"
	svids := []*x509svid.SVID{web, db}

	for _, sel := range []svid.Selector{
		{},
		{Hint: "db"},
		{SpiffeID: "spiffe://example.org/web"},
	} {
		s, _ := sel.Pick(svids)
		fmt.Printf("%s -> %s\n", sel, s.ID)
	}
	_, err := svid.Selector{Hint: "cache"}.Pick(svids)
	fmt.Println(err)
	// Output:
	// default (first SVID) -> spiffe://example.org/web
	// hint="db" -> spiffe://example.org/db
	// spiffe_id=spiffe://example.org/web -> spiffe://example.org/web
	// select X.509-SVID hint="cache": no match among offered [spiffe://example.org/web (hint "web"), spiffe://example.org/db (hint "db")]
}

// EncodeCertsPEM writes the chain leaf first, the order a TLS server sends it.
func ExampleEncodeCertsPEM() {
	ca, _ := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	now := time.Now()
	s, _ := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/web"), now, now.Add(time.Hour))
	root := ca.X509Bundle().X509Authorities()[0]

	data := svid.EncodeCertsPEM([]*x509.Certificate{s.Certificates[0], root})
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		c, _ := x509.ParseCertificate(block.Bytes)
		if c.IsCA {
			fmt.Println(block.Type, "(CA)")
		} else {
			fmt.Println(block.Type, c.URIs[0])
		}
	}
	// Output:
	// CERTIFICATE spiffe://example.org/web
	// CERTIFICATE (CA)
}

// A Source follows the Workload API; here the embedded dev server stands in
// for a SPIRE agent.
func ExampleSource() {
	dir, _ := os.MkdirTemp("", "example")
	defer func() { _ = os.RemoveAll(dir) }()
	api, _ := svidtest.New(svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	_ = api.Start(filepath.Join(dir, "agent.sock"))
	defer api.Stop()

	src := svid.NewSource(svid.WithAddr(api.Addr()))
	_ = src.Start(context.Background())
	defer func() { _ = src.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := src.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}
	s, _ := src.GetX509SVID()
	fmt.Println(s.ID, src.Status().Connected)
	// Output:
	// spiffe://example.org/workload true
}
