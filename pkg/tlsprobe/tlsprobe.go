package tlsprobe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// DefaultTimeout bounds one probe (dial and handshake).
const DefaultTimeout = 5 * time.Second

// Prober probes one endpoint. It holds no connection between probes and is
// safe for concurrent use.
type Prober struct {
	address string
	network string
	addr    string
	config
}

// Option configures New (go-spiffe style functional options).
type Option func(*config)

type config struct {
	serverName string
	timeout    time.Duration
}

// WithServerName sets the SNI sent in the handshake (default none), for
// servers that pick their certificate by name.
func WithServerName(name string) Option {
	return func(c *config) { c.serverName = name }
}

// WithTimeout bounds one probe (default DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// ParseAddress splits "tcp://host:port" or "unix:///path" into a network
// and an address for net.Dial. The error names what is wrong.
func ParseAddress(address string) (network, addr string, err error) {
	scheme, rest, ok := strings.Cut(address, "://")
	if !ok {
		return "", "", fmt.Errorf("address %q: want tcp://host:port or unix:///path", address)
	}
	switch scheme {
	case "tcp":
		host, port, err := net.SplitHostPort(rest)
		if err != nil || host == "" || port == "" {
			return "", "", fmt.Errorf("address %q: want tcp://host:port", address)
		}
		return "tcp", rest, nil
	case "unix":
		if !strings.HasPrefix(rest, "/") {
			return "", "", fmt.Errorf("address %q: unix socket path must be absolute (unix:///path)", address)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("address %q: scheme %q: want tcp or unix", address, scheme)
}

// New returns a Prober for address (see ParseAddress).
func New(address string, opts ...Option) (*Prober, error) {
	network, addr, err := ParseAddress(address)
	if err != nil {
		return nil, err
	}
	p := &Prober{address: address, network: network, addr: addr, config: config{timeout: DefaultTimeout}}
	for _, o := range opts {
		if o != nil {
			o(&p.config)
		}
	}
	return p, nil
}

// Address is the address as given to New, for logs and status.
func (p *Prober) Address() string { return p.address }

// Served connects, completes a TLS handshake and returns the leaf
// certificate the server presented. clientCert (may be nil) is presented
// only if the server requests a client certificate, as a Redis with
// tls-auth-clients yes does. With TLS 1.3 the server's certificate is
// known before the server judges ours, so a server that then rejects the
// client certificate still tells what it serves.
func (p *Prober) Served(ctx context.Context, clientCert *tls.Certificate) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, p.network, p.addr)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", p.address, err)
	}
	defer func() { _ = raw.Close() }()
	var peer *x509.Certificate
	cfg := &tls.Config{
		ServerName: p.serverName,
		MinVersion: tls.VersionTLS12,
		// Chain verification is deliberately off: the caller compares the
		// served certificate with the exact one it wrote.
		InsecureSkipVerify: true, //nolint:gosec // see above and the package doc
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				peer = cs.PeerCertificates[0]
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if clientCert == nil {
				return &tls.Certificate{}, nil
			}
			return clientCert, nil
		},
	}
	conn := tls.Client(raw, cfg)
	herr := conn.HandshakeContext(ctx)
	if peer != nil {
		// The server's certificate was seen: what came after (a rejected
		// client certificate, a closed connection) does not change what
		// it serves.
		return peer, nil
	}
	if herr == nil {
		herr = errors.New("server sent no certificate")
	}
	return nil, fmt.Errorf("probe %s: TLS handshake: %w", p.address, herr)
}
