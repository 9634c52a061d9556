package rotation

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

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
	Owner svid.Owner
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
}

func (o Output) wantsX509() bool {
	return o.CertFile != "" || o.KeyFile != "" || o.BundleFile != "" || o.wantsFormats()
}

// normalize fills defaults and rejects configurations that could never
// work. The error names the output and field.
func (o Output) normalize() (Output, error) {
	if o.Name == "" {
		return o, errors.New("output: name is required")
	}
	fail := func(format string, args ...any) (Output, error) {
		return o, fmt.Errorf("output %q: %s", o.Name, fmt.Sprintf(format, args...))
	}
	if o.Dir == "" {
		return fail("dir is required")
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return fail("dir %q: %v", o.Dir, err)
	}
	o.Dir = abs
	if o.CertMode == 0 {
		o.CertMode = DefaultCertMode
	}
	if o.KeyMode == 0 {
		o.KeyMode = DefaultKeyMode
	}
	if o.BundleMode == 0 {
		o.BundleMode = DefaultBundleMode
	}
	if o.JWTBundleMode == 0 {
		o.JWTBundleMode = DefaultJWTBundleMode
	}
	if o.Owner == (svid.Owner{}) {
		o.Owner = svid.Owner{UID: -1, GID: -1}
	}
	o.JWT = append([]JWTFile(nil), o.JWT...)
	for i := range o.JWT {
		if o.JWT[i].Mode == 0 {
			o.JWT[i].Mode = DefaultJWTMode
		}
		if len(o.JWT[i].Audience) == 0 {
			return fail("jwt[%d] (%s): audience is required", i, o.JWT[i].File)
		}
		o.JWT[i].Audience = append([]string(nil), o.JWT[i].Audience...)
	}
	o.Reloads = append([]Reloader(nil), o.Reloads...)

	seen := map[string]string{}
	check := func(field, name string) error {
		if name == "" {
			return nil
		}
		if name != filepath.Base(name) || name == "." || name == ".." || strings.ContainsRune(name, filepath.Separator) {
			return fmt.Errorf("output %q: %s %q must be a base name inside dir", o.Name, field, name)
		}
		// The atomic writer keeps its versioned directories and link
		// under names starting with "..".
		if strings.HasPrefix(name, "..") {
			return fmt.Errorf("output %q: %s %q: names starting with \"..\" are reserved", o.Name, field, name)
		}
		if prev, ok := seen[name]; ok {
			return fmt.Errorf("output %q: %s %q is also used by %s", o.Name, field, name, prev)
		}
		seen[name] = field
		return nil
	}
	if err := errors.Join(check("cert_file", o.CertFile), check("key_file", o.KeyFile), check("bundle_file", o.BundleFile), check("jwt_bundle_file", o.JWTBundleFile)); err != nil {
		return o, err
	}
	if err := o.normalizeFormats(check); err != nil {
		return o, err
	}
	for i, j := range o.JWT {
		if j.File == "" {
			return fail("jwt[%d]: file is required", i)
		}
		if err := check(fmt.Sprintf("jwt[%d].file", i), j.File); err != nil {
			return o, err
		}
	}
	if len(seen) == 0 && !o.wantsFormats() {
		return fail("no files to write (set cert_file, key_file, bundle_file, combined_file, layout, bundle_dir, pkcs12, jwt or jwt_bundle_file)")
	}
	for i, r := range o.Reloads {
		if r == nil {
			return fail("reloads[%d] is nil", i)
		}
		if v, ok := r.(validator); ok {
			if err := v.validate(); err != nil {
				return fail("reloads[%d]: %v", i, err)
			}
		}
	}
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
