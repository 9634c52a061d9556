package traefik

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	traefikID = spiffeid.RequireFromPath(td, "/traefik")
	modelID   = spiffeid.RequireFromPath(td, "/model-server")
)

// output mimics what pkg/rotation writes for an output: cert, key and
// bundle swapped together by atomicdir.Writer.
type output struct {
	t     *testing.T
	ca    *svidtest.CA
	w     *atomicdir.Writer
	dir   string
	files Files
}

func newOutput(t *testing.T, ca *svidtest.CA) *output {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "traefik")
	require.NoError(t, os.Mkdir(dir, 0o755))
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	return &output{t: t, ca: ca, w: w, dir: dir, files: Files{
		Cert: filepath.Join(dir, "svid.pem"), Key: filepath.Join(dir, "key.pem"), Bundle: filepath.Join(dir, "bundle.pem"),
	}}
}

// rotate issues a fresh SVID for id and writes it; it returns the SVID.
func (o *output) rotate(id spiffeid.ID) *x509svid.SVID {
	o.t.Helper()
	s, err := o.ca.IssueX509SVID(id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(o.t, err)
	key, err := svid.EncodeKeyPEM(s.PrivateKey)
	require.NoError(o.t, err)
	_, err = o.w.Write([]atomicdir.File{
		{Name: "svid.pem", Data: svid.EncodeCertsPEM(s.Certificates), Mode: 0o644},
		{Name: "key.pem", Data: key, Mode: 0o600},
		{Name: "bundle.pem", Data: svid.EncodeCertsPEM(o.ca.X509Bundle().X509Authorities()), Mode: 0o644},
	})
	require.NoError(o.t, err)
	return s
}

func newCA(t *testing.T) *svidtest.CA {
	t.Helper()
	ca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	return ca
}

func dynPath(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "dynamic")
	require.NoError(t, os.Mkdir(d, 0o755))
	return filepath.Join(d, "identity-agent.yml")
}

// parseStrict decodes like a schema check: unknown keys are errors.
func parseStrict(t *testing.T, data []byte) Config {
	t.Helper()
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	require.NoError(t, d.Decode(&c))
	return c
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

func TestReloadWritesServersTransport(t *testing.T) {
	ca := newCA(t)
	out := newOutput(t, ca)
	s := out.rotate(traefikID)
	dyn := dynPath(t)
	r, err := NewReloader(dyn, out.files, WithPeerSPIFFEID(modelID), WithServerName("model.internal"))
	require.NoError(t, err)
	require.Equal(t, "traefik", r.Kind())
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))

	data := read(t, dyn)
	// Generic walk of the exact key path Traefik reads.
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(data, &doc))
	st := doc["http"].(map[string]any)["serversTransports"].(map[string]any)["spiffe"].(map[string]any)
	require.Equal(t, "spiffe://example.org/model-server", st["peerCertURI"])
	require.Equal(t, true, st["insecureSkipVerify"])
	require.Equal(t, "model.internal", st["serverName"])
	certs := st["certificates"].([]any)
	require.Len(t, certs, 1)
	// PEM inline equals the files byte for byte.
	require.Equal(t, string(read(t, out.files.Cert)), certs[0].(map[string]any)["certFile"])
	require.Equal(t, string(read(t, out.files.Key)), certs[0].(map[string]any)["keyFile"])
	require.Equal(t, []any{string(read(t, out.files.Bundle))}, st["rootCAs"])
	require.NotContains(t, doc, "tcp")

	c := parseStrict(t, data)
	require.Len(t, c.HTTP.ServersTransports, 1)
	require.Contains(t, string(data), "serial "+s.Certificates[0].SerialNumber.Text(16))
	require.Contains(t, string(data), "leaf spiffe://example.org/traefik ")
	// Literal block scalars: the PEM is readable in the file as it is on disk.
	require.Contains(t, string(data), "certFile: |\n")

	fi, err := os.Stat(dyn)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
}

