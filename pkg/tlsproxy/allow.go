package tlsproxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

var errEmptyAllow = errors.New("at least one allowed SPIFFE ID is required (there is no allow-anyone)")

// ParseAllow turns allow entries into one authorizer that accepts a peer
// matching any entry. The forms are:
//
//	spiffe://example.org/web        exactly this ID
//	spiffe://example.org/ns/*       this path and everything below it, on
//	                                segment boundaries (/ns, /ns/a, /ns/a/b;
//	                                not /nsx)
//	spiffe://example.org/*          any ID in the trust domain
//	spiffe://example.org            same as spiffe://example.org/*
//
// Any other use of "*" is an error, as is an empty list: there is no
// "allow anyone". Errors name the offending entry by index.
func ParseAllow(entries []string) (tlsconfig.Authorizer, error) {
	if len(entries) == 0 {
		return nil, errEmptyAllow
	}
	var (
		exact    = map[spiffeid.ID]struct{}{}
		members  = map[spiffeid.TrustDomain]struct{}{}
		prefixes []spiffeid.Matcher
	)
	for i, e := range entries {
		e = strings.TrimSpace(e)
		fail := func(err error) (tlsconfig.Authorizer, error) {
			return nil, fmt.Errorf("allow[%d] %q: %w", i, e, err)
		}
		if !strings.HasPrefix(e, "spiffe://") {
			return fail(errors.New(`want spiffe://trust-domain/path, spiffe://trust-domain/prefix/* or spiffe://trust-domain`))
		}
		base, wildcard := strings.CutSuffix(e, "/*")
		if strings.Contains(base, "*") {
			return fail(errors.New(`"*" is only allowed as a final "/*" path segment`))
		}
		id, err := spiffeid.FromString(base)
		if err != nil {
			return fail(err)
		}
		switch {
		case id.Path() == "":
			members[id.TrustDomain()] = struct{}{}
		case wildcard:
			prefixes = append(prefixes, spiffeid.MatchIDPrefix(id))
		default:
			exact[id] = struct{}{}
		}
	}
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if _, ok := exact[id]; ok {
			return nil
		}
		if _, ok := members[id.TrustDomain()]; ok {
			return nil
		}
		for _, m := range prefixes {
			if m(id) == nil {
				return nil
			}
		}
		return fmt.Errorf("SPIFFE ID %q is not allowed", id)
	}, nil
}
