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
		id, wildcard, err := parseAllowEntry(e)
		if err != nil {
			return nil, fmt.Errorf("allow[%d] %q: %w", i, strings.TrimSpace(e), err)
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

// parseAllowEntry reads one allow entry: the ID (a trust domain alone when
// its path is empty) and whether it ends in "/*".
func parseAllowEntry(e string) (spiffeid.ID, bool, error) {
	e = strings.TrimSpace(e)
	if !strings.HasPrefix(e, "spiffe://") {
		return spiffeid.ID{}, false, errors.New(`want spiffe://trust-domain/path, spiffe://trust-domain/prefix/* or spiffe://trust-domain`)
	}
	base, wildcard := strings.CutSuffix(e, "/*")
	if strings.Contains(base, "*") {
		return spiffeid.ID{}, false, errors.New(`"*" is only allowed as a final "/*" path segment`)
	}
	id, err := spiffeid.FromString(base)
	if err != nil {
		return spiffeid.ID{}, false, err
	}
	return id, wildcard, nil
}
