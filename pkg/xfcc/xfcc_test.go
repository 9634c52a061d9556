package xfcc_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/xfcc"
)

const hash = "8a2d7a04ce5c5e0d8cd1a10d3dc8c8fbd9e8d3b9e6a3c7c1d8b7f5e6a4c2b1a0"

func TestParseRoundTrip(t *testing.T) {
	e := xfcc.Element{
		By:   spiffeid.RequireFromString("spiffe://example.org/server"),
		Hash: hash,
		URI:  spiffeid.RequireFromString("spiffe://example.org/client"),
	}
	s := e.String()
	assert.Equal(t, "By=spiffe://example.org/server;Hash="+hash+";URI=spiffe://example.org/client", s)
	got, err := xfcc.Parse(s)
	require.NoError(t, err)
	assert.Equal(t, e, got)

	// By is optional: the proxy leaves it out when it cannot read its SVID.
	e.By = spiffeid.ID{}
	assert.Equal(t, "Hash="+hash+";URI=spiffe://example.org/client", e.String())
	got, err = xfcc.Parse(e.String())
	require.NoError(t, err)
	assert.Equal(t, e, got)
}

func TestParseEnvoyForm(t *testing.T) {
	// Envoy quotes Subject and may add other keys; they are skipped.
	got, err := xfcc.Parse(` By=spiffe://example.org/server;Hash=` + strings.ToUpper(hash) +
		`;Subject="CN=a;b, O=\"x\"";URI=spiffe://example.org/client;DNS=localhost `)
	require.NoError(t, err)
	assert.Equal(t, "spiffe://example.org/client", got.URI.String())
	assert.Equal(t, hash, got.Hash, "hex is normalized to lower case")
}

func TestParseRejects(t *testing.T) {
	uri := ";URI=spiffe://example.org/client"
	for header, want := range map[string]string{
		"":                                      "want Key=Value",
		"Hash=" + hash:                          "no URI",
		"URI=spiffe://example.org/client":       "no Hash",
		"Hash=abc" + uri:                        "want 64 hex digits",
		"Hash=" + strings.Repeat("g", 64) + uri: "Hash: encoding/hex",
		"Hash=" + hash + ";URI=https://example.org/client":                     "URI: scheme is missing or invalid",
		"Hash=" + hash + uri + uri:                                             "URI given twice",
		"Hash=" + hash + ";uri=spiffe://example.org/admin" + uri:               "given twice",
		"By=spiffe://example.org/s;Hash=" + hash + uri + ",Hash=" + hash + uri: "more than one element",
		"Hash=" + hash + `;Subject="open` + uri:                                "unterminated quote",
		"Hash=" + hash + `;Subject=a\b` + uri:                                  "stray quote",
		"Hash=" + hash + uri + ";garbage":                                      `"garbage": want Key=Value`,
		"By=notanid;Hash=" + hash + uri:                                        "By:",
	} {
		_, err := xfcc.Parse(header)
		if assert.Error(t, err, header) {
			assert.Contains(t, err.Error(), want, header)
			assert.True(t, strings.HasPrefix(err.Error(), "xfcc: parse "), err.Error())
		}
	}
}

func TestStripAndSet(t *testing.T) {
	h := http.Header{}
	h["X-Forwarded-Client-Cert"] = []string{"URI=spiffe://example.org/admin"}
	h["x-forwarded-client-cert"] = []string{"URI=spiffe://example.org/admin2"}
	h["X_Forwarded_Client_Cert"] = []string{"URI=spiffe://example.org/admin3"}
	h["X-Forwarded-Client_Cert"] = []string{"URI=spiffe://example.org/admin4"}
	h["X-Other"] = []string{"kept"}
	e := xfcc.Element{Hash: hash, URI: spiffeid.RequireFromString("spiffe://example.org/client")}
	xfcc.Set(h, e)
	assert.Equal(t, http.Header{"X-Forwarded-Client-Cert": {e.String()}, "X-Other": {"kept"}}, h)
}

// FuzzParse: no input panics, and whatever Parse accepts formats to a
// header that parses back to the same element.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"By=spiffe://example.org/server;Hash=" + hash + ";URI=spiffe://example.org/client",
		"Hash=" + hash + ";URI=spiffe://example.org/client",
		`Hash=` + hash + `;Subject="a\"b;c";URI=spiffe://x.test/y`,
		"a=b,c=d", `"`, `x="\`, ";;", "=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		e, err := xfcc.Parse(header)
		if err != nil {
			return
		}
		again, err := xfcc.Parse(e.String())
		if err != nil || again != e {
			t.Fatalf("Parse(%q) = %+v, formats as %q, parses back as %+v, %v", header, e, e.String(), again, err)
		}
	})
}
