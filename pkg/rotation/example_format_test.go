package rotation_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// spiffeIDFile is a format of one's own: a text file with the output's
// SPIFFE ID, written in the same set as the certificate and key.
type spiffeIDFile struct{ name string }

func (f *spiffeIDFile) Name() string { return "spiffe-id" }
func (f *spiffeIDFile) Files() []rotation.FormatFile {
	return []rotation.FormatFile{{Field: "spiffe_id_file", Name: f.name}}
}
func (f *spiffeIDFile) HoldsKey() bool                   { return false }
func (f *spiffeIDFile) Check(rotation.FormatCheck) error { return nil }
func (f *spiffeIDFile) Build(in rotation.FormatInput) ([]atomicdir.File, error) {
	sv, err := in.SVID()
	if err != nil {
		return nil, err
	}
	return []atomicdir.File{{Name: f.name, Data: []byte(sv.ID.String() + "\n"), Mode: 0o644}}, nil
}

// An output is a list of format values: the library's (&rotation.PEM,
// &rotation.Combined, &rotation.PKCS12, ...) and your own.
func ExampleFormat() {
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

	dir := filepath.Join(tmp, "tls")
	m, err := rotation.NewManager(src, []rotation.Output{{
		Name: "web",
		Dir:  dir,
		Formats: []rotation.Format{
			&rotation.PEM{CertFile: "cert.pem", KeyFile: "key.pem"},
			&rotation.Combined{File: "tls.pem"},
			&spiffeIDFile{name: "id.txt"},
		},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := m.WriteAll(ctx); err != nil {
		fmt.Println(err)
		return
	}
	id, _ := os.ReadFile(filepath.Join(dir, "id.txt"))
	fmt.Print(string(id))
	fmt.Println(m.Snapshot().Outputs[0].Files)
	// Output:
	// spiffe://example.org/workload
	// [cert.pem key.pem tls.pem id.txt]
}
