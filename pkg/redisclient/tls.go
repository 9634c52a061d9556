package redisclient

import (
	"crypto/tls"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// NewTLSConfig returns a client tls.Config for Redis: the client certificate
// is taken from svids on every handshake (GetClientCertificate), so a rotated
// SVID is used by the next connection without any reconnect logic; the
// server chain is verified against bundles and the server is authorized by
// SPIFFE ID with serverAuthz. Hostnames are not checked: SVIDs carry a URI
// SAN, not a DNS name, and the SPIFFE ID is the identity that matters.
func NewTLSConfig(svids x509svid.Source, bundles x509bundle.Source, serverAuthz tlsconfig.Authorizer) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svids, bundles, serverAuthz)
	c.MinVersion = tls.VersionTLS12
	return c
}

// ServerAuthorizer builds the authorizer for the Redis server's SVID from an
// exact SPIFFE ID or, when id is empty, a trust domain. An id without a path
// ("spiffe://example.org") also means "any member of that trust domain". Both empty is an
// error: an mTLS client that accepts any server would defeat the transition.
func ServerAuthorizer(id, trustDomain string) (tlsconfig.Authorizer, error) {
	switch {
	case id != "":
		sid, err := spiffeid.FromString(id)
		if err != nil {
			return nil, fmt.Errorf("server_id %q: %w", id, err)
		}
		if sid.Path() == "" {
			return tlsconfig.AuthorizeMemberOf(sid.TrustDomain()), nil
		}
		return tlsconfig.AuthorizeID(sid), nil
	case trustDomain != "":
		td, err := spiffeid.TrustDomainFromString(trustDomain)
		if err != nil {
			return nil, fmt.Errorf("server_trust_domain %q: %w", trustDomain, err)
		}
		return tlsconfig.AuthorizeMemberOf(td), nil
	}
	return nil, fmt.Errorf("server_id or server_trust_domain is required to authorize the Redis server")
}