func TestReloadFollowsRotationAndSkipsNoops(t *testing.T) {
	ca := newCA(t)
	out := newOutput(t, ca)
	out.rotate(traefikID)
	dyn := dynPath(t)
	r, err := NewReloader(dyn, out.files, WithTCP(), WithFileMode(0o640), WithTransportName("model-mtls"))
	require.NoError(t, err)
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
	first := read(t, dyn)
	c := parseStrict(t, first)
	require.Equal(t, c.HTTP.ServersTransports["model-mtls"], c.TCP.ServersTransports["model-mtls"].TLS)
	require.Empty(t, c.HTTP.ServersTransports["model-mtls"].PeerCertURI)
	require.False(t, c.HTTP.ServersTransports["model-mtls"].InsecureSkipVerify, "no hostname-check bypass without a peer SPIFFE ID")

	// Nothing changed: the file is not rewritten, so Traefik sees no event.
	before, err := os.Stat(dyn)
	require.NoError(t, err)
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
	after, err := os.Stat(dyn)
	require.NoError(t, err)
	require.Equal(t, before.Sys().(*syscall.Stat_t).Ino, after.Sys().(*syscall.Stat_t).Ino)

	// SVID rotation, then CA rotation: each changes the parsed config.
	s2 := out.rotate(traefikID)
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
	second := read(t, dyn)
	require.NotEqual(t, parseStrict(t, first), parseStrict(t, second))
	require.Contains(t, string(second), s2.Certificates[0].SerialNumber.Text(16))
	require.NoError(t, ca.Rotate())
	out.rotate(traefikID)
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
	third := parseStrict(t, read(t, dyn))
	require.Equal(t, string(read(t, out.files.Bundle)), third.HTTP.ServersTransports["model-mtls"].RootCAs[0])
	require.Equal(t, 2, strings.Count(third.HTTP.ServersTransports["model-mtls"].RootCAs[0], "BEGIN CERTIFICATE"), "old and new root during CA rotation")
	fi, err := os.Stat(dyn)
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())
}

func TestBadMaterialKeepsLastGoodFile(t *testing.T) {
	ca := newCA(t)
	out := newOutput(t, ca)
	out.rotate(traefikID)
	dyn := dynPath(t)
	r, err := NewReloader(dyn, out.files)
	require.NoError(t, err)
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
	good := read(t, dyn)

	// A key from another SVID: never written.
	other, err := ca.IssueX509SVID(traefikID, time.Now(), time.Now().Add(time.Hour))
	require.NoError(t, err)
	otherKey, err := svid.EncodeKeyPEM(other.PrivateKey)
	require.NoError(t, err)
	badDir := t.TempDir()
	bad := Files{Cert: out.files.Cert, Key: filepath.Join(badDir, "key.pem"), Bundle: out.files.Bundle}
	require.NoError(t, os.WriteFile(bad.Key, otherKey, 0o600))
	rb, err := NewReloader(dyn, bad)
	require.NoError(t, err)
	err = rb.Reload(context.Background(), rotation.Written{})
	require.ErrorContains(t, err, "key.pem")
	require.ErrorContains(t, err, "key does not match certificate")
	require.Equal(t, good, read(t, dyn))

	empty := Files{Cert: out.files.Cert, Key: out.files.Key, Bundle: filepath.Join(badDir, "bundle.pem")}
	require.NoError(t, os.WriteFile(empty.Bundle, []byte("not pem\n"), 0o644))
	re, err := NewReloader(dyn, empty)
	require.NoError(t, err)
	require.ErrorContains(t, re.Reload(context.Background(), rotation.Written{}), "holds no certificate")
	require.Equal(t, good, read(t, dyn))

	missing := Files{Cert: filepath.Join(badDir, "nope.pem"), Key: out.files.Key, Bundle: out.files.Bundle}
	rm, err := NewReloader(dyn, missing)
	require.NoError(t, err)
	err = rm.Reload(context.Background(), rotation.Written{})
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, "nope.pem")
	require.Equal(t, good, read(t, dyn))
	// No temp debris next to the watched file.
	entries, err := os.ReadDir(filepath.Dir(dyn))
	require.NoError(t, err)
	require.Len(t, entries, 1)
}

