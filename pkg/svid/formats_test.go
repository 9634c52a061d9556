package svid_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

// chainCA builds root -> intermediate -> leaf by hand: the dev CA signs
// leaves with its root directly, and the formats must be tested with an
// intermediate in the chain too.
func chainCA(t *testing.T, id spiffeid.ID) (*x509svid.SVID, *x509.Certificate) {
	t.Helper()
	mk := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c, key
	}
	now := time.Now()
	ca := func(serial int64, name string) *x509.Certificate {
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{id.TrustDomain().ID().URL()}}
	}
	root, rootKey := mk(ca(1, "root"), nil, nil)
	inter, interKey := mk(ca(2, "intermediate"), root, rootKey)
	leaf, leafKey := mk(&x509.Certificate{SerialNumber: big.NewInt(3), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature}, inter, interKey)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf, inter}, PrivateKey: leafKey}, root
}

func pemTypes(t *testing.T, data []byte) []string {
	t.Helper()
	var types []string
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		assert.Empty(t, b.Headers)
		types = append(types, b.Type)
	}
	assert.Empty(t, strings.TrimSpace(string(data)), "nothing after the last block")
	return types
}

func TestEncodeCombinedPEM(t *testing.T) {
	sv, _ := chainCA(t, idA)
	keyFirst, err := svid.EncodeCombinedPEM(sv, svid.KeyFirst)
	require.NoError(t, err)
	assert.Equal(t, []string{"PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"}, pemTypes(t, keyFirst))
	chainFirst, err := svid.EncodeCombinedPEM(sv, svid.ChainFirst)
	require.NoError(t, err)
	assert.Equal(t, []string{"CERTIFICATE", "CERTIFICATE", "PRIVATE KEY"}, pemTypes(t, chainFirst))

	// Go's own loader takes either order from the one file.
	for _, data := range [][]byte{keyFirst, chainFirst} {
		pair, err := tls.X509KeyPair(data, data)
		require.NoError(t, err)
		assert.Equal(t, sv.Certificates[0].Raw, pair.Certificate[0])
		assert.Len(t, pair.Certificate, 2)
	}
	again, err := svid.EncodeCombinedPEM(sv, svid.KeyFirst)
	require.NoError(t, err)
	assert.Equal(t, keyFirst, again, "deterministic")

	_, err = svid.EncodeCombinedPEM(nil, svid.KeyFirst)
	require.Error(t, err)
	for in, want := range map[string]svid.CombinedOrder{"": svid.KeyFirst, "key_first": svid.KeyFirst, "chain_first": svid.ChainFirst} {
		got, err := svid.ParseCombinedOrder(in)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err = svid.ParseCombinedOrder("cert_first")
	require.ErrorContains(t, err, `"cert_first": want key_first or chain_first`)
}

func TestEncodeCredentialBundle(t *testing.T) {
	sv, root := chainCA(t, idA)
	bundles := x509bundle.NewSet(x509bundle.FromX509Authorities(tdMain, []*x509.Certificate{root}))

	// A chain that (wrongly) carries its root: the credential bundle must
	// stop before it (draft §2.1).
	withRoot := &x509svid.SVID{ID: sv.ID, Certificates: append(append([]*x509.Certificate(nil), sv.Certificates...), root), PrivateKey: sv.PrivateKey}
	for _, in := range []*x509svid.SVID{sv, withRoot} {
		data, err := svid.EncodeCredentialBundle(in, bundles)
		require.NoError(t, err)
		assert.Equal(t, []string{"PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"}, pemTypes(t, data))
		pair, err := tls.X509KeyPair(data, data)
		require.NoError(t, err)
		assert.Equal(t, [][]byte{sv.Certificates[0].Raw, sv.Certificates[1].Raw}, pair.Certificate)
	}
	// Self-signed is an anchor even when the bundle does not list it.
	data, err := svid.EncodeCredentialBundle(withRoot, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{"PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"}, pemTypes(t, data))

	assert.Equal(t, "credential-bundle.private-key.x509.pem", svid.FSDeliveryCredentialBundle)
	assert.Equal(t, "example.org.spiffe-trust-bundle.x509.pem", svid.FSDeliveryTrustBundleName(tdMain))
	td, ok := svid.FSDeliveryTrustDomain("partner.test.spiffe-trust-bundle.x509.pem")
	assert.True(t, ok)
	assert.Equal(t, tdFed, td)
	for _, bad := range []string{"partner.test.pem", ".spiffe-trust-bundle.x509.pem", "UPPER.spiffe-trust-bundle.x509.pem"} {
		_, ok := svid.FSDeliveryTrustDomain(bad)
		assert.False(t, ok, bad)
	}
	assert.Equal(t, "example.org.pem", svid.BundleDirFileName(tdMain))
}

func TestTrustDomainBundles(t *testing.T) {
	own, fed := newCA(t, tdMain), newCA(t, tdFed)
	third := newCA(t, spiffeid.RequireTrustDomainFromString("aaa.test"))
	ctx := &workloadapi.X509Context{Bundles: x509bundle.NewSet(fed.X509Bundle(), own.X509Bundle(), third.X509Bundle())}

	only := svid.TrustDomainBundles(ctx, tdMain, false)
	require.Len(t, only, 1)
	assert.Equal(t, tdMain, only[0].TrustDomain)
	assert.Equal(t, own.X509Bundle().X509Authorities(), only[0].Certs)

	all := svid.TrustDomainBundles(ctx, tdMain, true)
	var names []string
	for _, b := range all {
		names = append(names, b.TrustDomain.Name())
	}
	assert.Equal(t, []string{"aaa.test", "example.org", "partner.test"}, names, "sorted, each domain apart")
	assert.Equal(t, fed.X509Bundle().X509Authorities(), all[2].Certs)
	assert.Nil(t, svid.TrustDomainBundles(nil, tdMain, true))
}

func TestPKCS12ReadBack(t *testing.T) {
	sv, root := chainCA(t, idA)
	const password = "s3cret-not-logged"
	ks, err := svid.EncodePKCS12Keystore(sv, password)
	require.NoError(t, err)
	key, leaf, cas, err := pkcs12.DecodeChain(ks, password)
	require.NoError(t, err)
	assert.Equal(t, sv.Certificates[0].Raw, leaf.Raw)
	require.Len(t, cas, 1)
	assert.Equal(t, sv.Certificates[1].Raw, cas[0].Raw)
	assert.True(t, sv.PrivateKey.Public().(*ecdsa.PublicKey).Equal(key.(*ecdsa.PrivateKey).Public()))
	_, _, _, err = pkcs12.DecodeChain(ks, "wrong")
	require.Error(t, err)

	fed := newCA(t, tdFed)
	ts, err := svid.EncodePKCS12Truststore([]svid.TrustDomainBundle{
		{TrustDomain: tdMain, Certs: []*x509.Certificate{root}},
		{TrustDomain: tdFed, Certs: fed.X509Bundle().X509Authorities()},
	}, password)
	require.NoError(t, err)
	certs, err := pkcs12.DecodeTrustStore(ts, password)
	require.NoError(t, err)
	require.Len(t, certs, 2)
	assert.Equal(t, root.Raw, certs[0].Raw)
	_, err = svid.EncodePKCS12Truststore(nil, password)
	require.ErrorContains(t, err, "no certificates")

	// Randomized encoding; the fingerprint is what stays equal.
	ks2, err := svid.EncodePKCS12Keystore(sv, password)
	require.NoError(t, err)
	assert.NotEqual(t, ks, ks2)
	assert.Equal(t, svid.PKCS12Fingerprint(password, leaf.Raw), svid.PKCS12Fingerprint(password, leaf.Raw))
	assert.NotEqual(t, svid.PKCS12Fingerprint(password, leaf.Raw), svid.PKCS12Fingerprint("other", leaf.Raw))
	assert.NotEqual(t, svid.PKCS12Fingerprint("ab", []byte("c")), svid.PKCS12Fingerprint("a", []byte("bc")))

	// An independent reader: OpenSSL, with the password from a file.
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed (scripts/deps.sh installs it)")
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pw, []byte(password+"\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ks.p12"), ks, 0o600))
	out, err := exec.Command("openssl", "pkcs12", "-in", filepath.Join(dir, "ks.p12"), "-passin", "file:"+pw, "-nokeys", "-clcerts").CombinedOutput()
	require.NoError(t, err, "%s", out)
	blk, _ := pem.Decode(out[strings.Index(string(out), "-----BEGIN"):])
	require.NotNil(t, blk)
	assert.Equal(t, sv.Certificates[0].Raw, blk.Bytes)
}
