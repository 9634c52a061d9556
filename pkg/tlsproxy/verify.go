package tlsproxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/pkg/mtls"
)

// Cause classifies why a connection was rejected. Every cause has its own
// metric label and appears in the rejection log line.
type Cause string

// Rejection causes.
const (
	CauseNoCert         Cause = "no_cert"         // the peer presented no certificate
	CauseUnknownCA      Cause = "unknown_ca"      // not signed by any trusted bundle (foreign trust domain, rotated-away CA, self-signed)
	CauseUnauthorizedID Cause = "unauthorized_id" // valid SVID, but the Authorizer (Allow) refuses its SPIFFE ID
	CauseExpired        Cause = "expired"         // chain is trusted but a certificate is expired or not yet valid
	CauseNotTLS         Cause = "not_tls"         // the first bytes were not a TLS record (plaintext, garbage)
	CauseTimeout        Cause = "timeout"         // the handshake did not finish within HandshakeTimeout
	CausePeerRejected   Cause = "peer_rejected"   // the peer refused our certificate (its TLS alert is logged): it does not trust our CA yet, or does not allow our ID
	CauseOther          Cause = "other"           // anything else: protocol errors, peer aborts, invalid SVIDs
)

// allCauses lists every Cause, in the order metrics use.
var allCauses = [...]Cause{CauseNoCert, CauseUnknownCA, CauseUnauthorizedID, CauseExpired, CauseNotTLS, CauseTimeout, CausePeerRejected, CauseOther}

func causeIndex(c Cause) int {
	for i, x := range allCauses {
		if x == c {
			return i
		}
	}
	return len(allCauses) - 1
}

// peerError is what verification returns so that the handshake error can
// be traced back to a cause and the peer's claimed identity.
type peerError struct {
	cause Cause
	id    spiffeid.ID // zero if the peer presented no parseable SPIFFE ID
	err   error
}

func (e *peerError) Error() string { return fmt.Sprintf("%s: %v", e.cause, e.err) }
func (e *peerError) Unwrap() error { return e.err }

// verifier checks a peer's chain against the current bundles and the
// authorizer. It runs from VerifyConnection, which crypto/tls calls on
// full and resumed handshakes alike; VerifyPeerCertificate (what go-spiffe
// installs) is skipped on resumption, which would let a session outlive a
// bundle change or an allow-list change.
type verifier struct {
	bundles x509bundle.Source
	authz   mtls.Authorizer
	cache   chainCache
}

func (v *verifier) verifyConnection(cs tls.ConnectionState) error {
	_, err := v.verify(cs.PeerCertificates, time.Now())
	return err
}

func (v *verifier) verify(certs []*x509.Certificate, now time.Time) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, &peerError{cause: CauseNoCert, err: errors.New("peer presented no certificate")}
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return spiffeid.ID{}, &peerError{cause: CauseOther, err: fmt.Errorf("not an X.509-SVID: %w", err)}
	}
	bundle, err := v.bundles.GetX509BundleForTrustDomain(id.TrustDomain())
	if err != nil {
		return id, &peerError{cause: CauseUnknownCA, id: id, err: fmt.Errorf("no bundle for trust domain %q: %w", id.TrustDomain(), err)}
	}
	chains, ok := v.cache.get(certs, bundle, now)
	if !ok {
		var err error
		_, chains, err = x509svid.Verify(certs, v.bundles, x509svid.WithTime(now))
		if err != nil {
			return id, &peerError{cause: classifyVerifyError(certs, v.bundles, now, err), id: id, err: err}
		}
		v.cache.put(certs, bundle, chains)
	}
	if err := v.authz.Authorize(id, chains); err != nil {
		return id, &peerError{cause: CauseUnauthorizedID, id: id, err: err}
	}
	return id, nil
}

// chainCache remembers chains that verified, so that a peer reconnecting
// with the same certificates (every resumed session, every connection of
// our own client proxy) costs a map lookup instead of a signature check.
// An entry is used only with the bundle it was verified against (same
// pointer, or equal roots) and while every certificate in the chain is
// within its validity period, so the answer is the one x509svid.Verify
// would give.
type chainCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]chainEntry
}

type chainEntry struct {
	bundle    *x509bundle.Bundle
	chains    [][]*x509.Certificate
	notBefore time.Time
	notAfter  time.Time
}

const chainCacheSize = 1024

