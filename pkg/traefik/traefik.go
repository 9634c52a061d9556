package traefik

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// Kind is what Reloader.Kind returns: the reload kind in configs, logs and
// metric labels.
const Kind = "traefik"

// DefaultTransportName is the serversTransports key routers refer to as
// `serversTransport: spiffe@file`.
const DefaultTransportName = "spiffe"

// Files names the PEM files an output writes; the Reloader reads them on
// every Reload. An entry that is not an absolute path is the name of a
// file of the output's set ("svid.pem", as rotation.Output names it), read
// at the path the reload is told (rotation.Written); an absolute path is
// read as is.
type Files struct {
	Cert   string // leaf first, then intermediates
	Key    string // PKCS#8 private key
	Bundle string // root CAs the backend's certificate must chain to
}

// Option configures a Reloader.
type Option func(*Reloader)

// WithTransportName sets the serversTransports key (default "spiffe").
func WithTransportName(name string) Option { return func(r *Reloader) { r.name = name } }

// WithPeerSPIFFEID sets the backend's SPIFFE ID, written as peerCertURI:
// Traefik then accepts only a server certificate with that URI SAN.
func WithPeerSPIFFEID(id spiffeid.ID) Option { return func(r *Reloader) { r.peer = id } }

// WithServerName sets the SNI Traefik sends. Without a peer SPIFFE ID it is
// also the name the server certificate is verified against.
func WithServerName(name string) Option { return func(r *Reloader) { r.serverName = name } }

// WithTCP also writes a tcp.serversTransports entry of the same name (for
// TCP routers), with the same material.
func WithTCP() Option { return func(r *Reloader) { r.tcp = true } }

// WithFileMode sets the dynamic file's mode (default 0600: it holds a key).
func WithFileMode(m fs.FileMode) Option { return func(r *Reloader) { r.mode = m } }

// WithOwner gives the dynamic file to uid:gid (-1 keeps either), e.g. the
// user Traefik runs as.
func WithOwner(uid, gid int) Option {
	return func(r *Reloader) { r.owner = atomicdir.Owner{UID: uid, GID: gid} }
}

// WithLogger sets the logger (default: none).
func WithLogger(l *zap.Logger) Option { return func(r *Reloader) { r.log = l } }

// Reloader regenerates a Traefik dynamic configuration file from an output's
// PEM files. It is safe for concurrent use; it holds no goroutine.
type Reloader struct {
	path       string
	files      Files
	name       string
	peer       spiffeid.ID
	serverName string
	tcp        bool
	mode       fs.FileMode
	owner      atomicdir.Owner
	log        *zap.Logger

	mu sync.Mutex
}

var transportName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// NewReloader returns a Reloader that writes the dynamic configuration file
// dynamicFile (.yml or .yaml, in a directory Traefik's file provider watches)
// from files.
func NewReloader(dynamicFile string, files Files, opts ...Option) (*Reloader, error) {
	r := &Reloader{
		path:  dynamicFile,
		files: files,
		name:  DefaultTransportName,
		mode:  0o600,
		owner: atomicdir.KeepOwner(),
		log:   zap.NewNop(),
	}
	for _, o := range opts {
		o(r)
	}
	switch ext := filepath.Ext(dynamicFile); {
	case !filepath.IsAbs(dynamicFile):
		return nil, fmt.Errorf("traefik: dynamic file %q must be an absolute path", dynamicFile)
	case ext != ".yml" && ext != ".yaml":
		return nil, fmt.Errorf("traefik: dynamic file %s must end in .yml or .yaml (Traefik picks the format from the extension)", dynamicFile)
	}
	for field, p := range map[string]string{"cert": files.Cert, "key": files.Key, "bundle": files.Bundle} {
		if p == "" {
			return nil, fmt.Errorf("traefik: dynamic file %s: no %s file to read", dynamicFile, field)
		}
	}
	if !transportName.MatchString(r.name) {
		return nil, fmt.Errorf("traefik: transport name %q: use letters, digits, '-' and '_'", r.name)
	}
	if r.mode.Perm() == 0 || r.mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("traefik: dynamic file %s: mode %v must be permission bits only", dynamicFile, r.mode)
	}
	if r.mode&0o007 != 0 {
		return nil, fmt.Errorf("traefik: dynamic file %s: mode %04o would expose the private key it holds to every user; use 0600 (or 0640 with the file's group)", dynamicFile, r.mode.Perm())
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	return r, nil
}

