package rotation

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
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
	// Formats are the files to write, in order: &PEM{...}, &Combined{...},
	// &FSDelivery{...}, &BundleDir{...}, &PKCS12{...}, &JWT{...} or your
	// own Format. Their base names must differ. A Format value belongs to
	// one Output (it may keep state).
	Formats []Format
	// IncludeFederated adds federated trust domains' roots to the bundles
	// the formats write (PEM's BundleFile, the PKCS#12 truststore) and
	// their JWT keys to JWT's BundleFile.
	IncludeFederated bool
	// Owner of the files. The zero value {0,0} is treated as {-1,-1}
	// ("leave as is"): an unset field must not mean "chown to root".
	Owner atomicdir.Owner
	// Reloads run in order after the files changed on disk.
	Reloads []Reloader

	// Verify, when set, checks after each reload that the service serves
	// the certificate just written (verify.go); VerifyTimeout is how long
	// the service may take to do so (default DefaultVerifyTimeout).
	Verify        ServedChecker
	VerifyTimeout time.Duration
	// UnsafeWorldReadableKey allows a key mode (and JWT token mode)
	// readable by every user; without it such a mode is refused (see
	// CheckMode).
	UnsafeWorldReadableKey bool
}

// holdsKey reports whether any file of the output carries the private
// key: then the SVID must pass svid.Validate before anything is written.
func (o Output) holdsKey() bool {
	return slices.ContainsFunc(o.Formats, func(f Format) bool { return f != nil && f.HoldsKey() })
}

// wantsX509 reports whether a format other than the JWT-SVID ones writes
// a file: then tokens wait for the first X.509 context too.
func (o Output) wantsX509() bool {
	return slices.ContainsFunc(o.Formats, func(f Format) bool {
		_, tokens := f.(TokenFormat)
		return f != nil && !tokens && len(f.Files()) > 0
	})
}

// wantsJWTBundles reports whether a file of the output is a JWKS.
func (o Output) wantsJWTBundles() bool {
	return slices.ContainsFunc(o.Formats, func(f Format) bool {
		j, ok := f.(*JWT)
		return ok && j.BundleFile != ""
	})
}

// jwtFiles lists the JWT-SVIDs the output's formats ask for, in order.
func (o Output) jwtFiles() []JWTFile {
	var out []JWTFile
	for _, f := range o.Formats {
		if tf, ok := f.(TokenFormat); ok {
			out = append(out, tf.JWTFiles()...)
		}
	}
	return out
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
	o.Owner = ownerOrKeep(o.Owner)
	o.Formats = slices.Clone(o.Formats)
	o.Reloads = append([]Reloader(nil), o.Reloads...)
	return o, nil
}

// fileNames lists the user-visible files in a stable order.
func (o Output) fileNames() []string {
	var names []string
	for _, f := range o.Formats {
		for _, n := range f.Files() {
			names = append(names, n.Name)
		}
	}
	return names
}
