package config

import (
	"path/filepath"
	"strings"

	"github.com/identity-agent/identity-agent/pkg/tlsprobe"
)

// LayoutSPIFFEFSDelivery is the layout value for a SPIFFE Filesystem
// Delivery credential folder (a draft standard; see docs/FORMATS.md).
const LayoutSPIFFEFSDelivery = "spiffe-fs-delivery"

// Formats are an output's files beyond cert/key/bundle, and the check
// that a reload took. They are inlined into Output: the YAML keys sit
// beside cert_file. Files holding the key take key_mode, the others
// bundle_mode; no format has a mode of its own, so none is ever wider.
type Formats struct {
	// CombinedFile gets the PKCS#8 key and the chain in one PEM file
	// (HAProxy crt, MongoDB certificateKeyFile, Postgres sslcert+sslkey in
	// one, Python's load_cert_chain). Mode key_mode.
	CombinedFile string `yaml:"combined_file"`
	// CombinedOrder is key_first (default) or chain_first.
	CombinedOrder string `yaml:"combined_order"`
	// Layout "spiffe-fs-delivery" writes the directory as a SPIFFE
	// Filesystem Delivery credential folder.
	Layout string `yaml:"layout"`
	// BundleDir is a subdirectory of dir with one <trust-domain>.pem per
	// trust domain, own and federated, never merged.
	BundleDir string `yaml:"bundle_dir"`
	// PKCS12 keystore and truststore for Java and .NET.
	PKCS12 *PKCS12 `yaml:"pkcs12"`
	// Verify, after each reload, that the service serves the new SVID.
	Verify *Verify `yaml:"verify"`
}

// PKCS12 names the PKCS#12 files and their password file.
type PKCS12 struct {
	KeystoreFile   string `yaml:"keystore_file"`   // key + chain; mode key_mode
	TruststoreFile string `yaml:"truststore_file"` // roots (federated with include_federated); mode bundle_mode
	// PasswordFile holds the password (one trailing newline is ignored);
	// read at every write, never logged.
	PasswordFile string `yaml:"password_file"`
}

// Verify is where the service serves TLS, to check its certificate.
type Verify struct {
	// Address is tcp://host:port or unix:///path.
	Address string `yaml:"address"`
	// ServerName is the SNI to send (default none).
	ServerName string `yaml:"server_name"`
	// Timeout is how long after a reload the service may take to serve
	// the new certificate (default 10s).
	Timeout Duration `yaml:"timeout"`
}

func (f Formats) formatsSet() bool {
	return f.CombinedFile != "" || f.Layout != "" || f.BundleDir != "" || f.PKCS12 != nil
}

// keyBearing reports whether the output writes a file holding the
// certificate, which verify compares with what the service serves.
func (o Output) keyBearing() bool {
	f := o.Formats
	return o.CertFile != "" || f.CombinedFile != "" || f.Layout != "" || (f.PKCS12 != nil && f.PKCS12.KeystoreFile != "")
}

// validateFormats checks the format fields of output o at p (the file's
// shape and values; rotation.Output checks names against each other).
func validateFormats(v *validator, p func(...any) []any, o Output) {
	f := o.Formats
	switch f.CombinedOrder {
	case "", "key_first", "chain_first":
	default:
		v.errorf(p("combined_order"), "%q is not one of key_first, chain_first", f.CombinedOrder)
	}
	if f.CombinedOrder != "" && f.CombinedFile == "" {
		v.errorf(p("combined_order"), "is set but combined_file is not")
	}
	switch f.Layout {
	case "", LayoutSPIFFEFSDelivery:
	default:
		v.errorf(p("layout"), "%q is not a known layout (want %s)", f.Layout, LayoutSPIFFEFSDelivery)
	}
	for field, name := range map[string]string{"combined_file": f.CombinedFile, "bundle_dir": f.BundleDir} {
		if name != "" && (name != filepath.Base(name) || strings.HasPrefix(name, "..") || name == ".") {
			v.errorf(p(field), "%q must be a plain name inside dir (no '/' and no leading '..')", name)
		}
	}
	if k := f.PKCS12; k != nil {
		if k.KeystoreFile == "" && k.TruststoreFile == "" {
			v.errorf(p("pkcs12"), "set keystore_file, truststore_file or both")
		}
		for field, name := range map[string]string{"keystore_file": k.KeystoreFile, "truststore_file": k.TruststoreFile} {
			if name != "" && (name != filepath.Base(name) || strings.HasPrefix(name, "..") || name == ".") {
				v.errorf(p("pkcs12", field), "%q must be a plain file name inside dir (no '/' and no leading '..')", name)
			}
		}
		switch {
		case k.PasswordFile == "":
			v.errorf(p("pkcs12", "password_file"), "is required: PKCS#12 files are password-protected")
		case !filepath.IsAbs(k.PasswordFile):
			v.errorf(p("pkcs12", "password_file"), "%q must be an absolute path", k.PasswordFile)
		}
	}
	if vf := f.Verify; vf != nil {
		if vf.Address == "" {
			v.errorf(p("verify", "address"), "is required (tcp://host:port or unix:///path)")
		} else if _, _, err := tlsprobe.ParseAddress(vf.Address); err != nil {
			v.errorf(p("verify", "address"), "%v", err)
		}
		if vf.Timeout < 0 {
			v.errorf(p("verify", "timeout"), "must not be negative")
		}
		if !o.keyBearing() {
			v.errorf(p("verify"), "needs a certificate to compare: set cert_file, combined_file, layout or pkcs12.keystore_file")
		}
	}
}
