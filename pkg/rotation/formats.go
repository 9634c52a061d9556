package rotation

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/identity-agent/identity-agent/internal/secretfile"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// LayoutSPIFFEFSDelivery writes the output's directory as a SPIFFE
// Filesystem Delivery credential folder (a DRAFT standard, spiffe/spiffe
// PR #376; names in pkg/svid/fsdelivery.go): the credential bundle (key
// first, then the chain without its root, mode KeyMode) and one trust
// bundle per trust domain the Workload API sends, own and federated (mode
// BundleMode). A trust domain that stops being sent keeps an empty file,
// the draft's "redaction", for as long as the agent runs.
const LayoutSPIFFEFSDelivery = "spiffe-fs-delivery"

// PKCS12 asks for PKCS#12 files for Java and .NET consumers. Either file
// may be empty (not written); PasswordFile is required with either.
type PKCS12 struct {
	// KeystoreFile receives key, leaf and intermediates (mode KeyMode).
	KeystoreFile string
	// TruststoreFile receives the trust domain's roots, and with
	// IncludeFederated those of every federated domain (mode BundleMode).
	// A Java truststore is one merged trust store: prefer BundleDir or the
	// Filesystem Delivery layout with a SPIFFE-aware client (java-spiffe)
	// when federating with a domain you trust less than your own.
	TruststoreFile string
	// PasswordFile is an absolute path read before every build (so a
	// changed password takes effect at the next rotation). One trailing
	// newline is stripped. Its content is never logged.
	PasswordFile string
}

func (p PKCS12) wanted() bool { return p.KeystoreFile != "" || p.TruststoreFile != "" }

func (o Output) wantsFormats() bool {
	return o.CombinedFile != "" || o.Layout != "" || o.BundleDir != "" || o.PKCS12.wanted()
}

// wantsKey reports whether any file of the output carries the private
// key: then the SVID must pass svid.Validate before anything is written.
func (o Output) wantsKey() bool {
	return o.CertFile != "" || o.KeyFile != "" || o.CombinedFile != "" || o.Layout != "" || o.PKCS12.KeystoreFile != ""
}

// normalizeFormats checks the format fields; check registers a base name
// and rejects one used twice.
func (o *Output) normalizeFormats(check func(field, name string) error) error {
	fail := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if err := errors.Join(
		check("combined_file", o.CombinedFile),
		check("bundle_dir", o.BundleDir),
		check("pkcs12.keystore_file", o.PKCS12.KeystoreFile),
		check("pkcs12.truststore_file", o.PKCS12.TruststoreFile),
	); err != nil {
		return err
	}
	switch o.CombinedOrder {
	case svid.KeyFirst, svid.ChainFirst:
	default:
		return fail("combined_order", "%d: want key_first or chain_first", o.CombinedOrder)
	}
	switch o.Layout {
	case "":
	case LayoutSPIFFEFSDelivery:
		if err := check("layout", svid.FSDeliveryCredentialBundle); err != nil {
			return err
		}
	default:
		return fail("layout", "%q: want %q (or none)", o.Layout, LayoutSPIFFEFSDelivery)
	}
	if o.PKCS12.wanted() {
		switch {
		case o.PKCS12.PasswordFile == "":
			return fail("pkcs12.password_file", "is required with a keystore or truststore file")
		case !filepath.IsAbs(o.PKCS12.PasswordFile):
			return fail("pkcs12.password_file", "%q must be an absolute path", o.PKCS12.PasswordFile)
		}
	} else if o.PKCS12.PasswordFile != "" {
		return fail("pkcs12.password_file", "is set but neither keystore_file nor truststore_file is")
	}
	if o.Verify != nil && !o.wantsKey() {
		return fail("verify", "needs a certificate to compare: set cert_file, combined_file, layout or pkcs12.keystore_file")
	}
	return nil
}

