package svid

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"sort"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// CombinedOrder is the order of the parts of a combined key+chain PEM.
type CombinedOrder int

const (
	// KeyFirst puts the PRIVATE KEY block before the chain (the SPIFFE
	// Filesystem Delivery draft, MongoDB certificateKeyFile, Postgres).
	KeyFirst CombinedOrder = iota
	// ChainFirst puts the chain before the key (HAProxy crt accepts both;
	// some tools only read the first block as "the certificate").
	ChainFirst
)

// String returns the configuration spelling: "key_first" or "chain_first".
func (o CombinedOrder) String() string {
	if o == ChainFirst {
		return "chain_first"
	}
	return "key_first"
}

// ParseCombinedOrder reads "key_first" (also the default for "") or
// "chain_first".
func ParseCombinedOrder(s string) (CombinedOrder, error) {
	switch s {
	case "", "key_first":
		return KeyFirst, nil
	case "chain_first":
		return ChainFirst, nil
	}
	return KeyFirst, fmt.Errorf("combined order %q: want key_first or chain_first", s)
}

// EncodeCombinedPEM encodes the SVID's PKCS#8 key and its chain (leaf
// first, then intermediates) into one PEM file. A reader that opens one
// file gets a matching key and certificate whatever its schedule, which no
// pair of files can promise. Deterministic: equal input, equal bytes.
func EncodeCombinedPEM(s *x509svid.SVID, order CombinedOrder) ([]byte, error) {
	if s == nil || len(s.Certificates) == 0 {
		return nil, fmt.Errorf("encode combined PEM: no certificates")
	}
	key, err := EncodeKeyPEM(s.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("encode combined PEM for %s: %w", s.ID, err)
	}
	chain := EncodeCertsPEM(s.Certificates)
	if order == ChainFirst {
		return append(chain, key...), nil
	}
	return append(key, chain...), nil
}

// TrustDomainBundle is the X.509 authorities of one trust domain.
type TrustDomainBundle struct {
	TrustDomain spiffeid.TrustDomain
	Certs       []*x509.Certificate
}

// TrustDomainBundles returns td's bundle and, when includeFederated, one
// per federated trust domain, each kept apart: a consumer that loads the
// bundle of its peer's trust domain cannot be fooled by a federated CA
// minting IDs of another domain, as it can with one merged trust store.
// The result is ordered by trust domain name so it encodes
// deterministically; td's bundle is included when present.
func TrustDomainBundles(ctx *workloadapi.X509Context, td spiffeid.TrustDomain, includeFederated bool) []TrustDomainBundle {
	if ctx == nil || ctx.Bundles == nil {
		return nil
	}
	var out []TrustDomainBundle
	for _, b := range ctx.Bundles.Bundles() {
		if b.TrustDomain() != td && !includeFederated {
			continue
		}
		certs := dedupe(b.X509Authorities())
		if len(certs) == 0 {
			continue
		}
		out = append(out, TrustDomainBundle{TrustDomain: b.TrustDomain(), Certs: certs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TrustDomain.Name() < out[j].TrustDomain.Name() })
	return out
}

func dedupe(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	seen := make(map[string]bool, len(certs))
	for _, c := range certs {
		if c == nil || seen[string(c.Raw)] {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, c)
	}
	return out
}

// chainWithoutAnchors returns the SVID's chain, leaf first, stopping before
// the first certificate that is a trust anchor of the SVID's trust domain
// in bundles or is self-signed: the SPIFFE Filesystem Delivery draft says
// the credential bundle MUST NOT carry the trust anchor.
func chainWithoutAnchors(s *x509svid.SVID, bundles x509bundle.Source) []*x509.Certificate {
	if s == nil || len(s.Certificates) == 0 {
		return nil
	}
	anchors := map[string]bool{}
	if bundles != nil {
		if b, err := bundles.GetX509BundleForTrustDomain(s.ID.TrustDomain()); err == nil {
			for _, c := range b.X509Authorities() {
				anchors[string(c.Raw)] = true
			}
		}
	}
	out := []*x509.Certificate{s.Certificates[0]}
	for _, c := range s.Certificates[1:] {
		if c == nil || anchors[string(c.Raw)] || isSelfSigned(c) {
			break
		}
		out = append(out, c)
	}
	return out
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
