package mtls

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// Authorizer decides whether a peer whose X.509-SVID has already been
// verified against the trust bundles may connect. It has go-spiffe's
// tlsconfig.Authorizer signature as a method, plus String: a short
// description of the policy for logs and status, which also identifies it
// (Fingerprint hashes it), so two authorizers with the same String must
// decide alike unless they are a Policy.
//
// Authorize must be safe for concurrent use; it runs on every handshake
// (and on established peers when a proxy's authorizer changes).
type Authorizer interface {
	Authorize(id spiffeid.ID, verifiedChains [][]*x509.Certificate) error
	String() string
}

// Policy is an Authorizer whose decisions depend on content its String
// does not spell out, such as the rules of a policy file: String names the
// file, Content returns its bytes as loaded. Fingerprint hashes Content
// too, so an edited file is a change although its name is not.
type Policy interface {
	Authorizer
	Content() []byte
}

// Describe makes an Authorizer of a go-spiffe authorizer (such as
// tlsconfig.AuthorizeMemberOf) and a description of what it accepts.
// The description is its identity for Fingerprint: two authorizers made
// with the same description are treated as the same policy.
func Describe(description string, authorize tlsconfig.Authorizer) Authorizer {
	return described{desc: description, f: authorize}
}

type described struct {
	desc string
	f    tlsconfig.Authorizer
}

func (d described) Authorize(id spiffeid.ID, chains [][]*x509.Certificate) error {
	if d.f == nil {
		return fmt.Errorf("authorizer %q: no function: nobody is allowed", d.desc)
	}
	return d.f(id, chains)
}

func (d described) String() string { return d.desc }

// errNoAuthorizer is what a nil Authorizer answers: fail closed.
var errNoAuthorizer = errors.New("no authorizer configured: nobody is allowed")

// Adapt returns a as a go-spiffe tlsconfig.Authorizer, for
// tlsconfig.MTLSServerConfig and the rest of go-spiffe. A nil a refuses
// every peer.
func Adapt(a Authorizer) tlsconfig.Authorizer {
	if a == nil {
		return func(spiffeid.ID, [][]*x509.Certificate) error { return errNoAuthorizer }
	}
	return a.Authorize
}

// authorize runs a, refusing everyone when a is nil.
func authorize(a Authorizer, id spiffeid.ID, chains [][]*x509.Certificate) error {
	if a == nil {
		return errNoAuthorizer
	}
	return a.Authorize(id, chains)
}

// Fingerprint identifies what a decides: "sha256:" and the hex SHA-256 of
// its String and, for a Policy, its Content. Equal fingerprints mean the
// same policy, so a reload that sees a new fingerprint knows the policy
// changed (an edited allow list, an edited policy file). nil has the
// fingerprint "".
func Fingerprint(a Authorizer) string {
	if a == nil {
		return ""
	}
	h := sha256.New()
	field := func(b []byte) {
		// Length-prefixed, so that no String/Content split collides with another.
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	field([]byte(a.String()))
	if p, ok := a.(Policy); ok {
		field(p.Content())
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
