package rotation

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// errNotReady: there is no material yet; the next push will bring it, so
// this is not a failure to retry.
var errNotReady = errors.New("waiting for the Workload API")

// buildInput is everything one build reads: the Source's material at the
// start of the pass and the JWT-SVIDs fetched for it.
type buildInput struct {
	x509       *workloadapi.X509Context
	jwtBundles *jwtbundle.Set
	tokens     []tokenState // one per Output.jwtFiles entry, already refreshed
	now        time.Time
	previous   []atomicdir.File // the set as last written, nil before
}

// material is what one build produced besides the files.
type material struct {
	x509     *workloadapi.X509Context
	svid     *x509svid.SVID
	jwtErr   error // a refresh failed but a still-valid cached token was used
	spiffeID string
}

// build computes an output's files from in: each format's files, in the
// order of o.Formats. It does no network and no clock; everything it
// reads is in o and in, and in the formats' own state (a format may read
// a file of its own, like the PKCS#12 password).
func build(o Output, in buildInput) ([]atomicdir.File, material, error) {
	p := &buildPass{sel: o.Selector, x509: in.x509, now: in.now, validate: o.holdsKey(), tokens: in.tokens}
	var files []atomicdir.File
	next := 0
	for _, f := range o.Formats {
		fin := FormatInput{
			X509: in.x509, JWTBundles: in.jwtBundles, Now: in.now, Dir: o.Dir,
			IncludeFederated: o.IncludeFederated, Previous: in.previous, pass: p,
		}
		if tf, ok := f.(TokenFormat); ok {
			for _, jf := range tf.JWTFiles() {
				fin.tokens = append(fin.tokens, tokenRef{idx: next, file: jf.File})
				next++
			}
		}
		more, err := f.Build(fin)
		if err != nil {
			return nil, p.material(), err
		}
		files = append(files, more...)
	}
	return files, p.material(), nil
}

// tokenRef points a TokenFormat's token at the output's cached one.
type tokenRef struct {
	idx  int
	file string
}

// buildPass is the state of one build shared by the output's formats: the
// SVID picked once, the identity found, the JWT refreshes that failed.
type buildPass struct {
	sel      svid.Selector
	x509     *workloadapi.X509Context
	now      time.Time
	validate bool
	tokens   []tokenState

	picked   *x509svid.SVID
	pickErr  error
	pickDone bool
	spiffeID string
	jwtErr   error
}

func (p *buildPass) material() material {
	m := material{x509: p.x509, jwtErr: p.jwtErr, spiffeID: p.spiffeID}
	if p.pickErr == nil {
		m.svid = p.picked
	}
	return m
}

func (p *buildPass) svid() (*x509svid.SVID, error) {
	if !p.pickDone {
		p.pickDone = true
		p.picked, p.pickErr = p.pick()
	}
	return p.picked, p.pickErr
}

func (p *buildPass) pick() (*x509svid.SVID, error) {
	x := p.x509
	if x == nil {
		return nil, fmt.Errorf("%w: no X.509 context received yet", errNotReady)
	}
	picked, err := p.sel.Pick(x.SVIDs)
	if err != nil {
		return nil, err
	}
	if len(picked.Certificates) == 0 {
		return nil, fmt.Errorf("SVID %s has no certificates", picked.ID)
	}
	p.spiffeID = picked.ID.String()
	if p.validate {
		if err := svid.Validate(picked, x.Bundles, p.now); err != nil {
			return nil, fmt.Errorf("validate SVID %s serial %s: %w", picked.ID, serialOf(picked), err)
		}
	}
	return picked, nil
}

func (p *buildPass) token(ref tokenRef) (*jwtsvid.SVID, error) {
	if ref.idx >= len(p.tokens) {
		return nil, fmt.Errorf("jwt file %s: %w: no JWT-SVID fetched yet", ref.file, errNotReady)
	}
	t := p.tokens[ref.idx]
	switch {
	case t.err == nil && t.svid != nil:
	case t.svid != nil && p.now.Before(t.svid.Expiry):
		// Keep serving the still-valid token; the fetch is retried.
		p.jwtErr = errors.Join(p.jwtErr, fmt.Errorf("jwt file %s: refresh failed, kept the current token: %w", ref.file, t.err))
	case t.err != nil:
		return nil, fmt.Errorf("jwt file %s: %w", ref.file, t.err)
	default:
		return nil, fmt.Errorf("jwt file %s: %w: no JWT-SVID fetched yet", ref.file, errNotReady)
	}
	if p.spiffeID == "" {
		p.spiffeID = t.svid.ID.String()
	}
	return t.svid, nil
}

// trustDomain is the trust domain of the output's identity, from
// whatever names it: the picked SVID, a JWT-SVID, the selector, or the
// Workload API's default SVID.
func (p *buildPass) trustDomain() (spiffeid.TrustDomain, error) {
	if p.spiffeID != "" {
		if id, err := spiffeid.FromString(p.spiffeID); err == nil {
			return id.TrustDomain(), nil
		}
	}
	if p.sel.SpiffeID != "" {
		id, err := spiffeid.FromString(p.sel.SpiffeID)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("selector spiffe_id %q: %w", p.sel.SpiffeID, err)
		}
		return id.TrustDomain(), nil
	}
	if p.x509 != nil {
		if sv, err := p.sel.Pick(p.x509.SVIDs); err == nil {
			return sv.ID.TrustDomain(), nil
		}
	}
	return spiffeid.TrustDomain{}, errors.New("cannot tell the output's trust domain yet (no SVID)")
}

func serialOf(sv *x509svid.SVID) string {
	if sv == nil || len(sv.Certificates) == 0 {
		return ""
	}
	return serialString(sv.Certificates[0].SerialNumber)
}

// serialString formats a serial like `openssl x509 -serial` does:
// upper-case hex of the big-endian bytes.
func serialString(n *big.Int) string {
	if n == nil {
		return ""
	}
	b := n.Bytes()
	if len(b) == 0 {
		return "00"
	}
	return strings.ToUpper(hex.EncodeToString(b))
}
