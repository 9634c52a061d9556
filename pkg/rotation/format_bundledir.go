package rotation

import (
	"fmt"
	"io/fs"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// BundleDir writes a subdirectory Dir of the output's directory with one
// <trust-domain>.pem per trust domain the Workload API sends, own and
// federated, never merged (a client picks the roots of the domain it
// talks to). Mode is bundle_mode in the agent's config; default 0644.
type BundleDir struct {
	Dir  string
	Mode fs.FileMode
}

// Name implements Format.
func (f *BundleDir) Name() string { return "bundle_dir" }

// Files implements Format: the subdirectory; its files follow the trust
// domains.
func (f *BundleDir) Files() []FormatFile { return names("bundle_dir", f.Dir) }

// HoldsKey implements Format.
func (f *BundleDir) HoldsKey() bool { return false }

// Check implements Format.
func (f *BundleDir) Check(c FormatCheck) error {
	return c.CheckMode("bundle_mode", orMode(f.Mode, DefaultBundleMode), false)
}

// Build implements Format.
func (f *BundleDir) Build(in FormatInput) ([]atomicdir.File, error) {
	if f.Dir == "" {
		return nil, nil
	}
	picked, err := in.SVID()
	if err != nil {
		return nil, err
	}
	td := picked.ID.TrustDomain()
	bundles := svid.TrustDomainBundles(in.X509, td, true)
	if !hasTrustDomain(bundles, td) {
		return nil, fmt.Errorf("bundle_dir %s: no X.509 bundle for trust domain %s", f.Dir, td)
	}
	files := make([]atomicdir.File, 0, len(bundles))
	for _, b := range bundles {
		files = append(files, atomicdir.File{Name: f.Dir + "/" + svid.BundleDirFileName(b.TrustDomain), Data: svid.EncodeCertsPEM(b.Certs), Mode: orMode(f.Mode, DefaultBundleMode)})
	}
	return files, nil
}

// Equal reports whether g is a BundleDir with the same settings.
func (f *BundleDir) Equal(g Format) bool {
	o, ok := g.(*BundleDir)
	return ok && (f == o || f != nil && o != nil && *f == *o)
}

func hasTrustDomain(bundles []svid.TrustDomainBundle, td spiffeid.TrustDomain) bool {
	for _, b := range bundles {
		if b.TrustDomain == td {
			return true
		}
	}
	return false
}