func chainKey(certs []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (c *chainCache) get(certs []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) ([][]*x509.Certificate, bool) {
	k := chainKey(certs)
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	if !ok || (e.bundle != bundle && !e.bundle.Equal(bundle)) || now.Before(e.notBefore) || now.After(e.notAfter) {
		return nil, false
	}
	return e.chains, true
}

func (c *chainCache) put(certs []*x509.Certificate, bundle *x509bundle.Bundle, chains [][]*x509.Certificate) {
	e := chainEntry{bundle: bundle, chains: chains}
	for _, chain := range chains {
		for _, cert := range chain {
			if e.notBefore.IsZero() || cert.NotBefore.After(e.notBefore) {
				e.notBefore = cert.NotBefore
			}
			if e.notAfter.IsZero() || cert.NotAfter.Before(e.notAfter) {
				e.notAfter = cert.NotAfter
			}
		}
	}
	k := chainKey(certs)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= chainCacheSize {
		// Rotations make old entries useless; starting over is simpler
		// than an LRU and bounds memory.
		c.m = make(map[[sha256.Size]byte]chainEntry, 64)
	}
	c.m[k] = e
}

// classifyVerifyError tells an expired-but-trusted chain from an untrusted
// one. crypto/x509 reports the leaf's validity period before it looks for
// a root, so an expired certificate from a foreign CA would otherwise be
// counted as "expired" rather than "unknown_ca".
func classifyVerifyError(certs []*x509.Certificate, bundles x509bundle.Source, now time.Time, err error) Cause {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
		// Would the chain verify at a moment when every certificate in it is valid?
		at := certs[0].NotAfter.Add(-time.Second)
		for _, c := range certs {
			if c.NotAfter.Before(at) {
				at = c.NotAfter.Add(-time.Second)
			}
		}
		if _, _, err2 := x509svid.Verify(certs, bundles, x509svid.WithTime(at)); err2 == nil {
			return CauseExpired
		} else if errors.As(err2, new(x509.UnknownAuthorityError)) {
			return CauseUnknownCA
		}
		return CauseExpired
	}
	if errors.As(err, new(x509.UnknownAuthorityError)) {
		return CauseUnknownCA
	}
	return CauseOther
}

// classifyHandshakeError maps a failed handshake to a cause and the
// peer's claimed ID, if verification got far enough to know it.
func classifyHandshakeError(err error) (Cause, spiffeid.ID) {
	var pe *peerError
	if errors.As(err, &pe) {
		return pe.cause, pe.id
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return CauseNotTLS, spiffeid.ID{}
	}
	if isRemoteAlert(err) {
		return CausePeerRejected, spiffeid.ID{}
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return CauseTimeout, spiffeid.ID{}
	}
	return CauseOther, spiffeid.ID{}
}

// serialTag identifies the SVID we present right now. Sessions are bound
// to it so that a rotation forces one full handshake: after it, new
// connections present the new certificate instead of riding a ticket
// issued under the old one.
func serialTag(svids x509svid.Source) []byte {
	s, err := svids.GetX509SVID()
	if err != nil || len(s.Certificates) == 0 {
		return nil
	}
	return append([]byte(sessionTagPrefix), s.Certificates[0].SerialNumber.Bytes()...)
}

const sessionTagPrefix = "ia-svid:"

// bindServerSessions makes tickets issued by cfg valid only while the
// proxy presents the same SVID.
func bindServerSessions(cfg *tls.Config, svids x509svid.Source) {
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if tag := serialTag(svids); tag != nil {
			ss.Extra = append(ss.Extra, tag)
		}
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return nil, nil //nolint:nilerr // an undecryptable ticket means a full handshake, not a failure
		}
		tag := serialTag(svids)
		for _, e := range ss.Extra {
			if tag != nil && bytes.Equal(e, tag) {
				return ss, nil
			}
		}
		return nil, nil
	}
}

// boundSessionCache keys client sessions by our current SVID, so a
// rotation on our side starts fresh sessions that carry the new
// certificate, and sessions whose server certificate expired are never
// offered.
type boundSessionCache struct {
	inner tls.ClientSessionCache
	svids x509svid.Source
}

func (c boundSessionCache) key(k string) (string, bool) {
	tag := serialTag(c.svids)
	if tag == nil {
		return "", false
	}
	return k + "|" + string(tag), true
}

func (c boundSessionCache) Get(k string) (*tls.ClientSessionState, bool) {
	bk, ok := c.key(k)
	if !ok {
		return nil, false
	}
	return c.inner.Get(bk)
}

func (c boundSessionCache) Put(k string, cs *tls.ClientSessionState) {
	if bk, ok := c.key(k); ok {
		c.inner.Put(bk, cs)
	}
}

// isRemoteAlert reports whether err is a TLS alert the peer sent
// (crypto/tls returns those as a *net.OpError with Op "remote error").
// During the handshake that means it refused our certificate: Go sends
// bad_certificate whatever its VerifyConnection found, other stacks
// unknown_ca or access_denied.
func isRemoteAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}