// TestFilesByNameFromWritten: names of the output's files are read where
// the reload is told they were written; a name the set lacks is one error
// naming it, and the dynamic file is left alone.
func TestFilesByNameFromWritten(t *testing.T) {
	ca := newCA(t)
	out := newOutput(t, ca)
	s := out.rotate(traefikID)
	dyn := dynPath(t)
	r, err := NewReloader(dyn, Files{Cert: "svid.pem", Key: "key.pem", Bundle: "bundle.pem"})
	require.NoError(t, err)
	w := rotation.Written{Dir: out.dir, Files: map[string]string{
		"svid.pem": out.files.Cert, "key.pem": out.files.Key, "bundle.pem": out.files.Bundle}, SVID: s}
	require.NoError(t, r.Reload(context.Background(), w))
	require.Contains(t, string(read(t, dyn)), "serial "+s.Certificates[0].SerialNumber.Text(16)+" ")
	good := read(t, dyn)

	out.rotate(traefikID)
	delete(w.Files, "bundle.pem")
	err = r.Reload(context.Background(), w)
	require.ErrorContains(t, err, "traefik: "+dyn+": bundle.pem was not written to "+out.dir)
	require.Equal(t, good, read(t, dyn))
}

func TestNewReloaderRejects(t *testing.T) {
	f := Files{Cert: "/c", Key: "/k", Bundle: "/b"}
	for _, tc := range []struct {
		path string
		f    Files
		opts []Option
		want string
	}{
		{"rel.yml", f, nil, "absolute path"},
		{"/etc/traefik/dyn.toml", f, nil, "must end in .yml or .yaml"},
		{"/d.yml", Files{Cert: "/c", Key: "/k"}, nil, "no bundle file"},
		{"/d.yml", f, []Option{WithTransportName("a b")}, `transport name "a b"`},
		{"/d.yml", f, []Option{WithFileMode(0)}, "permission bits only"},
		{"/d.yml", f, []Option{WithFileMode(0o644)}, "mode 0644 would expose the private key"},
	} {
		_, err := NewReloader(tc.path, tc.f, tc.opts...)
		require.ErrorContains(t, err, tc.want, tc.path)
	}
}

// TestAtomicRewrites has a reader loop on the dynamic file while it is
// rewritten many times with alternating material: every read must be one of
// the two complete documents (each parses and its key matches its cert).
func TestAtomicRewrites(t *testing.T) {
	ca := newCA(t)
	outs := []*output{newOutput(t, ca), newOutput(t, ca)}
	outs[0].rotate(traefikID)
	outs[1].rotate(traefikID)
	dyn := dynPath(t)
	rs := make([]*Reloader, 2)
	for i, o := range outs {
		var err error
		rs[i], err = NewReloader(dyn, o.files, WithPeerSPIFFEID(modelID))
		require.NoError(t, err)
	}
	// The two complete documents: every read must be byte-identical to one.
	require.NoError(t, rs[1].Reload(context.Background(), rotation.Written{}))
	docB := read(t, dyn)
	require.NoError(t, checkDoc(docB))
	require.NoError(t, rs[0].Reload(context.Background(), rotation.Written{}))
	docA := read(t, dyn)
	require.NoError(t, checkDoc(docA))

	var (
		stop  atomic.Bool
		reads atomic.Int64
		wg    sync.WaitGroup
		bad   = make(chan error, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			data, err := os.ReadFile(dyn)
			if err == nil && !bytes.Equal(data, docA) && !bytes.Equal(data, docB) {
				err = checkDoc(data)
				if err == nil {
					err = fmt.Errorf("unexpected document of %d bytes", len(data))
				}
			}
			if err != nil {
				select {
				case bad <- err:
				default:
				}
				return
			}
			reads.Add(1)
		}
	}()
	const rewrites = 300
	for i := range rewrites {
		require.NoError(t, rs[(i+1)%2].Reload(context.Background(), rotation.Written{}))
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-bad:
		t.Fatalf("reader saw a broken file: %v", err)
	default:
	}
	require.Positive(t, reads.Load())
	t.Logf("%d rewrites, %d consistent reads", rewrites, reads.Load())
}

func checkDoc(data []byte) error {
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil {
		return fmt.Errorf("parse (%d bytes): %w", len(data), err)
	}
	st := c.HTTP.ServersTransports["spiffe"]
	if st == nil || len(st.Certificates) != 1 {
		return errors.New("transport missing")
	}
	if _, err := tls.X509KeyPair([]byte(st.Certificates[0].CertFile), []byte(st.Certificates[0].KeyFile)); err != nil {
		return fmt.Errorf("key/cert: %w", err)
	}
	return nil
}

