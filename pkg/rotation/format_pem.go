package rotation

import (
	"fmt"
	"io/fs"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/fielderr"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// PEM writes the PEM trio: the certificate chain (leaf first), the PKCS#8
// key and the CA bundle, each in its own file. A name left "" is not
// written. Modes default to 0644, 0600, 0644.
type PEM struct {
	CertFile, KeyFile, BundleFile string
	CertMode, KeyMode, BundleMode fs.FileMode
	// IntermediatesInBundle adds the SVID's intermediates to BundleFile.
	IntermediatesInBundle bool
}

// Name implements Format.
func (f *PEM) Name() string { return "pem" }

// Files implements Format.
func (f *PEM) Files() []FormatFile {
	return names("cert_file", f.CertFile, "key_file", f.KeyFile, "bundle_file", f.BundleFile)
}

// HoldsKey implements Format: the certificate goes with its key, so a
// cert_file alone is checked too (and is what Verify compares).
func (f *PEM) HoldsKey() bool { return f.CertFile != "" || f.KeyFile != "" }

// Check implements Format: the three modes, set or not (they are the
// output's modes in the agent's config).
func (f *PEM) Check(c FormatCheck) error {
	return joinDistinct(
		c.CheckMode("cert_mode", orMode(f.CertMode, DefaultCertMode), false),
		c.CheckMode("key_mode", orMode(f.KeyMode, DefaultKeyMode), true),
		c.CheckMode("bundle_mode", orMode(f.BundleMode, DefaultBundleMode), false),
	)
}

// Warnings implements Warner: a key more widely readable than its
// certificate.
func (f *PEM) Warnings() []error {
	cm, km := orMode(f.CertMode, DefaultCertMode), orMode(f.KeyMode, DefaultKeyMode)
	if f.KeyFile != "" && f.CertFile != "" && km.Perm()&^cm.Perm() != 0 {
		return []error{fielderr.Errorf("key_mode", "%s is wider than cert_mode %s: the key is readable where the certificate is not",
			octal(km), octal(cm))}
	}
	return nil
}

// Build implements Format.
func (f *PEM) Build(in FormatInput) ([]atomicdir.File, error) {
	if len(f.Files()) == 0 {
		return nil, nil
	}
	picked, err := in.SVID()
	if err != nil {
		return nil, err
	}
	var files []atomicdir.File
	if f.CertFile != "" {
		files = append(files, atomicdir.File{Name: f.CertFile, Data: svid.EncodeCertsPEM(picked.Certificates), Mode: orMode(f.CertMode, DefaultCertMode)})
	}
	if f.KeyFile != "" {
		key, err := svid.EncodeKeyPEM(picked.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("encode key of %s: %w", picked.ID, err)
		}
		files = append(files, atomicdir.File{Name: f.KeyFile, Data: key, Mode: orMode(f.KeyMode, DefaultKeyMode)})
	}
	if f.BundleFile != "" {
		certs := svid.BundleCerts(in.X509, picked.ID.TrustDomain(), in.IncludeFederated, f.IntermediatesInBundle)
		if len(certs) == 0 {
			return nil, fmt.Errorf("no X.509 bundle for trust domain %s", picked.ID.TrustDomain())
		}
		files = append(files, atomicdir.File{Name: f.BundleFile, Data: svid.EncodeCertsPEM(certs), Mode: orMode(f.BundleMode, DefaultBundleMode)})
	}
	return files, nil
}

// Equal reports whether g is a PEM with the same settings.
func (f *PEM) Equal(g Format) bool {
	o, ok := g.(*PEM)
	return ok && (f == o || f != nil && o != nil && *f == *o)
}
