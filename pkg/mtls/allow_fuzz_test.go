package mtls

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// FuzzParseAllow: any entry is accepted or refused without a panic, the
// per-entry check (CheckAllowEntry, what tlsproxy.Config.Validate runs on
// each entry) and the parser agree on it, and an accepted entry
// authorizes what it names and nothing outside its trust domain.
func FuzzParseAllow(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/web", "spiffe://example.org/ns/*", "spiffe://example.org/*", "spiffe://example.org",
		"*", "spiffe://*", "spiffe://example.org/a*", "example.org/web", "spiffe://Example.org/web",
		"spiffe://example.org/web/", " spiffe://example.org/x ", "spiffe://example.org/*/x", "spiffe://example.org//x",
		"spiffe://ex%41mple.org/x", "spiffe://example.org/x?y", "",
	} {
		f.Add(s)
	}
	other := spiffeid.RequireFromString("spiffe://other.test/x")
	f.Fuzz(func(t *testing.T, entry string) {
		authz, err := ParseAllow([]string{entry})
		cerr := CheckAllowEntry(entry)
		if (err == nil) != (cerr == nil) {
			t.Fatalf("ParseAllow(%q) = %v but CheckAllowEntry = %v", entry, err, cerr)
		}
		if err != nil {
			return
		}
		id, _, perr := parseAllowEntry(entry)
		if perr != nil {
			t.Fatalf("accepted %q but parseAllowEntry: %v", entry, perr)
		}
		if id.TrustDomain() != other.TrustDomain() {
			if authz.Authorize(other, nil) == nil {
				t.Fatalf("%q authorizes %s from another trust domain", entry, other)
			}
		}
		base := strings.TrimSuffix(strings.TrimSpace(entry), "/*")
		if named, err := spiffeid.FromString(base); err == nil && named.Path() != "" {
			if authz.Authorize(named, nil) != nil {
				t.Fatalf("%q does not authorize %s, the ID it names", entry, named)
			}
		}
	})
}
