package traefik

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// DefaultMode is the dynamic file's mode when Format.Mode is 0: it holds
// the private key.
const DefaultMode fs.FileMode = 0o600

// Format writes a Traefik dynamic configuration file (an
// http.serversTransports entry, and with TCP a tcp one, with the client
// certificate, key and roots inline) as one file of an output's set: it
// is built from the same SVID as the output's other files, swapped with
// them at once, guarded and restored with them. It is a rotation.Format.
//
// Traefik's file provider does not see a symlink swap in the output's
// directory (with `filename:` it reloads only on an event named like the
// file; with `directory:` it would also load the set's versioned
// subdirectories, the previous one first). Point it at a link in its own
// watched directory and re-point that link after every write: Linker.
type Format struct {
	// File is the base name in the output's directory, .yml or .yaml.
	File string
	// TransportName is the serversTransports key routers refer to as
	// `serversTransport: NAME@file` (default "spiffe").
	TransportName string
	// PeerSPIFFEID, when set, is written as peerCertURI: Traefik accepts
	// only a server certificate with that URI SAN.
	PeerSPIFFEID spiffeid.ID
	// ServerName is the SNI Traefik sends; without PeerSPIFFEID also the
	// name the server certificate is verified against.
	ServerName string
	// TCP also writes a tcp.serversTransports entry of the same name.
	TCP bool
	// IntermediatesInRoots adds the SVID's intermediates to rootCAs (as
	// the output's intermediates_in_bundle does to its bundle file).
	IntermediatesInRoots bool
	// Mode of the file; default DefaultMode. It holds the key: nothing
	// for other.
	Mode fs.FileMode
	// Field is the configuration key messages name (default "traefik").
	Field string
}

// Name implements rotation.Format.
func (f *Format) Name() string { return Kind }

func (f *Format) field() string {
	if f.Field == "" {
		return "traefik"
	}
	return f.Field
}

func (f *Format) transportName() string {
	if f.TransportName == "" {
		return DefaultTransportName
	}
	return f.TransportName
}

func (f *Format) mode() fs.FileMode {
	if f.Mode == 0 {
		return DefaultMode
	}
	return f.Mode
}

// Files implements rotation.Format.
func (f *Format) Files() []rotation.FormatFile {
	if f.File == "" {
		return nil
	}
	return []rotation.FormatFile{{Field: f.field() + ".file", Name: f.File}}
}

// HoldsKey implements rotation.Format.
func (f *Format) HoldsKey() bool { return true }

// Check implements rotation.Format: the name's extension (Traefik picks
// the format from it), the transport name and the mode, the one place the
// dynamic file's rules live.
func (f *Format) Check(c rotation.FormatCheck) error {
	fail := func(field, format string, args ...any) error {
		return &rotation.FieldError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	var errs []error
	switch ext := filepath.Ext(f.File); {
	case f.File == "":
		errs = append(errs, fail(f.field()+".file", "is required"))
	case ext != ".yml" && ext != ".yaml":
		errs = append(errs, fail(f.field(), "dynamic file %s must end in .yml or .yaml (Traefik picks the format from the extension)", f.File))
	}
	if !transportName.MatchString(f.transportName()) {
		errs = append(errs, fail(f.field(), "transport name %q: use letters, digits, '-' and '_'", f.transportName()))
	}
	if m := f.mode(); m&^fs.ModePerm == 0 && m&0o007 != 0 {
		errs = append(errs, fail(f.field()+".mode", "%04o lets every user read the inline private key; use 0600 or 0640", m.Perm()))
	} else if err := c.CheckMode(f.field()+".mode", m, true); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Build implements rotation.Format.
func (f *Format) Build(in rotation.FormatInput) ([]atomicdir.File, error) {
	picked, err := in.SVID()
	if err != nil {
		return nil, err
	}
	key, err := svid.EncodeKeyPEM(picked.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("traefik: %s: encode key of %s: %w", f.File, picked.ID, err)
	}
	td := picked.ID.TrustDomain()
	roots := svid.BundleCerts(in.X509, td, in.IncludeFederated, f.IntermediatesInRoots)
	if len(roots) == 0 {
		return nil, fmt.Errorf("traefik: %s: no X.509 bundle for trust domain %s", f.File, td)
	}
	m := material{
		cert:   svid.EncodeCertsPEM(picked.Certificates),
		key:    key,
		bundle: svid.EncodeCertsPEM(roots),
		leaf:   picked.Certificates[0],
	}
	t := transport{name: f.transportName(), peer: f.PeerSPIFFEID, serverName: f.ServerName, tcp: f.TCP}
	data, err := t.render(f.File, m)
	if err != nil {
		return nil, err
	}
	return []atomicdir.File{{Name: f.File, Data: data, Mode: f.mode()}}, nil
}

// Equal reports whether g is a Format with the same settings (for
// rotation.Output.Equal).
func (f *Format) Equal(g rotation.Format) bool {
	o, ok := g.(*Format)
	return ok && (f == o || f != nil && o != nil && *f == *o)
}

// Linker makes Traefik's file provider see a rotation: after every write
// of the output's set it re-points Link, a symlink in the directory
// Traefik watches, at the Format's file File as written (a new link
// renamed over the old one). The rename is an event named like Link in
// the watched directory, which Traefik's provider reloads on with
// `filename: LINK` and with `directory: DIR` alike; it then reads the
// current set through the link. The link holds no key: the file's bytes
// live in the set only, with its mode and owner. It is a
// rotation.Reloader (kind "traefik").
type Linker struct {
	// Link is the absolute path Traefik's file provider reads (.yml or
	// .yaml, in the directory it watches).
	Link string
	// File is the Format's file name in the output's set.
	File string
}

// Kind implements rotation.Reloader.
func (l *Linker) Kind() string { return Kind }

// Reload implements rotation.Reloader: re-point Link at the written File
// with atomicdir.Relink, through the opened watched directory (refused
// when it is writable by every user). A regular file at Link (the dynamic
// file an older version wrote there) is replaced; a directory is not.
func (l *Linker) Reload(ctx context.Context, w rotation.Written) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	target, err := w.Path(l.File)
	if err != nil {
		return fmt.Errorf("traefik: link %s: %w", l.Link, err)
	}
	if !filepath.IsAbs(l.Link) {
		return fmt.Errorf("traefik: link %s must be an absolute path", l.Link)
	}
	if filepath.Clean(l.Link) == filepath.Clean(target) {
		return fmt.Errorf("traefik: link %s is the dynamic file itself", l.Link)
	}
	if err := atomicdir.Relink(filepath.Dir(l.Link), filepath.Base(l.Link), target); err != nil {
		return fmt.Errorf("traefik: link %s: %w", l.Link, err)
	}
	return nil
}

// Equal reports whether other links the same paths (rotation.Output.Equal).
func (l *Linker) Equal(other rotation.Reloader) bool {
	o, ok := other.(*Linker)
	return ok && l != nil && o != nil && *l == *o
}
