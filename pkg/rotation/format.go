package rotation

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
)

// Format is one way of writing an output's identity to files: the PEM
// trio (*PEM), a combined key+chain (*Combined), the SPIFFE Filesystem
// Delivery layout (*FSDelivery), a directory of bundles (*BundleDir),
// PKCS#12 stores (*PKCS12), JWT-SVIDs and JWKS (*JWT), or your own. An
// Output writes the files of all its Formats as one set.
//
// A Format value may keep state between builds (the PKCS#12 encodings):
// it belongs to one Output, and the Output calls it from one goroutine at
// a time. Use pointers.
type Format interface {
	// Name names the format in messages: "pem", "pkcs12".
	Name() string
	// Files lists the base names the format writes in the output's
	// directory, each with the field that names it (for messages). A
	// format whose names follow the material (one file per trust domain)
	// lists the fixed ones: the subdirectory, the credential bundle.
	Files() []FormatFile
	// HoldsKey reports whether a file carries the private key: then the
	// SVID is validated against the bundles before anything is written,
	// and Verify has a certificate to compare.
	HoldsKey() bool
	// Check reports the format's own problems (modes, settings) without
	// touching the file system, each as a *FieldError, joined. The names
	// in Files are checked by Output.Validate.
	Check(c FormatCheck) error
	// Build returns the format's files for in. An error keeps the last
	// good files; one wrapping ErrNotReady means "wait for the next push",
	// not a failure.
	Build(in FormatInput) ([]atomicdir.File, error)
}

// FormatFile is one base name a Format owns, and the configuration key
// that names it ("cert_file", "jwt[0].file").
type FormatFile struct {
	Field, Name string
}

// FormatCheck is what a Format's Check knows of its Output.
type FormatCheck struct {
	// UnsafeWorldReadableKey is Output.UnsafeWorldReadableKey (CheckMode).
	UnsafeWorldReadableKey bool
}

// CheckMode reports a mode m that CheckMode refuses as a *FieldError on
// field; nil when m is fine. secret: the file holds a key or token.
func (c FormatCheck) CheckMode(field string, m fs.FileMode, secret bool) error {
	if err := CheckMode(m, secret, c.UnsafeWorldReadableKey); err != nil {
		return &FieldError{Field: field, Err: err}
	}
	return nil
}

// TokenFormat is a Format that writes JWT-SVIDs: before each build the
// Output fetches one per entry of JWTFiles (and refreshes it at half its
// lifetime), and Build reads them with FormatInput.Token.
type TokenFormat interface {
	Format
	JWTFiles() []JWTFile
}

// Warner is a Format with settings that are legal but probably
// unintended; Output.Warnings reports them.
type Warner interface {
	Warnings() []error
}

// ErrNotReady wraps the errors of a build that waits for material the
// Workload API has not sent yet (the next push brings it): not a failure,
// nothing to retry.
var ErrNotReady = errNotReady

// FormatInput is what one Format's Build reads. The SVID is picked (and,
// when any format of the output holds the key, validated) once per build,
// on the first call of SVID, and shared by every format of the output.
type FormatInput struct {
	// X509 is the Workload API's X.509 context at the start of the pass;
	// nil before the first one arrived.
	X509 *workloadapi.X509Context
	// JWTBundles as last received; nil or empty before the first.
	JWTBundles *jwtbundle.Set
	// Now is the time of the pass.
	Now time.Time
	// Dir is the output's directory (absolute).
	Dir string
	// IncludeFederated is Output.IncludeFederated: federated trust
	// domains' roots (and JWT keys) go into bundles too.
	IncludeFederated bool
	// Previous is the output's set as last written by this Manager (all
	// formats' files), nil before the first write.
	Previous []atomicdir.File

	pass   *buildPass
	tokens []tokenRef // a TokenFormat's tokens, in Tokens order
}

// SVID is the output's X.509-SVID for this pass: picked by the output's
// Selector and, when any of its formats holds the key, validated.
func (in FormatInput) SVID() (*x509svid.SVID, error) {
	if in.pass == nil {
		return nil, errors.New("no build pass")
	}
	return in.pass.svid()
}

// Token is the JWT-SVID for entry i of the format's JWTFiles. A failed
// refresh that left a still-valid token returns that token (the failure
// shows in State); no token yet wraps ErrNotReady.
func (in FormatInput) Token(i int) (*jwtsvid.SVID, error) {
	if i < 0 || i >= len(in.tokens) {
		return nil, fmt.Errorf("token %d: the format asked for %d", i, len(in.tokens))
	}
	return in.pass.token(in.tokens[i])
}

// TrustDomain is the trust domain of the output's identity, from
// whatever names it: the picked SVID, a JWT-SVID, the selector, or the
// Workload API's default SVID.
func (in FormatInput) TrustDomain() (spiffeid.TrustDomain, error) {
	if in.pass == nil {
		return spiffeid.TrustDomain{}, errors.New("no build pass")
	}
	return in.pass.trustDomain()
}

// orMode is m, or def when m is 0.
func orMode(m, def fs.FileMode) fs.FileMode {
	if m == 0 {
		return def
	}
	return m
}

// names is the list of non-empty names, each with its field.
func names(pairs ...string) []FormatFile {
	var out []FormatFile
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			out = append(out, FormatFile{Field: pairs[i], Name: pairs[i+1]})
		}
	}
	return out
}