// p12Entry remembers the bytes of a written PKCS#12 file and what they
// were made of: its encoding is randomized, so re-encoding unchanged
// material would rewrite and reload on every pass.
type p12Entry struct {
	fingerprint string
	data        []byte
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

// buildFormats adds the files of the format fields for the picked SVID.
// Pure, like build: the password and the previous PKCS#12 files come in.
func buildFormats(o Output, in buildInput, picked *x509svid.SVID, mat *material) ([]atomicdir.File, error) {
	var files []atomicdir.File
	x := in.x509
	td := picked.ID.TrustDomain()
	if o.CombinedFile != "" {
		data, err := svid.EncodeCombinedPEM(picked, o.CombinedOrder)
		if err != nil {
			return nil, fmt.Errorf("combined_file %s: %w", o.CombinedFile, err)
		}
		files = append(files, atomicdir.File{Name: o.CombinedFile, Data: data, Mode: o.KeyMode})
	}
	if o.Layout == LayoutSPIFFEFSDelivery {
		more, err := fsDeliveryFiles(o, x, picked, in.knownTrustBundles)
		if err != nil {
			return nil, err
		}
		files = append(files, more...)
	}
	if o.BundleDir != "" {
		bundles := svid.TrustDomainBundles(x, td, true)
		if !hasTrustDomain(bundles, td) {
			return nil, fmt.Errorf("bundle_dir %s: no X.509 bundle for trust domain %s", o.BundleDir, td)
		}
		for _, b := range bundles {
			files = append(files, atomicdir.File{Name: o.BundleDir + "/" + svid.BundleDirFileName(b.TrustDomain), Data: svid.EncodeCertsPEM(b.Certs), Mode: o.BundleMode})
		}
	}
	if o.PKCS12.wanted() {
		more, err := pkcs12Files(o, in, picked, mat)
		if err != nil {
			return nil, err
		}
		files = append(files, more...)
	}
	return files, nil
}

func hasTrustDomain(bundles []svid.TrustDomainBundle, td spiffeid.TrustDomain) bool {
	for _, b := range bundles {
		if b.TrustDomain == td {
			return true
		}
	}
	return false
}

func fsDeliveryFiles(o Output, x *workloadapi.X509Context, picked *x509svid.SVID, known map[string]bool) ([]atomicdir.File, error) {
	cred, err := svid.EncodeCredentialBundle(picked, x.Bundles)
	if err != nil {
		return nil, fmt.Errorf("layout %s: %w", LayoutSPIFFEFSDelivery, err)
	}
	files := []atomicdir.File{{Name: svid.FSDeliveryCredentialBundle, Data: cred, Mode: o.KeyMode}}
	td := picked.ID.TrustDomain()
	bundles := svid.TrustDomainBundles(x, td, true)
	if !hasTrustDomain(bundles, td) {
		return nil, fmt.Errorf("layout %s: no X.509 bundle for trust domain %s", LayoutSPIFFEFSDelivery, td)
	}
	current := map[string]bool{}
	for _, b := range bundles {
		name := svid.FSDeliveryTrustBundleName(b.TrustDomain)
		current[name] = true
		files = append(files, atomicdir.File{Name: name, Data: svid.EncodeCertsPEM(b.Certs), Mode: o.BundleMode})
	}
	// Draft §2.3: withdraw a trust domain with an empty file rather than
	// by removing it, which a reader could take for a remount.
	var redacted []string
	for name := range known {
		if !current[name] {
			redacted = append(redacted, name)
		}
	}
	sort.Strings(redacted)
	for _, name := range redacted {
		files = append(files, atomicdir.File{Name: name, Data: nil, Mode: o.BundleMode})
	}
	return files, nil
}

func pkcs12Files(o Output, in buildInput, picked *x509svid.SVID, mat *material) ([]atomicdir.File, error) {
	if in.pkcs12Err != nil {
		return nil, in.pkcs12Err
	}
	pw := in.pkcs12Password
	mat.p12 = map[string]p12Entry{}
	var files []atomicdir.File
	encode := func(name string, fp string, enc func() ([]byte, error)) ([]byte, error) {
		if prev, ok := in.p12Prev[name]; ok && prev.fingerprint == fp {
			mat.p12[name] = prev
			return prev.data, nil
		}
		data, err := enc()
		if err != nil {
			return nil, err
		}
		mat.p12[name] = p12Entry{fingerprint: fp, data: data}
		return data, nil
	}
	if name := o.PKCS12.KeystoreFile; name != "" {
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
		files = append(files, atomicdir.File{Name: name, Data: data, Mode: o.KeyMode})
	}
	if name := o.PKCS12.TruststoreFile; name != "" {
		td := picked.ID.TrustDomain()
		bundles := svid.TrustDomainBundles(in.x509, td, o.IncludeFederated)
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
		files = append(files, atomicdir.File{Name: name, Data: data, Mode: o.BundleMode})
	}
	return files, nil
}

// rememberFormats keeps, after a write went live, what the next build
// needs: the PKCS#12 bytes and the trust bundle names written, and the
// file names for State and the guard (bundle_dir and the Filesystem
// Delivery layout name files after trust domains, so they change).
// Called with syncMu held.
func (r *outputRunner) rememberFormats(files []atomicdir.File, mat material) {
	if r.out.PKCS12.wanted() {
		r.p12 = mat.p12
	}
	r.lastSVID = mat.svid
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.Name)
		if r.out.Layout == LayoutSPIFFEFSDelivery {
			if _, ok := svid.FSDeliveryTrustDomain(f.Name); ok {
				r.knownTB[f.Name] = true
			}
		}
	}
	r.names = names
	r.stMu.Lock()
	r.st.Files = append([]string(nil), names...)
	r.stMu.Unlock()
}

// knownTrustBundles lists the Filesystem Delivery trust bundles an earlier
// run left in the output's directory (links of ours into ..data), so a
// trust domain withdrawn while the agent was down is redacted too.
func knownTrustBundles(o Output) map[string]bool {
	known := map[string]bool{}
	if o.Layout != LayoutSPIFFEFSDelivery {
		return known
	}
	entries, err := os.ReadDir(o.Dir)
	if err != nil {
		return known
	}
	for _, e := range entries {
		if _, ok := svid.FSDeliveryTrustDomain(e.Name()); !ok {
			continue
		}
		if link, err := os.Readlink(filepath.Join(o.Dir, e.Name())); err == nil && link == "..data/"+e.Name() {
			known[e.Name()] = true
		}
	}
	return known
}
