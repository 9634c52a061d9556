package svid_test

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func newCA(t testing.TB, td spiffeid.TrustDomain) *svidtest.CA {
	t.Helper()
	ca, err := svidtest.NewCA(td)
	require.NoError(t, err)
	return ca
}

func issue(t testing.TB, ca *svidtest.CA, id spiffeid.ID, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	sv, err := ca.IssueX509SVID(id, notBefore, notAfter)
	require.NoError(t, err)
	return sv
}

func TestValidate(t *testing.T) {
	now := time.Now()
	ca := newCA(t, tdMain)
	good := issue(t, ca, idA, now.Add(-time.Minute), now.Add(time.Hour))
	other := issue(t, ca, idA, now.Add(-time.Minute), now.Add(time.Hour))

	require.NoError(t, svid.Validate(good, ca.X509Bundle(), now))
	// A set of bundles works as well as a single one.
	require.NoError(t, svid.Validate(good, x509bundle.NewSet(ca.X509Bundle(), newCA(t, tdFed).X509Bundle()), now))

	mismatched := &x509svid.SVID{ID: good.ID, Certificates: good.Certificates, PrivateKey: other.PrivateKey}
	err := svid.Validate(mismatched, ca.X509Bundle(), now)
	require.ErrorContains(t, err, "private key does not match the leaf certificate")

	expired := issue(t, ca, idA, now.Add(-2*time.Hour), now.Add(-time.Hour))
	err = svid.Validate(expired, ca.X509Bundle(), now)
	require.ErrorContains(t, err, "expired: NotAfter")

	future := issue(t, ca, idA, now.Add(time.Hour), now.Add(2*time.Hour))
	err = svid.Validate(future, ca.X509Bundle(), now)
	require.ErrorContains(t, err, "not valid yet")

	// Same trust domain name, different CA: the chain must not verify.
	foreign := issue(t, newCA(t, tdMain), idA, now.Add(-time.Minute), now.Add(time.Hour))
	err = svid.Validate(foreign, ca.X509Bundle(), now)
	require.ErrorContains(t, err, `chain does not verify against the bundle for trust domain "example.org"`)

	// No bundle for the SVID's trust domain at all.
	err = svid.Validate(good, newCA(t, tdFed).X509Bundle(), now)
	require.ErrorContains(t, err, "chain does not verify")

	// After a CA rotation the bundle holds old and new roots; both verify.
	require.NoError(t, ca.Rotate())
	fresh := issue(t, ca, idA, now.Add(-time.Minute), now.Add(time.Hour))
	require.NoError(t, svid.Validate(good, ca.X509Bundle(), now))
	require.NoError(t, svid.Validate(fresh, ca.X509Bundle(), now))

	require.ErrorContains(t, svid.Validate(nil, ca.X509Bundle(), now), "no certificates")
	require.ErrorContains(t, svid.Validate(good, nil, now), "no bundle source")
}

func TestEncodeCertsAndKey(t *testing.T) {
	now := time.Now()
	ca := newCA(t, tdMain)
	sv := issue(t, ca, idA, now.Add(-time.Minute), now.Add(time.Hour))
	root := ca.X509Bundle().X509Authorities()[0]

	pemBytes := svid.EncodeCertsPEM([]*x509.Certificate{sv.Certificates[0], root})
	var got []*x509.Certificate
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			require.Empty(t, rest)
			break
		}
		require.Equal(t, "CERTIFICATE", b.Type)
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		got = append(got, c)
	}
	require.Len(t, got, 2)
	assert.True(t, got[0].Equal(sv.Certificates[0]), "leaf first")
	assert.True(t, got[1].Equal(root))

	keyPEM, err := svid.EncodeKeyPEM(sv.PrivateKey)
	require.NoError(t, err)
	b, rest := pem.Decode(keyPEM)
	require.NotNil(t, b)
	require.Empty(t, rest)
	require.Equal(t, "PRIVATE KEY", b.Type)
	key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	require.NoError(t, err)
	assert.True(t, sv.PrivateKey.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.(crypto.Signer).Public()))
	// The pair parses back as an SVID (go-spiffe checks that key and leaf match).
	parsed, err := x509svid.Parse(svid.EncodeCertsPEM(sv.Certificates), keyPEM)
	require.NoError(t, err)
	assert.Equal(t, idA, parsed.ID)

	_, err = svid.EncodeKeyPEM(nil)
	require.Error(t, err)
}