// Kind returns "traefik".
func (r *Reloader) Kind() string { return Kind }

// Path returns the dynamic configuration file.
func (r *Reloader) Path() string { return r.path }

// Reload reads the output's files and, when the result differs from what is
// on disk, writes the dynamic configuration atomically (temp file in the same
// directory, fsync, mode/owner, rename, directory fsync). Traefik's file
// provider sees the rename and applies the new transport. Material that does
// not validate (key not matching the certificate, no root CA) is not written.
func (r *Reloader) Reload(ctx context.Context, w rotation.Written) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := r.files.in(w)
	if err != nil {
		return fmt.Errorf("traefik: %s: %w", r.path, err)
	}
	m, err := r.read(ctx, files)
	if err != nil {
		return err
	}
	data, err := r.render(m)
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(r.path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("traefik: %s: %w", r.path, err)
	}
	if err := atomicdir.WriteFile(r.path, data, r.mode, r.owner); err != nil {
		return fmt.Errorf("traefik: %w", err)
	}
	r.log.Info("traefik dynamic configuration written", zap.String("file", r.path),
		zap.String("transport", r.name), zap.String("serial", m.leaf.SerialNumber.String()),
		zap.Time("not_after", m.leaf.NotAfter))
	return nil
}

type material struct {
	cert, key, bundle []byte
	leaf              *x509.Certificate
}

// read loads the three files. The output writer swaps them as one set, but
// three reads can still straddle a swap; a key that does not match the
// certificate is read again a few times before it counts as an error.
func (r *Reloader) read(ctx context.Context, files Files) (material, error) {
	var lastErr error
	for attempt := range 5 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return material{}, fmt.Errorf("traefik: %s: %w", r.path, ctx.Err())
			case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
			}
		}
		m, err := r.readOnce(files)
		if err == nil {
			return m, nil
		}
		lastErr = err
		if !errors.Is(err, errMismatch) {
			break
		}
	}
	return material{}, lastErr
}

var errMismatch = errors.New("key does not match certificate")

// in resolves the names of files of the written set to their paths.
func (f Files) in(w rotation.Written) (Files, error) {
	for _, p := range []*string{&f.Cert, &f.Key, &f.Bundle} {
		if filepath.IsAbs(*p) {
			continue
		}
		abs, err := w.Path(*p)
		if err != nil {
			return f, err
		}
		*p = abs
	}
	return f, nil
}

func (r *Reloader) readOnce(files Files) (material, error) {
	var m material
	var err error
	if m.cert, err = os.ReadFile(files.Cert); err != nil {
		return m, fmt.Errorf("traefik: %s: cert: %w", r.path, err)
	}
	if m.key, err = os.ReadFile(files.Key); err != nil {
		return m, fmt.Errorf("traefik: %s: key: %w", r.path, err)
	}
	if m.bundle, err = os.ReadFile(files.Bundle); err != nil {
		return m, fmt.Errorf("traefik: %s: bundle: %w", r.path, err)
	}
	pair, err := tls.X509KeyPair(m.cert, m.key)
	if err != nil {
		return m, fmt.Errorf("traefik: %s: %s and %s: %w: %w", r.path, files.Cert, files.Key, errMismatch, err)
	}
	m.leaf = pair.Leaf
	if m.leaf == nil {
		if m.leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return m, fmt.Errorf("traefik: %s: %s: %w", r.path, files.Cert, err)
		}
	}
	n := 0
	for rest := m.bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return m, fmt.Errorf("traefik: %s: bundle %s: %w", r.path, files.Bundle, err)
		}
		n++
	}
	if n == 0 {
		return m, fmt.Errorf("traefik: %s: bundle %s holds no certificate", r.path, files.Bundle)
	}
	return m, nil
}

