package redisclient

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Causes of a failed TLS attempt: the cause label of
// identity_agent_redis_client_tls_failures_total and TLSError.Cause.
const (
	// CauseUnreachable: the TLS port did not answer: connection refused,
	// a timeout, or a reset before the server sent a single byte. The only
	// cause on which dual_auth falls back to the password.
	CauseUnreachable = "unreachable"
	// CauseServerID: the server's chain verified but its SPIFFE ID is not
	// the authorized one.
	CauseServerID = "server_id"
	// CauseUntrustedChain: the server's certificate is not an X.509-SVID
	// that verifies to the bundle of its trust domain.
	CauseUntrustedChain = "untrusted_chain"
	// CauseHandshake: anything else once the server answered: a protocol
	// error or alert, a non-TLS speaker on the TLS port, or the server
	// refusing our certificate (TLS 1.3 reports that after the handshake).
	CauseHandshake = "handshake"
)

// TLSError is a failed attempt on the TLS port. When Cause is not
// CauseUnreachable the TLS port answered and authentication failed: that
// is an attack signal (someone may be between the client and Redis), not
// an outage, and dual_auth returns the error rather than sending the
// password to the plaintext port.
type TLSError struct {
	Addr  string
	Cause string
	Err   error
}

func (e *TLSError) Error() string {
	if e.Cause == CauseUnreachable {
		return fmt.Sprintf("redis TLS %s: %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("redis TLS %s: %s: %v", e.Addr, e.Cause, e.Err)
}

func (e *TLSError) Unwrap() error { return e.Err }

// Unreachable reports whether the TLS port did not answer at all.
func (e *TLSError) Unreachable() bool { return e.Cause == CauseUnreachable }

// serverIDError marks the authorizer's refusal so it can be told from a
// chain that does not verify (both fail inside VerifyPeerCertificate).
type serverIDError struct {
	id  spiffeid.ID
	err error
}

func (e *serverIDError) Error() string { return e.err.Error() }
func (e *serverIDError) Unwrap() error { return e.err }

type chainError struct{ err error }

func (e *chainError) Error() string { return e.err.Error() }
func (e *chainError) Unwrap() error { return e.err }

func markAuthorizer(authz tlsconfig.Authorizer) tlsconfig.Authorizer {
	return func(id spiffeid.ID, chains [][]*x509.Certificate) error {
		if err := authz(id, chains); err != nil {
			return &serverIDError{id: id, err: err}
		}
		return nil
	}
}

func markChainErrors(verify func([][]byte, [][]*x509.Certificate) error) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		var ide *serverIDError
		if err == nil || errors.As(err, &ide) {
			return err
		}
		return &chainError{err: err}
	}
}

// handshakeCause classifies a failed handshake. serverSpoke is false when
// not one byte came back: then no certificate was judged and the port
// simply did not answer (reset, EOF or timeout right after accept).
func handshakeCause(err error, serverSpoke bool) string {
	var ide *serverIDError
	var ce *chainError
	switch {
	case errors.As(err, &ide):
		return CauseServerID
	case errors.As(err, &ce):
		return CauseUntrustedChain
	case !serverSpoke:
		return CauseUnreachable
	}
	return CauseHandshake
}

// readCounter tells whether the server sent anything during the handshake.
type readCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *readCounter) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}
