package mtls_test

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/mtls"
)

func TestParseAllow(t *testing.T) {
	authz, err := mtls.ParseAllow([]string{
		"spiffe://example.org/web",
		"spiffe://example.org/ns/*",
		"spiffe://partner.org",
		"spiffe://other.org/*",
	})
	require.NoError(t, err)
	for id, ok := range map[string]bool{
		"spiffe://example.org/web":      true,
		"spiffe://example.org/web2":     false,
		"spiffe://example.org/web/x":    false,
		"spiffe://example.org/ns":       true,
		"spiffe://example.org/ns/a/b":   true,
		"spiffe://example.org/nsx":      false,
		"spiffe://partner.org/anything": true,
		"spiffe://other.org/x":          true,
		"spiffe://evil.org/web":         false,
	} {
		err := authz.Authorize(spiffeid.RequireFromString(id), nil)
		assert.Equal(t, ok, err == nil, "%s: %v", id, err)
		// The go-spiffe view decides alike.
		assert.Equal(t, ok, mtls.Adapt(authz)(spiffeid.RequireFromString(id), nil) == nil, id)
	}
	for _, bad := range [][]string{
		nil,
		{},
		{"*"},
		{"spiffe://*"},
		{"spiffe://example.org/a*"},
		{"example.org/web"},
		{"spiffe://Example.org/web"},
		{"spiffe://example.org/web/"},
	} {
		_, err := mtls.ParseAllow(bad)
		assert.Error(t, err, "%q", bad)
		if len(bad) > 0 {
			assert.Error(t, mtls.CheckAllowEntry(bad[0]), "%q", bad[0])
		}
	}
	_, err = mtls.ParseAllow([]string{"spiffe://example.org/ok", "bad"})
	assert.ErrorContains(t, err, `allow[1] "bad"`)
	assert.ErrorIs(t, func() error { _, err := mtls.ParseAllow(nil); return err }(), mtls.ErrEmptyAllow)
	assert.Equal(t, []string{"spiffe://example.org/web", "spiffe://example.org/ns/*", "spiffe://partner.org", "spiffe://other.org/*"}, authz.Entries())
}

// policy is what a policy-file authorizer looks like: String names the
// file, Content is what was loaded from it.
type policy struct {
	mtls.Authorizer
	content string
}

func (p policy) String() string  { return "policy /etc/authz.rego" }
func (p policy) Content() []byte { return []byte(p.content) }

func TestFingerprint(t *testing.T) {
	parse := func(entries ...string) string {
		a, err := mtls.ParseAllow(entries)
		require.NoError(t, err)
		return mtls.Fingerprint(a)
	}
	web := parse("spiffe://example.org/web")
	assert.Regexp(t, `^sha256:[0-9a-f]{64}$`, web)
	assert.Equal(t, web, parse(" spiffe://example.org/web "), "surrounding blanks are not a change")
	assert.NotEqual(t, web, parse("spiffe://example.org/web", "spiffe://example.org/api"), "an added entry is a change")
	assert.NotEqual(t, parse("spiffe://example.org/a", "spiffe://example.org/b"), parse("spiffe://example.org/b", "spiffe://example.org/a"),
		"reordering is reported as a change (as slices.Equal on the list did)")
	assert.Equal(t, "", mtls.Fingerprint(nil))

	any := tlsconfig.AuthorizeAny()
	assert.Equal(t, mtls.Fingerprint(mtls.Describe("x", any)), mtls.Fingerprint(mtls.Describe("x", any)))
	assert.NotEqual(t, mtls.Fingerprint(mtls.Describe("x", any)), mtls.Fingerprint(mtls.Describe("y", any)))

	// Same file name, edited content: a change.
	base := mtls.Describe("unused", any)
	v1, v2 := policy{base, "allow if web"}, policy{base, "allow if api"}
	assert.Equal(t, v1.String(), v2.String())
	assert.NotEqual(t, mtls.Fingerprint(v1), mtls.Fingerprint(v2))
	assert.Equal(t, mtls.Fingerprint(v1), mtls.Fingerprint(policy{base, "allow if web"}))
	// A split between String and Content cannot collide.
	assert.NotEqual(t, mtls.Fingerprint(mtls.Describe("policy /etc/authz.regoX", any)), mtls.Fingerprint(policy{base, "X"}))
}

func TestNilAuthorizerRefuses(t *testing.T) {
	assert.EqualError(t, mtls.Adapt(nil)(spiffeid.RequireFromString("spiffe://example.org/x"), nil), "no authorizer configured: nobody is allowed")
	assert.Error(t, mtls.Describe("nothing", nil).Authorize(spiffeid.RequireFromString("spiffe://example.org/x"), nil))
}
