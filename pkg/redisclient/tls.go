package redisclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

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
// A handshake refused by serverAuthz fails with an error that the Client
// tells from an untrusted chain (see TLSError).
func NewTLSConfig(svids x509svid.Source, bundles x509bundle.Source, serverAuthz tlsconfig.Authorizer) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svids, bundles, markAuthorizer(serverAuthz))
	c.VerifyPeerCertificate = markChainErrors(c.VerifyPeerCertificate)
	c.MinVersion = tls.VersionTLS12
	return c
}

// ServerAuthorizer builds the authorizer for the Redis server's SVID from an
// exact SPIFFE ID or, when id is empty, a trust domain. An id without a path
// ("spiffe://example.org") also means "any member of that trust domain". Both empty is an
// error: an mTLS client that accepts any server would defeat the transition.
// A refusal names the ID the server presented and what the setting wants
// ("server presented spiffe://example.org/cache, server_id wants
// spiffe://example.org/redis"); go-spiffe's own error, which names only the
// first, stays in the chain.
func ServerAuthorizer(id, trustDomain string) (tlsconfig.Authorizer, error) {
	switch {
	case id != "":
		sid, err := spiffeid.FromString(id)
		if err != nil {
			return nil, fmt.Errorf("server_id %q: %w", id, err)
		}
		if sid.Path() == "" {
			return namedAuthorizer(tlsconfig.AuthorizeMemberOf(sid.TrustDomain()), "server_id wants a member of "+sid.TrustDomain().Name()), nil
		}
		return namedAuthorizer(tlsconfig.AuthorizeID(sid), "server_id wants "+sid.String()), nil
	case trustDomain != "":
		td, err := spiffeid.TrustDomainFromString(trustDomain)
		if err != nil {
			return nil, fmt.Errorf("server_trust_domain %q: %w", trustDomain, err)
		}
		return namedAuthorizer(tlsconfig.AuthorizeMemberOf(td), "server_trust_domain wants a member of "+td.Name()), nil
	}
	return nil, fmt.Errorf("server_id or server_trust_domain is required to authorize the Redis server")
}

// namedAuthorizer makes authz's refusal say what was wanted as well as
// what was presented.
func namedAuthorizer(authz tlsconfig.Authorizer, want string) tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := authz(id, chains); err != nil {
			return &unwantedIDError{presented: id, want: want, err: err}
		}
		return nil
	}
}

// unwantedIDError replaces go-spiffe's text (`unexpected ID "..."`, which
// does not say what was expected) and keeps its error in the chain.
type unwantedIDError struct {
	presented spiffeid.ID
	want      string
	err       error
}

func (e *unwantedIDError) Error() string {
	return fmt.Sprintf("server presented %s, %s", e.presented, e.want)
}

func (e *unwantedIDError) Unwrap() error { return e.err }

// TLSPeer is what PingTLS learned about the server.
type TLSPeer struct {
	SpiffeID string    `json:"spiffe_id"`
	Serial   string    `json:"serial"` // hex
	NotAfter time.Time `json:"not_after"`
}

// PingTLS checks the mTLS path to a Redis server: it dials addr with the SVID from svids, verifies the server against
// bundles and authz, authenticates with passwordFile when given (a server
// without a password is fine) and PINGs. It reports the server's SVID.
func PingTLS(ctx context.Context, addr string, svids x509svid.Source, bundles x509bundle.Source, authz tlsconfig.Authorizer, passwordFile string) (TLSPeer, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: NewTLSConfig(svids, bundles, authz)}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return TLSPeer{}, fmt.Errorf("TLS %s: %w", addr, err)
	}
	defer func() { _ = c.Close() }()
	if passwordFile != "" {
		pw, err := readPasswordFile(passwordFile)
		if err != nil {
			return TLSPeer{}, err
		}
		if _, err := roundTrip(ctx, c, 5*time.Second, "AUTH", "default", pw); err != nil && !noPasswordConfigured(err) {
			return TLSPeer{}, fmt.Errorf("TLS %s: AUTH: %w", addr, err)
		}
	}
	reply, err := roundTrip(ctx, c, 5*time.Second, "PING")
	if err != nil {
		return TLSPeer{}, fmt.Errorf("TLS %s: PING: %w", addr, err)
	}
	if reply != "PONG" {
		return TLSPeer{}, fmt.Errorf("TLS %s: PING answered %q", addr, reply)
	}
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return TLSPeer{}, fmt.Errorf("TLS %s: no server certificate", addr)
	}
	p := TLSPeer{Serial: certs[0].SerialNumber.Text(16), NotAfter: certs[0].NotAfter}
	if len(certs[0].URIs) > 0 {
		p.SpiffeID = certs[0].URIs[0].String()
	}
	return p, nil
}
