package rotation

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// Default file modes. Keys and JWT tokens are secrets; certificates and
// bundles are public.
const (
	DefaultCertMode      fs.FileMode = 0o644
	DefaultKeyMode       fs.FileMode = 0o600
	DefaultBundleMode    fs.FileMode = 0o644
	DefaultJWTMode       fs.FileMode = 0o600
	DefaultJWTBundleMode fs.FileMode = 0o644
)

// JWTFile asks for a JWT-SVID for Audience written to File (a base name in
// the output's Dir). Mode defaults to 0600.
type JWTFile struct {
	Audience []string
	File     string
	Mode     fs.FileMode
}

// Output is one directory of identity files for one service, and what to
// run once they changed.
//
// All files of an Output are written as one set (versioned directory plus
// symlink swap), so a reader never sees a new certificate with an old key.
type Output struct {
	// Name identifies the output in logs, state and metrics. Required, unique.
	Name string
	// Selector picks the X.509-SVID (and the JWT-SVID identity).
	Selector svid.Selector
	// Dir holds the files. Required; one Output per Dir.
	Dir string
	// Base names in Dir; "" = not written.
	CertFile, KeyFile, BundleFile string
	// IncludeFederated adds federated trust domains' roots to BundleFile
	// (and their JWT keys to JWTBundleFile). IntermediatesInBundle adds the
	// SVID's intermediates to BundleFile.
	IncludeFederated, IntermediatesInBundle bool
	// Modes default to 0644, 0600, 0644.
	CertMode, KeyMode, BundleMode fs.FileMode
	// Owner of the files. The zero value {0,0} is treated as {-1,-1}
	// ("leave as is"): an unset field must not mean "chown to root".
	Owner atomicdir.Owner
	// JWT token files, refreshed at half their lifetime and on every
	// X.509 push.
	JWT []JWTFile
	// JWTBundleFile receives the JWT bundles as a JWKS; mode default 0644.
	JWTBundleFile string
	JWTBundleMode fs.FileMode
	// Reloads run in order after the files changed on disk.
	Reloads []Reloader

	// Formats beyond the PEM trio (formats.go): CombinedFile (key and
	// chain in one file, mode KeyMode), Layout (LayoutSPIFFEFSDelivery),
	// BundleDir (one bundle file per trust domain) and PKCS12.
	CombinedFile  string
	CombinedOrder svid.CombinedOrder
	Layout        string
	BundleDir     string
	PKCS12        PKCS12

	// Verify, when set, checks after each reload that the service serves
	// the certificate just written (verify.go); VerifyTimeout is how long
	// the service may take to do so (default DefaultVerifyTimeout).
	Verify        ServedChecker
	VerifyTimeout time.Duration
	// UnsafeWorldReadableKey allows a KeyMode (and JWT token Mode) readable
	// by every user; without it such a mode is refused (see CheckMode).
	UnsafeWorldReadableKey bool
}

func (o Output) wantsX509() bool {
	return o.CertFile != "" || o.KeyFile != "" || o.BundleFile != "" || o.wantsFormats()
}

// normalize fills defaults, resolves Dir and rejects configurations that
// could never work (Validate). The error names the output and the fields.
func (o Output) normalize() (Output, error) {
	if err := o.Validate(); err != nil {
		if o.Name == "" {
			return o, fmt.Errorf("output: %w", err)
		}
		return o, fmt.Errorf("output %q: %w", o.Name, err)
	}
	o = o.withDefaults()
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return o, fmt.Errorf("output %q: dir %q: %w", o.Name, o.Dir, err)
	}
	o.Dir = abs
	if o.Owner == (atomicdir.Owner{}) {
		o.Owner = atomicdir.Owner{UID: -1, GID: -1}
	}
	for i := range o.JWT {
		o.JWT[i].Audience = append([]string(nil), o.JWT[i].Audience...)
	}
	o.Reloads = append([]Reloader(nil), o.Reloads...)
	return o, nil
}

// fileNames lists the user-visible files in a stable order.
func (o Output) fileNames() []string {
	var names []string
	for _, n := range []string{o.CertFile, o.KeyFile, o.BundleFile, o.CombinedFile, o.PKCS12.KeystoreFile, o.PKCS12.TruststoreFile} {
		if n != "" {
			names = append(names, n)
		}
	}
	for _, j := range o.JWT {
		names = append(names, j.File)
	}
	if o.JWTBundleFile != "" {
		names = append(names, o.JWTBundleFile)
	}
	if o.Layout == LayoutSPIFFEFSDelivery {
		names = append(names, svid.FSDeliveryCredentialBundle)
	}
	return names
}
