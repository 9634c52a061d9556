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

// CA is an in-memory SPIFFE certificate authority for one trust domain,
// with SPIRE's two-step rotation (spire pkg/server/ca/manager): Prepare
// creates the next authority (an X.509 root and a JWT key) and publishes it
// in the bundles without signing with it; Activate makes the oldest prepared
// authority the one that signs. An authority that stops signing stays in
// the bundles, so that what it signed still verifies, until Prune finds
// that everything it signed has expired (its root and its JWT key each on
// their own). (SPIRE keeps an old root until 24
// hours after the root itself expires; its roots live for days, these
// SVIDs for minutes, so "until what it signed has expired" keeps the same
// guarantee without a bundle that grows all session.)
type CA struct {
	td spiffeid.TrustDomain

	mu       sync.Mutex
	active   *authority
	prepared []*authority // published, not signing yet; oldest first
	retired  []*authority // published, no longer signing; oldest first
}

// authority is one X.509 root and one JWT signing key, rotated together.
type authority struct {
	key      crypto.Signer
	cert     *x509.Certificate
	jwtKey   crypto.Signer
	jwtKeyID string
	// x509Until and jwtUntil are the latest expiry of an X.509-SVID and
	// of a JWT-SVID it signed: a retired root and a retired JWT key leave
	// the bundles separately, each once what it signed has expired.
	x509Until, jwtUntil time.Time
	x509Gone, jwtGone   bool
}

// NewCA creates a CA with a fresh, active P-256 root and JWT signing key.
func NewCA(td spiffeid.TrustDomain) (*CA, error) {
	ca := &CA{td: td}
	if err := ca.Rotate(); err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain is the trust domain the CA issues for.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Rotate prepares a new authority and activates it at once: the old
// behaviour of a CA that switches with no warning. Peers that have not yet
// received the new root reject what it signs; use Prepare and Activate to
// rotate as SPIRE does.
func (ca *CA) Rotate() error {
	if err := ca.Prepare(); err != nil {
		return err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for len(ca.prepared) > 0 {
		ca.activateLocked()
	}
	return nil
}

// Prepare creates the next authority and publishes its root and JWT key in
// the bundles. It does not sign anything until Activate.
func (ca *CA) Prepare() error {
	a, err := newAuthority(ca.td)
	if err != nil {
		return err
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.prepared = append(ca.prepared, a)
	return nil
}

// Activate makes the oldest prepared authority the signing one; the one it
// replaces stays in the bundles until Prune drops it. It reports whether
// there was a prepared authority to activate.
func (ca *CA) Activate() bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if len(ca.prepared) == 0 {
		return false
	}
	ca.activateLocked()
	return true
}

func (ca *CA) activateLocked() {
	if ca.active != nil {
		ca.retired = append(ca.retired, ca.active)
	}
	ca.active, ca.prepared = ca.prepared[0], ca.prepared[1:]
}

// Prepared reports how many authorities are published but not signing yet.
func (ca *CA) Prepared() int {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return len(ca.prepared)
}

// Prune drops from the bundles every retired root whose X.509-SVIDs have
// all expired by now, and every retired JWT key whose JWT-SVIDs have, and
// reports whether it dropped any.
func (ca *CA) Prune(now time.Time) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	dropped := false
	kept := ca.retired[:0]
	for _, a := range ca.retired {
		if !a.x509Gone && !now.Before(a.x509Until) {
			a.x509Gone, dropped = true, true
		}
		if !a.jwtGone && !now.Before(a.jwtUntil) {
			a.jwtGone, dropped = true, true
		}
		if !a.x509Gone || !a.jwtGone {
			kept = append(kept, a)
		}
	}
	clear(ca.retired[len(kept):])
	ca.retired = kept
	return dropped
}

// Root is the certificate of the signing authority.
func (ca *CA) Root() *x509.Certificate {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return ca.active.cert
}

// published returns retired, active and prepared authorities, in that order.
func (ca *CA) publishedLocked() []*authority {
	out := append([]*authority(nil), ca.retired...)
	out = append(out, ca.active)
	return append(out, ca.prepared...)
}

func newAuthority(td spiffeid.TrustDomain) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("svidtest: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"identity-agent dev CA"}, SerialNumber: serial.String()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("svidtest: self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("svidtest: parse CA: %w", err)
	}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("svidtest: generate JWT key: %w", err)
	}
	kidBytes := make([]byte, 16)
	if _, err := rand.Read(kidBytes); err != nil {
		return nil, fmt.Errorf("svidtest: JWT key id: %w", err)
	}
	return &authority{key: key, cert: cert, jwtKey: jwtKey, jwtKeyID: hex.EncodeToString(kidBytes)}, nil
}

// X509Bundle returns the roots a peer must trust: the signing one, the
// prepared ones and the retired ones still needed.
func (ca *CA) X509Bundle() *x509bundle.Bundle {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	var roots []*x509.Certificate
	for _, a := range ca.publishedLocked() {
		if !a.x509Gone {
			roots = append(roots, a.cert)
		}
	}
	return x509bundle.FromX509Authorities(ca.td, roots)
}

// JWTBundle returns the JWT keys a peer must trust, as X509Bundle does.
func (ca *CA) JWTBundle() *jwtbundle.Bundle {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	keys := map[string]crypto.PublicKey{}
	for _, a := range ca.publishedLocked() {
		if !a.jwtGone {
			keys[a.jwtKeyID] = a.jwtKey.Public()
		}
	}
	return jwtbundle.FromJWTAuthorities(ca.td, keys)
}

// x509Signer returns the signing authority and records that it signs an
// X.509-SVID valid until notAfter; jwtSigner likewise for a JWT-SVID.
func (ca *CA) x509Signer(notAfter time.Time) *authority {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if notAfter.After(ca.active.x509Until) {
		ca.active.x509Until = notAfter
	}
	return ca.active
}

func (ca *CA) jwtSigner(notAfter time.Time) *authority {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if notAfter.After(ca.active.jwtUntil) {
		ca.active.jwtUntil = notAfter
	}
	return ca.active
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
	a := ca.x509Signer(notAfter)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, key.Public(), a.key)
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
	now := time.Now()
	a := ca.jwtSigner(now.Add(ttl))
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: a.jwtKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", a.jwtKeyID),
	)
	if err != nil {
		return "", fmt.Errorf("svidtest: JWT signer: %w", err)
	}
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