// traefikTLSConfig builds the client tls.Config the way Traefik v3.7 does
// for a servers transport (pkg/server/service/transport.go createTLSConfig
// and pkg/tls.VerifyPeerCertificate): RootCAs from rootCAs, Certificates
// from certFile/keyFile, and with peerCertURI a VerifyPeerCertificate that
// verifies the chain without a hostname and then matches the URI SAN.
func traefikTLSConfig(t *testing.T, st *ServersTransport) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	for _, ca := range st.RootCAs {
		require.True(t, pool.AppendCertsFromPEM([]byte(ca)))
	}
	var certs []tls.Certificate
	for _, c := range st.Certificates {
		pair, err := tls.X509KeyPair([]byte(c.CertFile), []byte(c.KeyFile))
		require.NoError(t, err)
		certs = append(certs, pair)
	}
	cfg := &tls.Config{ServerName: st.ServerName, InsecureSkipVerify: st.InsecureSkipVerify, RootCAs: pool, Certificates: certs}
	if st.PeerCertURI != "" {
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("no peer certificate")
			}
			parsed := make([]*x509.Certificate, len(raw))
			for i, r := range raw {
				var err error
				if parsed[i], err = x509.ParseCertificate(r); err != nil {
					return err
				}
			}
			inter := x509.NewCertPool()
			for _, c := range parsed[1:] {
				inter.AddCert(c)
			}
			if _, err := parsed[0].Verify(x509.VerifyOptions{Roots: cfg.RootCAs, Intermediates: inter}); err != nil {
				return err
			}
			for _, u := range parsed[0].URIs {
				if strings.EqualFold(u.String(), st.PeerCertURI) {
					return nil
				}
			}
			return fmt.Errorf("peer certificate mismatch: no SAN URI in peer certificate matches %s", st.PeerCertURI)
		}
	}
	return cfg
}

// TestTransportReachesSPIFFEBackend: the generated transport, applied as
// Traefik applies it, reaches an mTLS backend that presents the model
// server's SVID and requires the Traefik SVID; a wrong peer ID is refused;
// after a rotation the backend sees the new client certificate.
func TestTransportReachesSPIFFEBackend(t *testing.T) {
	ca := newCA(t)
	backend, err := ca.IssueX509SVID(modelID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	serverPair := tls.Certificate{PrivateKey: backend.PrivateKey, Leaf: backend.Certificates[0]}
	for _, c := range backend.Certificates {
		serverPair.Certificate = append(serverPair.Certificate, c.Raw)
	}
	pool := x509.NewCertPool()
	for _, c := range ca.X509Bundle().X509Authorities() {
		pool.AddCert(c)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			leaf := r.TLS.PeerCertificates[0]
			fmt.Fprintf(w, "%s %s", leaf.URIs[0], leaf.SerialNumber.Text(16))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String() + "/"

	out := newOutput(t, ca)
	s1 := out.rotate(traefikID)
	dyn := dynPath(t)
	get := func(peer spiffeid.ID) (string, error) {
		r, err := NewReloader(dyn, out.files, WithPeerSPIFFEID(peer))
		require.NoError(t, err)
		require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
		st := parseStrict(t, read(t, dyn)).HTTP.ServersTransports["spiffe"]
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: traefikTLSConfig(t, st)}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	body, err := get(modelID)
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/traefik "+s1.Certificates[0].SerialNumber.Text(16), body)

	_, err = get(spiffeid.RequireFromPath(td, "/someone-else"))
	require.ErrorContains(t, err, "peer certificate mismatch")

	s2 := out.rotate(traefikID)
	body, err = get(modelID)
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/traefik "+s2.Certificates[0].SerialNumber.Text(16), body)
}

func TestReloadHonoursContext(t *testing.T) {
	out := newOutput(t, newCA(t))
	out.rotate(traefikID)
	dyn := dynPath(t)
	r, err := NewReloader(dyn, out.files)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, r.Reload(ctx, rotation.Written{}), context.Canceled)
	_, err = os.Stat(dyn)
	require.ErrorIs(t, err, fs.ErrNotExist)
}

func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file to another user")
	}
	out := newOutput(t, newCA(t))
	out.rotate(traefikID)
	dyn := dynPath(t)
	r, err := NewReloader(dyn, out.files, WithOwner(65534, 65534))
	require.NoError(t, err)
	require.NoError(t, r.Reload(context.Background(), rotation.Written{}))
	fi, err := os.Stat(dyn)
	require.NoError(t, err)
	require.Equal(t, uint32(65534), fi.Sys().(*syscall.Stat_t).Uid)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
}