func TestEncodeJWKS(t *testing.T) {
	caMain, caFed := newCA(t, tdMain), newCA(t, tdFed)
	require.NoError(t, caMain.Rotate()) // two keys in the main bundle

	a, err := svid.EncodeJWKS(caMain.JWTBundle(), caFed.JWTBundle())
	require.NoError(t, err)
	for range 20 { // map iteration order must not leak into the output
		b, err := svid.EncodeJWKS(caMain.JWTBundle(), caFed.JWTBundle())
		require.NoError(t, err)
		require.Equal(t, string(a), string(b))
	}

	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
			Use string `json:"use"`
			Kty string `json:"kty"`
		} `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(a, &doc))
	require.Len(t, doc.Keys, 3)
	for _, k := range doc.Keys {
		assert.Equal(t, "jwt-svid", k.Use)
		assert.Equal(t, "EC", k.Kty)
		assert.NotEmpty(t, k.Kid)
	}
	// Order: trust domain, then kid. example.org < partner.test.
	assert.True(t, caMain.JWTBundle().HasJWTAuthority(doc.Keys[0].Kid))
	assert.True(t, caMain.JWTBundle().HasJWTAuthority(doc.Keys[1].Kid))
	assert.Less(t, doc.Keys[0].Kid, doc.Keys[1].Kid)
	assert.True(t, caFed.JWTBundle().HasJWTAuthority(doc.Keys[2].Kid))

	// It parses back as a standard JWKS with the same keys.
	one, err := svid.EncodeJWKS(caMain.JWTBundle())
	require.NoError(t, err)
	back, err := jwtbundle.Parse(tdMain, one)
	require.NoError(t, err)
	assert.True(t, back.Equal(caMain.JWTBundle()))

	empty, err := svid.EncodeJWKS()
	require.NoError(t, err)
	assert.JSONEq(t, `{"keys":[]}`, string(empty))
}

func TestBundleCerts(t *testing.T) {
	now := time.Now()
	caMain, caFed := newCA(t, tdMain), newCA(t, tdFed)
	caZed := newCA(t, spiffeid.RequireTrustDomainFromString("aaa.test")) // sorts before example.org
	leaf := issue(t, caMain, idA, now.Add(-time.Minute), now.Add(time.Hour))
	// BundleCerts only reads the chain, so any CA certificate can stand in
	// for an intermediate; the fed root doubles as a duplicate to drop.
	inter := caZed.X509Bundle().X509Authorities()[0]
	withInter := &x509svid.SVID{ID: leaf.ID, Certificates: []*x509.Certificate{leaf.Certificates[0], inter}, PrivateKey: leaf.PrivateKey}
	ctx := &workloadapi.X509Context{
		SVIDs:   []*x509svid.SVID{withInter},
		Bundles: x509bundle.NewSet(caFed.X509Bundle(), caMain.X509Bundle(), caZed.X509Bundle()),
	}
	mainRoot := caMain.X509Bundle().X509Authorities()[0]
	fedRoot := caFed.X509Bundle().X509Authorities()[0]

	own := svid.BundleCerts(ctx, tdMain, false, false)
	require.Len(t, own, 1)
	assert.True(t, own[0].Equal(mainRoot))

	all := svid.BundleCerts(ctx, tdMain, true, false)
	require.Len(t, all, 3)
	assert.True(t, all[0].Equal(mainRoot), "own trust domain first")
	assert.True(t, all[1].Equal(inter), "then federated sorted by name: aaa.test")
	assert.True(t, all[2].Equal(fedRoot), "partner.test")

	withI := svid.BundleCerts(ctx, tdMain, false, true)
	require.Len(t, withI, 2)
	assert.True(t, withI[1].Equal(inter))

	dedup := svid.BundleCerts(ctx, tdMain, true, true)
	assert.Len(t, dedup, 3, "intermediate equal to a federated root appears once")

	assert.Nil(t, svid.BundleCerts(nil, tdMain, true, true))
	assert.Empty(t, svid.BundleCerts(ctx, spiffeid.RequireTrustDomainFromString("none.test"), false, false))
}

func TestSelectorPick(t *testing.T) {
	now := time.Now()
	ca := newCA(t, tdMain)
	a := issue(t, ca, idA, now, now.Add(time.Hour))
	a.Hint = "a"
	b := issue(t, ca, idB, now, now.Add(time.Hour))
	b.Hint = "b"
	svids := []*x509svid.SVID{a, b}

	for _, tc := range []struct {
		sel  svid.Selector
		want *x509svid.SVID
	}{
		{svid.Selector{}, a},
		{svid.Selector{Hint: "b"}, b},
		{svid.Selector{SpiffeID: idB.String()}, b},
		{svid.Selector{SpiffeID: idA.String(), Hint: "a"}, a},
	} {
		got, err := tc.sel.Pick(svids)
		require.NoError(t, err, tc.sel.String())
		assert.Same(t, tc.want, got, tc.sel.String())
	}
	_, err := svid.Selector{SpiffeID: idA.String(), Hint: "b"}.Pick(svids)
	require.EqualError(t, err, `select X.509-SVID spiffe_id=spiffe://example.org/a hint="b": no match among offered [spiffe://example.org/a (hint "a"), spiffe://example.org/b (hint "b")]`)
	_, err = svid.Selector{SpiffeID: "spiffe://example.org/A"}.Pick(svids)
	require.Error(t, err, "exact match only")
	_, err = svid.Selector{}.Pick(nil)
	require.EqualError(t, err, "select X.509-SVID default (first SVID): the Workload API offered no SVIDs")
}
