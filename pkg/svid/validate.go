package svid

import (
	"crypto"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Validate checks an X.509-SVID before it is handed to a service: the
// private key belongs to the leaf certificate, now lies within the leaf's
// validity period, and the chain verifies against the bundle of the SVID's
// trust domain taken from bundles. The error says which check failed.
//
// Material that fails here must not be written: a service restarted onto a
// key that does not match its certificate, or onto an expired one, stops
// serving, while the last good files would have kept it up.
func Validate(s *x509svid.SVID, bundles x509bundle.Source, now time.Time) error {
	if s == nil || len(s.Certificates) == 0 {
		return errors.New("validate X.509-SVID: no certificates")
	}
	leaf := s.Certificates[0]
	if s.PrivateKey == nil {
		return fmt.Errorf("validate X.509-SVID %s: no private key", s.ID)
	}
	pub, ok := s.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return fmt.Errorf("validate X.509-SVID %s: unsupported private key type %T", s.ID, s.PrivateKey)
	}
	if !pub.Equal(leaf.PublicKey) {
		return fmt.Errorf("validate X.509-SVID %s: private key does not match the leaf certificate's public key (serial %s)", s.ID, leaf.SerialNumber.Text(16))
	}
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("validate X.509-SVID %s: not valid yet: NotBefore %s is after now %s", s.ID, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("validate X.509-SVID %s: expired: NotAfter %s is before now %s", s.ID, leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if bundles == nil {
		return fmt.Errorf("validate X.509-SVID %s: no bundle source to verify the chain against", s.ID)
	}
	id, _, err := x509svid.Verify(s.Certificates, bundles, x509svid.WithTime(now))
	if err != nil {
		return fmt.Errorf("validate X.509-SVID %s: chain does not verify against the bundle for trust domain %q: %w", s.ID, s.ID.TrustDomain(), err)
	}
	if !s.ID.IsZero() && id != s.ID {
		return fmt.Errorf("validate X.509-SVID %s: leaf certificate carries SPIFFE ID %s", s.ID, id)
	}
	return nil
}
