package rotation

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// LayoutSPIFFEFSDelivery names the SPIFFE Filesystem Delivery layout
// (FSDelivery) in the agent's config: layout: spiffe-fs-delivery.
const LayoutSPIFFEFSDelivery = "spiffe-fs-delivery"

// FSDelivery writes the output's directory as a SPIFFE Filesystem
// Delivery credential folder (a DRAFT standard, spiffe/spiffe PR #376;
// names in pkg/svid/fsdelivery.go): the credential bundle (key first, then
// the chain without its root, mode KeyMode) and one trust bundle per trust
// domain the Workload API sends, own and federated (mode BundleMode). A
// trust domain that stops being sent keeps an empty file, the draft's
// "redaction", for as long as the agent runs. Modes are key_mode and
// bundle_mode in the agent's config; defaults 0600 and 0644.
type FSDelivery struct {
	KeyMode, BundleMode fs.FileMode
}

// Name implements Format.
func (f *FSDelivery) Name() string { return LayoutSPIFFEFSDelivery }

// Files implements Format: the credential bundle; the trust bundles
// follow the trust domains.
func (f *FSDelivery) Files() []FormatFile {
	return names("layout", svid.FSDeliveryCredentialBundle)
}

// HoldsKey implements Format.
func (f *FSDelivery) HoldsKey() bool { return true }

// Check implements Format.
func (f *FSDelivery) Check(c FormatCheck) error {
	return joinDistinct(
		c.CheckMode("key_mode", orMode(f.KeyMode, DefaultKeyMode), true),
		c.CheckMode("bundle_mode", orMode(f.BundleMode, DefaultBundleMode), false),
	)
}

// Build implements Format.
func (f *FSDelivery) Build(in FormatInput) ([]atomicdir.File, error) {
	picked, err := in.SVID()
	if err != nil {
		return nil, err
	}
	cred, err := svid.EncodeCredentialBundle(picked, in.X509.Bundles)
	if err != nil {
		return nil, fmt.Errorf("layout %s: %w", LayoutSPIFFEFSDelivery, err)
	}
	bundleMode := orMode(f.BundleMode, DefaultBundleMode)
	files := []atomicdir.File{{Name: svid.FSDeliveryCredentialBundle, Data: cred, Mode: orMode(f.KeyMode, DefaultKeyMode)}}
	td := picked.ID.TrustDomain()
	bundles := svid.TrustDomainBundles(in.X509, td, true)
	if !hasTrustDomain(bundles, td) {
		return nil, fmt.Errorf("layout %s: no X.509 bundle for trust domain %s", LayoutSPIFFEFSDelivery, td)
	}
	known := f.knownTrustBundles(in)
	current := map[string]bool{}
	for _, b := range bundles {
		name := svid.FSDeliveryTrustBundleName(b.TrustDomain)
		current[name] = true
		files = append(files, atomicdir.File{Name: name, Data: svid.EncodeCertsPEM(b.Certs), Mode: bundleMode})
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
		files = append(files, atomicdir.File{Name: name, Data: nil, Mode: bundleMode})
	}
	return files, nil
}

// knownTrustBundles are the trust bundles written so far, each of which
// stays, redacted, once withdrawn: those of the set last written (every
// build writes all the known ones, so that set holds them all) or, until
// this Manager wrote a set, those an earlier run left in dir (links of
// ours into ..data, so a trust domain withdrawn while the agent was down
// is redacted too).
func (f *FSDelivery) knownTrustBundles(in FormatInput) map[string]bool {
	known := map[string]bool{}
	if in.Previous == nil {
		if entries, err := os.ReadDir(in.Dir); err == nil {
			for _, e := range entries {
				if _, ok := svid.FSDeliveryTrustDomain(e.Name()); !ok {
					continue
				}
				if link, err := os.Readlink(filepath.Join(in.Dir, e.Name())); err == nil && link == "..data/"+e.Name() {
					known[e.Name()] = true
				}
			}
		}
	}
	for _, p := range in.Previous {
		if _, ok := svid.FSDeliveryTrustDomain(p.Name); ok {
			known[p.Name] = true
		}
	}
	return known
}

// Equal reports whether g is an FSDelivery with the same settings.
func (f *FSDelivery) Equal(g Format) bool {
	o, ok := g.(*FSDelivery)
	return ok && (f == o || f != nil && o != nil && *f == *o)
}
