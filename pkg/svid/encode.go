package svid

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"sort"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// EncodeCertsPEM encodes certificates as consecutive "CERTIFICATE" PEM
// blocks in the order given (for an SVID: leaf first, then intermediates,
// which is what TLS servers expect in a chain file).
func EncodeCertsPEM(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		if c == nil {
			continue
		}
		// pem.Encode only fails on headers it cannot write; there are none.
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// EncodeKeyPEM encodes a private key as a PKCS#8 "PRIVATE KEY" PEM block,
// the one format every TLS stack in use here (OpenSSL, Go, Python, Redis)
// reads for RSA, ECDSA and Ed25519 alike.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("encode private key: key is nil")
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key (%T) as PKCS#8: %w", key, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// EncodeJWKS encodes the JWT authorities of the bundles as one JWKS
// document, {"keys":[...]}, each key carrying its "kid" and
// "use":"jwt-svid" as in SPIRE's bundle format. Keys are ordered by trust
// domain then key ID and members are sorted, so equal input gives equal
// bytes and an unchanged bundle never causes a rewrite.
func EncodeJWKS(bundles ...*jwtbundle.Bundle) ([]byte, error) {
	type entry struct {
		td, kid string
		key     map[string]json.RawMessage
	}
	var entries []entry
	for _, b := range bundles {
		if b == nil {
			continue
		}
		for kid, pub := range b.JWTAuthorities() {
			// Marshal one key at a time through go-spiffe, which owns the
			// JWK encoding of every key type it accepts.
			raw, err := jwtbundle.FromJWTAuthorities(b.TrustDomain(), map[string]crypto.PublicKey{kid: pub}).Marshal()
			if err != nil {
				return nil, fmt.Errorf("encode JWKS: trust domain %q key %q: %w", b.TrustDomain(), kid, err)
			}
			var doc struct {
				Keys []map[string]json.RawMessage `json:"keys"`
			}
			if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Keys) != 1 {
				return nil, fmt.Errorf("encode JWKS: trust domain %q key %q: unexpected JWK encoding: %v", b.TrustDomain(), kid, err)
			}
			doc.Keys[0]["use"] = json.RawMessage(`"jwt-svid"`)
			entries = append(entries, entry{td: b.TrustDomain().Name(), kid: kid, key: doc.Keys[0]})
		}
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].td != entries[j].td {
			return entries[i].td < entries[j].td
		}
		return entries[i].kid < entries[j].kid
	})
	out := struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}{Keys: make([]map[string]json.RawMessage, 0, len(entries))}
	for _, e := range entries {
		out.Keys = append(out.Keys, e.key)
	}
	data, err := json.Marshal(out) // map keys are sorted by encoding/json
	if err != nil {
		return nil, fmt.Errorf("encode JWKS: %w", err)
	}
	return append(data, '\n'), nil
}

// BundleCerts returns the CA certificates a peer-verifying service needs:
// the X.509 authorities of td, then (includeFederated) those of every other
// trust domain in the context ordered by name, then (includeIntermediates)
// the intermediates of the context's SVIDs in td. Duplicates are dropped.
// The order is deterministic so an unchanged bundle is never rewritten.
func BundleCerts(ctx *workloadapi.X509Context, td spiffeid.TrustDomain, includeFederated, includeIntermediates bool) []*x509.Certificate {
	if ctx == nil || ctx.Bundles == nil {
		return nil
	}
	var out []*x509.Certificate
	seen := make(map[string]bool)
	add := func(certs []*x509.Certificate) {
		for _, c := range certs {
			if c == nil || seen[string(c.Raw)] {
				continue
			}
			seen[string(c.Raw)] = true
			out = append(out, c)
		}
	}
	if b, ok := ctx.Bundles.Get(td); ok {
		add(b.X509Authorities())
	}
	if includeFederated {
		others := ctx.Bundles.Bundles()
		sort.Slice(others, func(i, j int) bool { return others[i].TrustDomain().Name() < others[j].TrustDomain().Name() })
		for _, b := range others {
			if b.TrustDomain() != td {
				add(b.X509Authorities())
			}
		}
	}
	if includeIntermediates {
		for _, sv := range ctx.SVIDs {
			if sv != nil && sv.ID.MemberOf(td) && len(sv.Certificates) > 1 {
				add(sv.Certificates[1:])
			}
		}
	}
	return out
}
