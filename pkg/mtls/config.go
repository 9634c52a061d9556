package mtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ServerConfig returns a TLS config for a server that terminates SPIFFE
// mTLS itself: at every handshake it presents the SVID svids returns
// then, requires a client certificate, verifies it against the bundles
// bundles returns then (own and federated trust domains) and asks authz
// about the client's SPIFFE ID. A rotation of either source applies to the
// next handshake without rebuilding the config.
//
// It is go-spiffe's tlsconfig.MTLSServerConfig with verification moved to
// VerifyConnection, which crypto/tls also runs on resumed sessions (the
// VerifyPeerCertificate go-spiffe installs is skipped on resumption), so a
// resumed session is judged by today's bundles and authz, not by those of
// the handshake that issued its ticket. A nil authz refuses everyone.
func ServerConfig(svids x509svid.Source, bundles x509bundle.Source, authz Authorizer) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svids, bundles, Adapt(authz))
	c.VerifyPeerCertificate = nil
	c.VerifyConnection = verifyConnection(bundles, authz)
	c.MinVersion = tls.VersionTLS12
	return c
}

// ClientConfig returns a TLS config for a client that originates SPIFFE
// mTLS: at every handshake it presents the SVID svids returns then,
// verifies the server's X.509-SVID against bundles and asks authz about
// the server's SPIFFE ID. The server is identified by SPIFFE ID, not host
// name (crypto/tls's host name check is off; ServerName is only sent as
// SNI). Verification runs in VerifyConnection, as in ServerConfig. A nil
// authz refuses every server.
func ClientConfig(svids x509svid.Source, bundles x509bundle.Source, authz Authorizer) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svids, bundles, Adapt(authz))
	c.VerifyPeerCertificate = nil
	c.VerifyConnection = verifyConnection(bundles, authz)
	c.MinVersion = tls.VersionTLS12
	return c
}

// Listen listens on network and address (as net.Listen) and returns a
// listener whose connections are served with ServerConfig. The handshake
// runs on a connection's first Read or Write, or its HandshakeContext.
func Listen(network, address string, svids x509svid.Source, bundles x509bundle.Source, authz Authorizer) (net.Listener, error) {
	ln, err := tls.Listen(network, address, ServerConfig(svids, bundles, authz))
	if err != nil {
		return nil, fmt.Errorf("mtls: listen on %s %s: %w", network, address, err)
	}
	return ln, nil
}

// Dial connects to address (as net.Dialer.DialContext) and completes an
// mTLS handshake with ClientConfig before returning, so an unauthorized
// server is an error here.
func Dial(ctx context.Context, network, address string, svids x509svid.Source, bundles x509bundle.Source, authz Authorizer) (*tls.Conn, error) {
	d := tls.Dialer{Config: ClientConfig(svids, bundles, authz)}
	c, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("mtls: dial %s %s: %w", network, address, err)
	}
	return c.(*tls.Conn), nil
}

// PeerID returns the SPIFFE ID of the peer of a connection that
// ServerConfig or ClientConfig verified: in a net/http handler,
// PeerID(r.TLS). On a connection another config accepted it reads the ID
// without verifying anything.
func PeerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if cs == nil {
		return spiffeid.ID{}, errors.New("mtls: peer ID: not a TLS connection")
	}
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("mtls: peer ID: the peer presented no certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("mtls: peer ID: %w", err)
	}
	return id, nil
}

func verifyConnection(bundles x509bundle.Source, authz Authorizer) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		_, err := verifyPeer(cs.PeerCertificates, bundles, authz)
		return err
	}
}

// verifyPeer checks a peer's chain against the current bundles, then its
// SPIFFE ID against authz.
func verifyPeer(certs []*x509.Certificate, bundles x509bundle.Source, authz Authorizer) (spiffeid.ID, error) {
	if len(certs) == 0 {
		return spiffeid.ID{}, errors.New("mtls: the peer presented no certificate")
	}
	id, chains, err := x509svid.Verify(certs, bundles)
	if err != nil {
		return id, fmt.Errorf("mtls: verify peer X.509-SVID: %w", err)
	}
	if err := authorize(authz, id, chains); err != nil {
		return id, fmt.Errorf("mtls: authorize peer %s: %w", id, err)
	}
	return id, nil
}
