package rotation_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// devWorkloadAPI stands in for a SPIRE agent's socket in the examples.
func devWorkloadAPI(dir string) (*svidtest.Server, error) {
	srv, err := svidtest.New(svidtest.Config{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org")})
	if err != nil {
		return nil, err
	}
	return srv, srv.Start(filepath.Join(dir, "agent.sock"))
}

// One output (cert, key and CA bundle for a web server) whose reload is a
// command run without a shell; WriteAll is a single pass, as
// `identity-agent fetch` does.
func ExampleNewManager() {
	tmp, _ := os.MkdirTemp("", "rotation-example")
	defer func() { _ = os.RemoveAll(tmp) }()
	srv, err := devWorkloadAPI(tmp)
	if err != nil {
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

	marker := filepath.Join(tmp, "reloaded")
	m, err := rotation.NewManager(src, []rotation.Output{{
		Name: "web",
		Dir:  filepath.Join(tmp, "tls"),
		// The PEM trio; add &rotation.Combined{...}, &rotation.PKCS12{...}
		// or &rotation.JWT{...} for more files in the same set.
		Formats: []rotation.Format{&rotation.PEM{CertFile: "cert.pem", KeyFile: "key.pem", BundleFile: "ca.pem"}},
		// argv, no shell: a real setup would run e.g. "nginx -s reload".
		Reloads: []rotation.Reloader{rotation.NewExecReloader([]string{"touch", marker}, 10*time.Second)},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := m.WriteAll(ctx); err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range []string{"cert.pem", "key.pem", "ca.pem"} {
		fi, err := os.Stat(filepath.Join(tmp, "tls", name))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Println(name, fi.Mode().Perm())
	}
	_, err = os.Stat(marker)
	fmt.Println("reload ran:", err == nil)
	st := m.Snapshot().Outputs[0]
	fmt.Println("healthy:", st.Healthy(), "spiffe id:", st.SpiffeID)
	// Output:
	// cert.pem -rw-r--r--
	// key.pem -rw-------
	// ca.pem -rw-r--r--
	// reload ran: true
	// healthy: true spiffe id: spiffe://example.org/workload
}

// Start keeps the files fresh in the background until Close: on every
// rotation the set is rewritten and the reload runs.
func ExampleManager_Start() {
	tmp, _ := os.MkdirTemp("", "rotation-example")
	defer func() { _ = os.RemoveAll(tmp) }()
	srv, err := devWorkloadAPI(tmp)
	if err != nil {
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

	m, err := rotation.NewManager(src, []rotation.Output{{
		Name:    "web",
		Dir:     filepath.Join(tmp, "tls"),
		Formats: []rotation.Format{&rotation.PEM{CertFile: "cert.pem", KeyFile: "key.pem"}},
		Reloads: []rotation.Reloader{rotation.NewExecReloader([]string{"true"}, 10*time.Second)},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := m.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}

	// Wait for the first write, rotate, wait for the second.
	waitRotations := func(n uint64) {
		for ctx.Err() == nil && m.Snapshot().Outputs[0].Rotations < n {
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitRotations(1)
	_ = srv.RotateSVIDs()
	waitRotations(2)
	st := m.Snapshot().Outputs[0]
	fmt.Println("rotations:", st.Rotations, "healthy:", st.Healthy())

	fmt.Println("close:", m.Close())
	// Output:
	// rotations: 2 healthy: true
	// close: <nil>
}