// Dynamic-configuration schema (the subset written), field names as in
// Traefik v3's dynamic.ServersTransport / dynamic.TCPServersTransport.
type (
	// Config is a Traefik dynamic configuration document.
	Config struct {
		HTTP *HTTPConfig `yaml:"http,omitempty"`
		TCP  *TCPConfig  `yaml:"tcp,omitempty"`
	}
	// HTTPConfig holds http.serversTransports.
	HTTPConfig struct {
		ServersTransports map[string]*ServersTransport `yaml:"serversTransports"`
	}
	// TCPConfig holds tcp.serversTransports.
	TCPConfig struct {
		ServersTransports map[string]*TCPServersTransport `yaml:"serversTransports"`
	}
	// ServersTransport is an HTTP servers transport.
	ServersTransport struct {
		ServerName         string        `yaml:"serverName,omitempty"`
		InsecureSkipVerify bool          `yaml:"insecureSkipVerify,omitempty"`
		RootCAs            []string      `yaml:"rootCAs"`
		Certificates       []Certificate `yaml:"certificates"`
		PeerCertURI        string        `yaml:"peerCertURI,omitempty"`
	}
	// TCPServersTransport is a TCP servers transport.
	TCPServersTransport struct {
		TLS *ServersTransport `yaml:"tls"`
	}
	// Certificate is a client certificate and key, each a path or inline PEM.
	Certificate struct {
		CertFile string `yaml:"certFile"`
		KeyFile  string `yaml:"keyFile"`
	}
)

func (r *Reloader) render(m material) ([]byte, error) {
	st := &ServersTransport{
		ServerName:   r.serverName,
		RootCAs:      []string{string(m.bundle)},
		Certificates: []Certificate{{CertFile: string(m.cert), KeyFile: string(m.key)}},
	}
	if !r.peer.IsZero() {
		st.PeerCertURI = r.peer.String()
		st.InsecureSkipVerify = true
	}
	c := Config{HTTP: &HTTPConfig{ServersTransports: map[string]*ServersTransport{r.name: st}}}
	if r.tcp {
		c.TCP = &TCPConfig{ServersTransports: map[string]*TCPServersTransport{r.name: {TLS: st}}}
	}
	var yb bytes.Buffer
	enc := yaml.NewEncoder(&yb)
	enc.SetIndent(2)
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("traefik: %s: encode: %w", r.path, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("traefik: %s: encode: %w", r.path, err)
	}
	body := yb.Bytes()
	sum := sha256.Sum256(body)
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Generated by identity-agent (reload kind %q); rewritten atomically on every\n", Kind)
	b.WriteString("# rotation, do not edit. Routers use it as serversTransport: " + r.name + "@file\n")
	fmt.Fprintf(&b, "# leaf %s serial %s not_after %s sha256 %s\n",
		spiffeIDOf(m.leaf), m.leaf.SerialNumber.Text(16), m.leaf.NotAfter.UTC().Format(time.RFC3339), hex.EncodeToString(sum[:8]))
	if st.InsecureSkipVerify {
		b.WriteString("# insecureSkipVerify + peerCertURI: Traefik skips only the hostname check (SVIDs carry\n" +
			"# a SPIFFE ID, not a DNS name) and still verifies the chain against rootCAs and the URI SAN.\n")
	}
	b.Write(body)
	return b.Bytes(), nil
}

func spiffeIDOf(c *x509.Certificate) string {
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return "(no SPIFFE ID)"
}
