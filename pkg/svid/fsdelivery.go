package svid

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// The SPIFFE Filesystem Delivery layout is a DRAFT (spiffe/spiffe PR #376,
// followed as of its head revision ahmedtd/spiffe@4f067b2, section 2).
// Its file names changed twice in review; every name the layout uses is
// defined here and nowhere else, so following the standard as it settles
// is a change to this block only.
const (
	// FSDeliveryCredentialBundle holds the PKCS#8 PRIVATE KEY block first,
	// then the chain leaf-to-root without the trust anchor (draft §2.1).
	FSDeliveryCredentialBundle = "credential-bundle.private-key.x509.pem"
	// fsDeliveryTrustBundleSuffix follows the trust domain name in the
	// name of each trust bundle file (draft §2.2).
	fsDeliveryTrustBundleSuffix = ".spiffe-trust-bundle.x509.pem"
)

// FSDeliveryTrustBundleName is the file name of td's trust bundle in a
// Filesystem Delivery credential folder: "<trust-domain>.spiffe-trust-bundle.x509.pem".
func FSDeliveryTrustBundleName(td spiffeid.TrustDomain) string {
	return td.Name() + fsDeliveryTrustBundleSuffix
}

// FSDeliveryTrustDomain is the inverse of FSDeliveryTrustBundleName: the
// trust domain a trust bundle file is named after, ok=false for any other
// name.
func FSDeliveryTrustDomain(name string) (spiffeid.TrustDomain, bool) {
	tdName, ok := strings.CutSuffix(name, fsDeliveryTrustBundleSuffix)
	if !ok || tdName == "" {
		return spiffeid.TrustDomain{}, false
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return spiffeid.TrustDomain{}, false
	}
	return td, true
}

// EncodeCredentialBundle encodes a Filesystem Delivery credential bundle:
// the PKCS#8 key, then the chain without its trust anchor, no headers and
// nothing between blocks.
func EncodeCredentialBundle(s *x509svid.SVID, bundles x509bundle.Source) ([]byte, error) {
	if s == nil || len(s.Certificates) == 0 {
		return nil, fmt.Errorf("encode credential bundle: no certificates")
	}
	key, err := EncodeKeyPEM(s.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encode credential bundle for %s: %w", s.ID, err)
	}
	return append(key, EncodeCertsPEM(chainWithoutAnchors(s, bundles))...), nil
}

// BundleDirFileName is the file name of td's bundle inside a bundle_dir:
// "<trust-domain>.pem".
func BundleDirFileName(td spiffeid.TrustDomain) string {
	return td.Name() + ".pem"
}
