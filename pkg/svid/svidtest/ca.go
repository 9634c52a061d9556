package svidtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// caLifetime is long enough for any dev session; SVIDs are the short-lived part.
const caLifetime = 7 * 24 * time.Hour

// CA is an in-memory SPIFFE certificate authority for one trust domain.
// After Rotate, the bundle keeps the previous roots and JWT keys so that
// material issued before the rotation still verifies, as SPIRE does while
// old SVIDs are still valid.
type CA struct {
	td spiffeid.TrustDomain

	mu       sync.Mutex
	key      crypto.Signer
	cert     *x509.Certificate
	roots    []*x509.Certificate
	jwtKey   crypto.Signer
	jwtKeyID string
	jwtKeys  map[string]crypto.PublicKey
}

// NewCA creates a CA with a fresh P-256 root and JWT signing key.
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	ca := &CA{td: td, jwtKeys: map[string]crypto.PublicKey{}}
	if err := ca.Rotate(); err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain is the trust domain the CA issues for.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Rotate replaces the signing root and JWT key. Up to two roots and two JWT
// keys stay in the bundle: the new one and the one before it.
func (ca *CA) Rotate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("svidtest: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"identity-agent dev CA"}, SerialNumber: serial.String()},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("svidtest: self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("svidtest: parse CA: %w", err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("svidtest: generate JWT key: %w", err)
	}
	kidBytes := make([]byte, 16)
	if _, err := rand.Read(kidBytes); err != nil {
		return fmt.Errorf("svidtest: JWT key id: %w", err)
	}

	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.key, ca.cert = key, cert
	ca.roots = append(lastN(ca.roots, 1), cert)
	if ca.jwtKeyID != "" {
		// Keep only the previous key next to the new one.
		prev := ca.jwtKeys[ca.jwtKeyID]
		ca.jwtKeys = map[string]crypto.PublicKey{ca.jwtKeyID: prev}
	}
	ca.jwtKey, ca.jwtKeyID = jwtKey, hex.EncodeToString(kidBytes)
	ca.jwtKeys[ca.jwtKeyID] = jwtKey.Public()
	return nil
}

func lastN(certs []*x509.Certificate, n int) []*x509.Certificate {
	if len(certs) <= n {
		return append([]*x509.Certificate(nil), certs...)
	}
	return append([]*x509.Certificate(nil), certs[len(certs)-n:]...)
}

// X509Bundle returns the roots a peer must trust, current and previous.
func (ca *CA) X509Bundle() *x509bundle.Bundle {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return x509bundle.FromX509Authorities(ca.td, ca.roots)
}

// JWTBundle returns the JWT signing keys, current and previous.
func (ca *CA) JWTBundle() *jwtbundle.Bundle {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return jwtbundle.FromJWTAuthorities(ca.td, ca.jwtKeys)
}

// IssueX509SVID signs a leaf X.509-SVID for id valid between notBefore and
// notAfter. It does not check that id belongs to the CA's trust domain, so
// that tests can mint deliberately wrong certificates. dnsNames become DNS
// SANs, as a SPIRE registration entry's dns_names do.
func (ca *CA) IssueX509SVID(id spiffeid.ID, notBefore, notAfter time.Time, dnsNames ...string) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("svidtest: generate SVID key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"SPIRE"}, SerialNumber: serial.String()},
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if len(dnsNames) > 0 {
		tmpl.Subject.CommonName = dnsNames[0]
	}
	ca.mu.Lock()
	parent, signer := ca.cert, ca.key
	ca.mu.Unlock()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("svidtest: sign SVID for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("svidtest: parse SVID: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, nil
}

// IssueJWTSVID signs an ES256 JWT-SVID for id with the given audience.
func (ca *CA) IssueJWTSVID(id spiffeid.ID, audience []string, ttl time.Duration) (string, error) {
	ca.mu.Lock()
	key, kid := ca.jwtKey, ca.jwtKeyID
	ca.mu.Unlock()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid),
	)
	if err != nil {
		return "", fmt.Errorf("svidtest: JWT signer: %w", err)
	}
	now := time.Now()
	claims := jwt.Claims{
		Subject:  id.String(),
		Audience: audience,
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(ttl)),
	}
	token, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("svidtest: sign JWT-SVID for %s: %w", id, err)
	}
	return token, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("svidtest: serial number: %w", err)
	}
	return serial, nil
}
