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
	tokens     []tokenState // one per Output.JWT, already refreshed
	now        time.Time

	// For the formats (formats.go): the PKCS#12 password as read from its
	// file (or why it could not be), the PKCS#12 files last written, and
	// the Filesystem Delivery trust bundle names ever written.
	pkcs12Password    string
	pkcs12Err         error
	p12Prev           map[string]p12Entry
	knownTrustBundles map[string]bool
}

// material is what one build produced besides the files.
type material struct {
	x509     *workloadapi.X509Context
	svid     *x509svid.SVID
	jwtErr   error // a refresh failed but a still-valid cached token was used
	spiffeID string
	p12      map[string]p12Entry // the PKCS#12 files of this build
}

// build computes an output's files from in. It is a pure function: no
// disk, no network, no clock; everything it reads is in o and in.
func build(o Output, in buildInput) ([]atomicdir.File, material, error) {
	var (
		files []atomicdir.File
		mat   = material{x509: in.x509}
		x     = in.x509
	)
	if o.wantsX509() {
		if x == nil {
			return nil, mat, fmt.Errorf("%w: no X.509 context received yet", errNotReady)
		}
		picked, err := o.Selector.Pick(x.SVIDs)
		if err != nil {
			return nil, mat, err
		}
		if len(picked.Certificates) == 0 {
			return nil, mat, fmt.Errorf("SVID %s has no certificates", picked.ID)
		}
		mat.svid = picked
		mat.spiffeID = picked.ID.String()
		if o.wantsKey() {
			if err := svid.Validate(picked, x.Bundles, in.now); err != nil {
				return nil, mat, fmt.Errorf("validate SVID %s serial %s: %w", picked.ID, serialOf(picked), err)
			}
		}
		if o.CertFile != "" {
			files = append(files, atomicdir.File{Name: o.CertFile, Data: svid.EncodeCertsPEM(picked.Certificates), Mode: o.CertMode})
		}
		if o.KeyFile != "" {
			key, err := svid.EncodeKeyPEM(picked.PrivateKey)
			if err != nil {
				return nil, mat, fmt.Errorf("encode key of %s: %w", picked.ID, err)
			}
			files = append(files, atomicdir.File{Name: o.KeyFile, Data: key, Mode: o.KeyMode})
		}
		if o.BundleFile != "" {
			certs := svid.BundleCerts(x, picked.ID.TrustDomain(), o.IncludeFederated, o.IntermediatesInBundle)
			if len(certs) == 0 {
				return nil, mat, fmt.Errorf("no X.509 bundle for trust domain %s", picked.ID.TrustDomain())
			}
			files = append(files, atomicdir.File{Name: o.BundleFile, Data: svid.EncodeCertsPEM(certs), Mode: o.BundleMode})
		}
		more, err := buildFormats(o, in, picked, &mat)
		if err != nil {
			return nil, mat, err
		}
		files = append(files, more...)
	}

	for i, jf := range o.JWT {
		t := in.tokens[i]
		switch {
		case t.err == nil && t.svid != nil:
		case t.svid != nil && in.now.Before(t.svid.Expiry):
			// Keep serving the still-valid token; the fetch is retried.
			mat.jwtErr = errors.Join(mat.jwtErr, fmt.Errorf("jwt file %s: refresh failed, kept the current token: %w", jf.File, t.err))
		case t.err != nil:
			return nil, mat, fmt.Errorf("jwt file %s: %w", jf.File, t.err)
		default:
			return nil, mat, fmt.Errorf("jwt file %s: %w: no JWT-SVID fetched yet", jf.File, errNotReady)
		}
		if mat.spiffeID == "" {
			mat.spiffeID = t.svid.ID.String()
		}
		files = append(files, atomicdir.File{Name: jf.File, Data: []byte(t.svid.Marshal() + "\n"), Mode: jf.Mode})
	}

	if o.JWTBundleFile != "" {
		data, err := jwks(o, in.jwtBundles, mat)
		if err != nil {
			return nil, mat, err
		}
		files = append(files, atomicdir.File{Name: o.JWTBundleFile, Data: data, Mode: o.JWTBundleMode})
	}
	return files, mat, nil
}

// jwks encodes the JWT bundles the output asks for.
func jwks(o Output, set *jwtbundle.Set, mat material) ([]byte, error) {
	if set == nil || set.Len() == 0 {
		// They come on their own stream, often just after the X.509 context.
		return nil, fmt.Errorf("jwt bundle file %s: %w: no JWT bundles received yet", o.JWTBundleFile, errNotReady)
	}
	var bundles []*jwtbundle.Bundle
	if o.IncludeFederated {
		bundles = set.Bundles()
	} else {
		td, err := ownTrustDomain(o, mat)
		if err != nil {
			return nil, fmt.Errorf("jwt bundle file %s: %w", o.JWTBundleFile, err)
		}
		b, ok := set.Get(td)
		if !ok {
			return nil, fmt.Errorf("jwt bundle file %s: no JWT bundle for trust domain %s", o.JWTBundleFile, td)
		}
		bundles = []*jwtbundle.Bundle{b}
	}
	data, err := svid.EncodeJWKS(bundles...)
	if err != nil {
		return nil, fmt.Errorf("jwt bundle file %s: %w", o.JWTBundleFile, err)
	}
	return data, nil
}

// ownTrustDomain is the trust domain of the output's identity, from
// whatever names it: the picked SVID, a JWT-SVID, the selector, or the
// Workload API's default SVID.
func ownTrustDomain(o Output, mat material) (spiffeid.TrustDomain, error) {
	if mat.spiffeID != "" {
		if id, err := spiffeid.FromString(mat.spiffeID); err == nil {
			return id.TrustDomain(), nil
		}
	}
	if o.Selector.SpiffeID != "" {
		id, err := spiffeid.FromString(o.Selector.SpiffeID)
		if err != nil {
			return spiffeid.TrustDomain{}, fmt.Errorf("selector spiffe_id %q: %w", o.Selector.SpiffeID, err)
		}
		return id.TrustDomain(), nil
	}
	if mat.x509 != nil {
		if sv, err := o.Selector.Pick(mat.x509.SVIDs); err == nil {
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
