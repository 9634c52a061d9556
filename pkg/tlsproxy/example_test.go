package tlsproxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// ExampleNew runs the issue's Ollama layout on loopback: a plaintext
// service, a server-mode proxy in front of it, and a client-mode proxy
// that a plaintext client talks to. Identities come from the dev Workload
// API through one svid.Source, the way every Example gets its SVIDs.
func ExampleNew() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "tpex")
	defer os.RemoveAll(dir)

	api, _ := svidtest.New(svidtest.Config{
		TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		Identities: []svidtest.Identity{
			{ID: spiffeid.RequireFromString("spiffe://example.org/model-server"), Hint: "model-server"},
			{ID: spiffeid.RequireFromString("spiffe://example.org/traefik"), Hint: "traefik"},
		},
	})
	_ = api.Start(filepath.Join(dir, "api.sock"))
	defer api.Stop()
	// One svid.Source per host follows the Workload API; each proxy picks
	// its SVID by hint, and the Source is also the bundle source.
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	_ = src.Start(ctx)
	defer src.Close()
	ready, cancelReady := context.WithTimeout(ctx, 20*time.Second)
	defer cancelReady()
	if err := src.WaitReady(ready); err != nil {
		fmt.Println(err)
		return
	}
	modelHost := src.X509SVIDSource(svid.Selector{Hint: "model-server"})
	traefikHost := src.X509SVIDSource(svid.Selector{Hint: "traefik"})

	// The plaintext service: answers one line.
	svc, _ := net.Listen("tcp", "127.0.0.1:0")
	defer svc.Close()
	go func() {
		for {
			c, err := svc.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			_, _ = io.WriteString(c, "model says: "+line)
			_ = c.Close()
		}
	}()

	server, err := tlsproxy.New(tlsproxy.Config{
		Name: "ollama", Mode: tlsproxy.ModeServer,
		Listen: "127.0.0.1:0", Target: svc.Addr().String(),
		Allow: []string{"spiffe://example.org/traefik"},
	}, modelHost, src)
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = server.Start(ctx)
	client, err := tlsproxy.New(tlsproxy.Config{
		Name: "to-ollama", Mode: tlsproxy.ModeClient,
		Listen: "127.0.0.1:0", Target: server.Addr().String(),
		Allow: []string{"spiffe://example.org/model-server"},
	}, traefikHost, src)
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = client.Start(ctx)

	c, _ := net.Dial("tcp", client.Addr().String())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "hello\n")
	reply, _ := io.ReadAll(c)
	c.Close()
	fmt.Print(string(reply))

	shutdownCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = client.Shutdown(shutdownCtx)
	_ = server.Shutdown(shutdownCtx)
	st := server.Stats()
	fmt.Println(st.Name, st.ConnectionsTotal, st.BytesToTarget, st.BytesFromTarget)
	// Output:
	// model says: hello
	// ollama 1 6 18
}

// ExampleProxy_Update serves on a listener the caller made, then changes
// the allow list and a limit in place; a new address is a new proxy. Static
// go-spiffe values stand in for a Workload API.
func ExampleProxy_Update() {
	ca, _ := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("example.org"))
	now := time.Now()
	sv, _ := ca.IssueX509SVID(spiffeid.RequireFromString("spiffe://example.org/api"), now.Add(-time.Minute), now.Add(time.Hour))
	bundles := x509bundle.NewSet(ca.X509Bundle())

	ln, _ := net.Listen("tcp", "127.0.0.1:0") // from systemd, a test, your own rules
	cfg := tlsproxy.Config{Name: "api", Mode: tlsproxy.ModeServer, Target: "127.0.0.1:8080",
		Allow: []string{"spiffe://example.org/traefik"}}
	p, err := tlsproxy.New(cfg, sv, bundles, tlsproxy.WithListener(ln))
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = p.Start(context.Background())
	defer p.Close()

	// Established connections keep their settings; new ones get these.
	cfg.Allow = append(cfg.Allow, "spiffe://example.org/batch/*")
	cfg.MaxConns = 10
	fmt.Println(p.Update(cfg), p.Stats().MaxConns, p.Stats().Listen == ln.Addr().String())

	cfg.Listen = "127.0.0.1:1"
	fmt.Println(p.Update(cfg))
	// Output:
	// <nil> 10 true
	// proxy "api": update: listen: 127.0.0.1:1: a new address needs a new proxy (start it, then Shutdown this one to drain)
}
