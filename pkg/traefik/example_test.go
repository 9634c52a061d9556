package traefik_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// An output whose set holds the PEM files and Traefik's dynamic file,
// built from the same SVID; the Linker re-points the file Traefik's file
// provider watches at the set's copy after every write, so each rotation
// is an event Traefik reloads on.
func Example() {
	tmp, _ := os.MkdirTemp("", "traefik-example")
	defer func() { _ = os.RemoveAll(tmp) }()

	// The dev Workload API stands in for a SPIRE agent's socket.
	td := spiffeid.RequireTrustDomainFromString("example.org")
	srv, err := svidtest.New(svidtest.Config{
		TrustDomain: td,
		Identities:  []svidtest.Identity{{ID: spiffeid.RequireFromPath(td, "/traefik")}},
		TTL:         time.Hour,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := srv.Start(filepath.Join(tmp, "agent.sock")); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src := svid.NewSource(svid.WithAddr(srv.Addr()))
	if err := src.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer func() { _ = src.Close() }()
	if err := src.WaitReady(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// Traefik runs with providers.file.directory set to watched (or
	// providers.file.filename set to link).
	watched := filepath.Join(tmp, "traefik", "dynamic")
	if err := os.MkdirAll(watched, 0o755); err != nil {
		fmt.Println(err)
		return
	}
	link := filepath.Join(watched, "identity-agent.yml")
	m, err := rotation.NewManager(src, []rotation.Output{{
		Name: "traefik",
		Dir:  filepath.Join(tmp, "certs"),
		Formats: []rotation.Format{
			&rotation.PEM{CertFile: "svid.pem", KeyFile: "key.pem", BundleFile: "bundle.pem"},
			// Routers use it as `serversTransport: model-server@file`.
			&traefik.Format{
				File:          "identity-agent.yml",
				TransportName: "model-server",
				PeerSPIFFEID:  spiffeid.RequireFromPath(td, "/model-server"),
			},
		},
		Reloads: []rotation.Reloader{&traefik.Linker{Link: link, File: "identity-agent.yml"}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}

	// What Traefik reads through the link, against the SVID the source
	// serves now.
	current := src.X509SVIDSource(svid.Selector{})
	show := func() {
		data, err := os.ReadFile(link)
		if err != nil {
			fmt.Println(err)
			return
		}
		var c traefik.Config
		if err := yaml.Unmarshal(data, &c); err != nil {
			fmt.Println(err)
			return
		}
		st := c.HTTP.ServersTransports["model-server"]
		sv, err := current.GetX509SVID()
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(st.PeerCertURI, "insecureSkipVerify:", st.InsecureSkipVerify,
			"current SVID:", st.Certificates[0].CertFile == string(svid.EncodeCertsPEM(sv.Certificates)))
	}

	// One pass, as `identity-agent fetch` does; Start would keep it fresh.
	if err := m.WriteAll(ctx); err != nil {
		fmt.Println(err)
		return
	}
	show()

	// A rotation rewrites the set and re-points the link.
	if _, err := srv.RotateSVIDsAndWait(ctx, current); err != nil {
		fmt.Println(err)
		return
	}
	if err := m.WriteAll(ctx); err != nil {
		fmt.Println(err)
		return
	}
	show()

	fi, err := os.Lstat(link)
	if err != nil {
		fmt.Println(err)
		return
	}
	target, _ := os.Readlink(link)
	rel, _ := filepath.Rel(tmp, target)
	fmt.Println("link:", fi.Mode().Type() == os.ModeSymlink, "->", rel)
	fmt.Println("healthy:", m.Snapshot().Outputs[0].Healthy())
	// Output:
	// spiffe://example.org/model-server insecureSkipVerify: true current SVID: true
	// spiffe://example.org/model-server insecureSkipVerify: true current SVID: true
	// link: true -> certs/identity-agent.yml
	// healthy: true
}
