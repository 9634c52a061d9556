package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrEmptyAllow is ParseAllow's error for an empty list: there is no
// "allow anyone".
var ErrEmptyAllow = errors.New("at least one allowed SPIFFE ID is required (there is no allow-anyone)")

// AllowList is the Authorizer ParseAllow builds: it accepts a peer that
// matches any of its entries.
type AllowList struct {
	entries  []string // as given, trimmed
	exact    map[spiffeid.ID]struct{}
	members  map[spiffeid.TrustDomain]struct{}
	prefixes []spiffeid.Matcher
}

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
// Any other use of "*" is an error, as is an empty list (ErrEmptyAllow):
// there is no "allow anyone". Errors name the offending entry by index.
func ParseAllow(entries []string) (*AllowList, error) {
	if len(entries) == 0 {
		return nil, ErrEmptyAllow
	}
	a := &AllowList{
		exact:   map[spiffeid.ID]struct{}{},
		members: map[spiffeid.TrustDomain]struct{}{},
	}
	for i, e := range entries {
		id, wildcard, err := parseAllowEntry(e)
		if err != nil {
			return nil, fmt.Errorf("allow[%d] %q: %w", i, strings.TrimSpace(e), err)
		}
		a.entries = append(a.entries, strings.TrimSpace(e))
		switch {
		case id.Path() == "":
			a.members[id.TrustDomain()] = struct{}{}
		case wildcard:
			a.prefixes = append(a.prefixes, spiffeid.MatchIDPrefix(id))
		default:
			a.exact[id] = struct{}{}
		}
	}
	return a, nil
}

// CheckAllowEntry reports why one allow entry is not in ParseAllow's
// grammar, or nil. A config check uses it to name every bad entry, where
// ParseAllow stops at the first.
func CheckAllowEntry(entry string) error {
	_, _, err := parseAllowEntry(entry)
	return err
}

// Authorize accepts id if any entry matches it.
func (a *AllowList) Authorize(id spiffeid.ID, _ [][]*x509.Certificate) error {
	if _, ok := a.exact[id]; ok {
		return nil
	}
	if _, ok := a.members[id.TrustDomain()]; ok {
		return nil
	}
	for _, m := range a.prefixes {
		if m(id) == nil {
			return nil
		}
	}
	return fmt.Errorf("SPIFFE ID %q is not allowed", id)
}

// String is "allow " and the entries as given (trimmed), in order, so
// reordering the list counts as a change for Fingerprint.
func (a *AllowList) String() string {
	if a == nil {
		return "allow (nothing)"
	}
	return "allow " + strings.Join(a.entries, ", ")
}

// Entries returns the entries as given (trimmed).
func (a *AllowList) Entries() []string { return append([]string(nil), a.entries...) }

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
