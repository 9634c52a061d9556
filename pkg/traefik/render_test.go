package traefik

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// TestFormatWritesServersTransport reads what Format.Build wrote in the
// output's set along the key path Traefik reads: with a peer SPIFFE ID
// (peerCertURI + insecureSkipVerify, serverName), and without one but
// with a TCP transport of another name and mode 0640. The inline PEM is
// byte for byte what the set's PEM files hold: the same SVID.
func TestFormatWritesServersTransport(t *testing.T) {
	api, src := startSource(t)
	base := t.TempDir()
	peerDir, tcpDir := filepath.Join(base, "peer"), filepath.Join(base, "tcp")
	writeOnce(t, src,
		rotation.Output{Name: "peer", Dir: peerDir, Formats: []rotation.Format{pemFormat(),
			&Format{File: "dyn.yml", PeerSPIFFEID: modelID, ServerName: "model.internal"}}},
		rotation.Output{Name: "tcp", Dir: tcpDir, Formats: []rotation.Format{pemFormat(),
			&Format{File: "dyn.yaml", TransportName: "model-mtls", TCP: true, Mode: 0o640}}},
	)
	s := api.CurrentSVIDs()[0]

	data := read(t, filepath.Join(peerDir, "dyn.yml"))
	// Generic walk of the exact key path Traefik reads.
	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(data, &doc))
	st := doc["http"].(map[string]any)["serversTransports"].(map[string]any)["spiffe"].(map[string]any)
	require.Equal(t, "spiffe://example.org/model-server", st["peerCertURI"])
	require.Equal(t, true, st["insecureSkipVerify"])
	require.Equal(t, "model.internal", st["serverName"])
	certs := st["certificates"].([]any)
	require.Len(t, certs, 1)
	require.Equal(t, string(read(t, filepath.Join(peerDir, "svid.pem"))), certs[0].(map[string]any)["certFile"])
	require.Equal(t, string(read(t, filepath.Join(peerDir, "key.pem"))), certs[0].(map[string]any)["keyFile"])
	require.Equal(t, []any{string(read(t, filepath.Join(peerDir, "bundle.pem")))}, st["rootCAs"])
	require.NotContains(t, doc, "tcp")

	c := parseStrict(t, data)
	require.Len(t, c.HTTP.ServersTransports, 1)
	require.Contains(t, string(data), "# Routers use it as serversTransport: spiffe@file\n")
	require.Contains(t, string(data), "serial "+s.Certificates[0].SerialNumber.Text(16)+" ")
	require.Contains(t, string(data), "leaf spiffe://example.org/traefik ")
	require.Contains(t, string(data), "# insecureSkipVerify + peerCertURI: Traefik skips only the hostname check")
	// Literal block scalars: the PEM is readable in the file as it is on disk.
	require.Contains(t, string(data), "certFile: |\n")
	fi, err := os.Stat(filepath.Join(peerDir, "dyn.yml"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm(), "the default mode: the file holds the key")

	data = read(t, filepath.Join(tcpDir, "dyn.yaml"))
	c = parseStrict(t, data)
	require.Contains(t, c.HTTP.ServersTransports, "model-mtls")
	require.Equal(t, c.HTTP.ServersTransports["model-mtls"], c.TCP.ServersTransports["model-mtls"].TLS)
	require.Empty(t, c.HTTP.ServersTransports["model-mtls"].PeerCertURI)
	require.False(t, c.HTTP.ServersTransports["model-mtls"].InsecureSkipVerify, "no hostname-check bypass without a peer SPIFFE ID")
	require.NotContains(t, string(data), "insecureSkipVerify")
	require.Contains(t, string(data), "# Routers use it as serversTransport: model-mtls@file\n")
	fi, err = os.Stat(filepath.Join(tcpDir, "dyn.yaml"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())
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

// TestTransportReachesSPIFFEBackend: the transport Format.Build wrote,
// applied as Traefik applies it, reaches an mTLS backend that presents the
// model server's SVID and requires the Traefik SVID; a wrong peer ID is
// refused; after a rotation the backend sees the new client certificate.
func TestTransportReachesSPIFFEBackend(t *testing.T) {
	api, src := startSource(t)
	backend, err := api.CA().IssueX509SVID(modelID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	serverPair := tls.Certificate{PrivateKey: backend.PrivateKey, Leaf: backend.Certificates[0]}
	for _, c := range backend.Certificates {
		serverPair.Certificate = append(serverPair.Certificate, c.Raw)
	}
	pool := x509.NewCertPool()
	for _, c := range api.CA().X509Bundle().X509Authorities() {
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
		ErrorLog:          log.New(io.Discard, "", 0), // the refused handshake below
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "https://" + ln.Addr().String() + "/"

	base := t.TempDir()
	good, wrong := filepath.Join(base, "good"), filepath.Join(base, "wrong")
	m := writeOnce(t, src,
		rotation.Output{Name: "good", Dir: good, Formats: []rotation.Format{&Format{File: "dyn.yml", PeerSPIFFEID: modelID}}},
		rotation.Output{Name: "wrong", Dir: wrong, Formats: []rotation.Format{
			&Format{File: "dyn.yml", PeerSPIFFEID: spiffeid.RequireFromPath(td, "/someone-else")}}},
	)
	get := func(dir string) (string, error) {
		st := parseStrict(t, read(t, filepath.Join(dir, "dyn.yml"))).HTTP.ServersTransports["spiffe"]
		require.NotNil(t, st)
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
	body, err := get(good)
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/traefik "+api.CurrentSVIDs()[0].Certificates[0].SerialNumber.Text(16), body)

	_, err = get(wrong)
	require.ErrorContains(t, err, "peer certificate mismatch")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s2, err := api.RotateSVIDsAndWait(ctx, src.X509SVIDSource(svid.Selector{}))
	require.NoError(t, err)
	require.NoError(t, m.WriteAll(ctx))
	body, err = get(good)
	require.NoError(t, err)
	require.Equal(t, "spiffe://example.org/traefik "+s2.Certificates[0].SerialNumber.Text(16), body)
}
