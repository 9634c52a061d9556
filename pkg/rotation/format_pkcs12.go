package rotation

import (
	"crypto/x509"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/identity-agent/identity-agent/internal/secretfile"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// PKCS12 writes PKCS#12 files for Java and .NET consumers. Either file
// may be empty (not written); PasswordFile is required with either.
type PKCS12 struct {
	// KeystoreFile receives key, leaf and intermediates (mode KeyMode).
	KeystoreFile string
	// TruststoreFile receives the trust domain's roots, and with the
	// output's IncludeFederated those of every federated domain (mode
	// BundleMode). A Java truststore is one merged trust store: prefer
	// BundleDir or the Filesystem Delivery layout with a SPIFFE-aware
	// client (java-spiffe) when federating with a domain you trust less
	// than your own.
	TruststoreFile string
	// PasswordFile is an absolute path read before every build (so a
	// changed password takes effect at the next rotation). One trailing
	// newline is stripped. Its content is never logged.
	PasswordFile string
	// Modes are key_mode and bundle_mode in the agent's config; defaults
	// 0600 and 0644.
	KeyMode, BundleMode fs.FileMode

	// The bytes of each file last built and what they were made of: the
	// encoding is randomized, so re-encoding unchanged material would
	// rewrite and reload on every pass.
	cache map[string]p12Entry
}

type p12Entry struct {
	fingerprint string
	data        []byte
}

// Name implements Format.
func (f *PKCS12) Name() string { return "pkcs12" }

// Files implements Format.
func (f *PKCS12) Files() []FormatFile {
	return names("pkcs12.keystore_file", f.KeystoreFile, "pkcs12.truststore_file", f.TruststoreFile)
}

// HoldsKey implements Format.
func (f *PKCS12) HoldsKey() bool { return f.KeystoreFile != "" }

func (f *PKCS12) wanted() bool { return f.KeystoreFile != "" || f.TruststoreFile != "" }

// Check implements Format.
func (f *PKCS12) Check(c FormatCheck) error {
	var err error
	if f.wanted() {
		switch {
		case f.PasswordFile == "":
			err = fielderr.Errorf("pkcs12.password_file", "is required with a keystore or truststore file")
		case !filepath.IsAbs(f.PasswordFile):
			err = fielderr.Errorf("pkcs12.password_file", "%q must be an absolute path", f.PasswordFile)
		}
	} else if f.PasswordFile != "" {
		err = fielderr.Errorf("pkcs12.password_file", "is set but neither keystore_file nor truststore_file is")
	}
	return joinDistinct(err,
		c.CheckMode("key_mode", orMode(f.KeyMode, DefaultKeyMode), true),
		c.CheckMode("bundle_mode", orMode(f.BundleMode, DefaultBundleMode), false))
}

// readPKCS12Password reads the password file (internal/secretfile: its
// trailing line breaks are not part of the password). The error names the
// file, never its content.
func readPKCS12Password(path string) (string, error) {
	pw, err := secretfile.Read(path)
	if err != nil {
		return "", fmt.Errorf("pkcs12.password_file: %w", err)
	}
	return pw, nil
}

// Build implements Format. The password file is read at every build.
func (f *PKCS12) Build(in FormatInput) ([]atomicdir.File, error) {
	if !f.wanted() {
		return nil, nil
	}
	picked, err := in.SVID()
	if err != nil {
		return nil, err
	}
	pw, err := readPKCS12Password(f.PasswordFile)
	if err != nil {
		return nil, err
	}
	prev := f.cache
	f.cache = map[string]p12Entry{}
	var files []atomicdir.File
	encode := func(name string, fp string, enc func() ([]byte, error)) ([]byte, error) {
		if e, ok := prev[name]; ok && e.fingerprint == fp {
			f.cache[name] = e
			return e.data, nil
		}
		data, err := enc()
		if err != nil {
			return nil, err
		}
		f.cache[name] = p12Entry{fingerprint: fp, data: data}
		return data, nil
	}
	if name := f.KeystoreFile; name != "" {
		keyDER, err := x509.MarshalPKCS8PrivateKey(picked.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("pkcs12.keystore_file %s: encode key of %s: %w", name, picked.ID, err)
		}
		parts := [][]byte{[]byte("keystore"), keyDER}
		for _, c := range picked.Certificates {
			parts = append(parts, c.Raw)
		}
		data, err := encode(name, svid.PKCS12Fingerprint(pw, parts...), func() ([]byte, error) { return svid.EncodePKCS12Keystore(picked, pw) })
		if err != nil {
			return nil, fmt.Errorf("pkcs12.keystore_file %s: %w", name, err)
		}
		files = append(files, atomicdir.File{Name: name, Data: data, Mode: orMode(f.KeyMode, DefaultKeyMode)})
	}
	if name := f.TruststoreFile; name != "" {
		td := picked.ID.TrustDomain()
		bundles := svid.TrustDomainBundles(in.X509, td, in.IncludeFederated)
		if !hasTrustDomain(bundles, td) {
			return nil, fmt.Errorf("pkcs12.truststore_file %s: no X.509 bundle for trust domain %s", name, td)
		}
		parts := [][]byte{[]byte("truststore")}
		for _, b := range bundles {
			parts = append(parts, []byte(b.TrustDomain.Name()))
			for _, c := range b.Certs {
				parts = append(parts, c.Raw)
			}
		}
		data, err := encode(name, svid.PKCS12Fingerprint(pw, parts...), func() ([]byte, error) { return svid.EncodePKCS12Truststore(bundles, pw) })
		if err != nil {
			return nil, fmt.Errorf("pkcs12.truststore_file %s: %w", name, err)
		}
		files = append(files, atomicdir.File{Name: name, Data: data, Mode: orMode(f.BundleMode, DefaultBundleMode)})
	}
	return files, nil
}

// Equal reports whether g is a PKCS12 with the same settings.
func (f *PKCS12) Equal(g Format) bool {
	o, ok := g.(*PKCS12)
	if !ok || f == nil || o == nil {
		return ok && f == o
	}
	return f.KeystoreFile == o.KeystoreFile && f.TruststoreFile == o.TruststoreFile &&
		f.PasswordFile == o.PasswordFile && f.KeyMode == o.KeyMode && f.BundleMode == o.BundleMode
}
