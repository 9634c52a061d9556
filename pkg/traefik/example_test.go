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

// An output wrote svid.pem, key.pem and bundle.pem; the Reloader turns them
// into a dynamic configuration that Traefik's file provider applies.
func Example() {
	dir, _ := os.MkdirTemp("", "traefik-example")
	defer os.RemoveAll(dir)

	// Stand-in for what the agent's output writes on every rotation.
	td := spiffeid.RequireTrustDomainFromString("example.org")
	ca, _ := svidtest.NewCA(td)
	s, _ := ca.IssueX509SVID(spiffeid.RequireFromPath(td, "/traefik"), time.Now(), time.Now().Add(time.Hour))
	key, _ := svid.EncodeKeyPEM(s.PrivateKey)
	_ = os.WriteFile(filepath.Join(dir, "svid.pem"), svid.EncodeCertsPEM(s.Certificates), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "key.pem"), key, 0o600)
	_ = os.WriteFile(filepath.Join(dir, "bundle.pem"), svid.EncodeCertsPEM(ca.X509Bundle().X509Authorities()), 0o644)

	// Files are the output's names for them (rotation.Output's CertFile,
	// KeyFile, BundleFile).
	r, err := traefik.NewReloader(filepath.Join(dir, "identity-agent.yml"),
		traefik.Files{Cert: "svid.pem", Key: "key.pem", Bundle: "bundle.pem"},
		traefik.WithPeerSPIFFEID(spiffeid.RequireFromPath(td, "/model-server")))
	if err != nil {
		fmt.Println(err)
		return
	}
	// A rotation.Manager tells each reload what it wrote; here by hand.
	w := rotation.Written{Dir: dir, Files: map[string]string{}}
	for _, name := range []string{"svid.pem", "key.pem", "bundle.pem"} {
		w.Files[name] = filepath.Join(dir, name)
	}
	if err := r.Reload(context.Background(), w); err != nil {
		fmt.Println(err)
		return
	}

	data, _ := os.ReadFile(r.Path())
	var c traefik.Config
	_ = yaml.Unmarshal(data, &c)
	st := c.HTTP.ServersTransports["spiffe"]
	fmt.Println(r.Kind(), len(st.Certificates), len(st.RootCAs), st.PeerCertURI, st.InsecureSkipVerify)
	// Output: traefik 1 1 spiffe://example.org/model-server true
}
