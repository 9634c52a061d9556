package rotation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

// fakeSource is a Source without gRPC: the test sets the material and the
// JWT fetch error directly.
type fakeSource struct {
	mu     sync.Mutex
	x509   *workloadapi.X509Context
	jwtErr error
}

func (f *fakeSource) X509Context() *workloadapi.X509Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.x509
}
func (f *fakeSource) JWTBundles() *jwtbundle.Set { return nil }
func (f *fakeSource) FetchJWTSVID(context.Context, svid.Selector, []string) (*jwtsvid.SVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jwtErr != nil {
		return nil, f.jwtErr
	}
	return nil, errors.New("fakeSource: no JWT-SVIDs")
}
func (f *fakeSource) Subscribe() (<-chan struct{}, func()) { return make(chan struct{}), func() {} }
func (f *fakeSource) Status() svid.ConnStatus              { return svid.ConnStatus{Connected: true} }

// testCA issues X.509-SVIDs in td, valid from notBefore to notAfter.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) issue(t *testing.T, path string, serial int64, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	id := spiffeid.RequireFromPath(td, path)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}
}

func (ca *testCA) context(svids ...*x509svid.SVID) *workloadapi.X509Context {
	return &workloadapi.X509Context{
		SVIDs:   svids,
		Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{ca.cert})),
	}
}

// TestFakeSourceRejectsExpiredSVID runs the Manager on a Source that hands
// it an expired SVID: nothing may be written, and State and the error say
// why. Then a good SVID from the same Source is written.
func TestFakeSourceRejectsExpiredSVID(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	src := &fakeSource{x509: ca.context(ca.issue(t, "/web", 7, now.Add(-2*time.Hour), now.Add(-time.Hour)))}
	dir := filepath.Join(t.TempDir(), "out")
	m, err := NewManager(src, []Output{{Name: "web", Dir: dir, Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem"}}}}, WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })

	err = m.WriteAll(context.Background())
	require.ErrorContains(t, err, `output "web": validate SVID spiffe://example.org/web serial 07:`)
	require.ErrorContains(t, err, "expired")
	_, statErr := os.Lstat(filepath.Join(dir, "cert.pem"))
	require.ErrorIs(t, statErr, os.ErrNotExist, "an expired SVID must never reach disk")
	st := outputState(m, "web")
	require.Contains(t, st.LastWriteError, "expired")
	require.False(t, st.Healthy())
	require.Empty(t, st.Serial)

	good := ca.issue(t, "/web", 8, now.Add(-time.Minute), now.Add(time.Hour))
	src.mu.Lock()
	src.x509 = ca.context(good)
	src.mu.Unlock()
	require.NoError(t, m.WriteAll(context.Background()))
	require.Equal(t, big.NewInt(8), fileSerial(filepath.Join(dir, "cert.pem")))
	st = outputState(m, "web")
	require.Empty(t, st.LastWriteError)
	require.Equal(t, "08", st.Serial)
	require.True(t, st.Healthy())
}

// TestFakeSourceJWTFetchFails: an output with a JWT file whose fetch fails
// writes none of its files (they are one set) and names the token file.
func TestFakeSourceJWTFetchFails(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	src := &fakeSource{
		x509:   ca.context(ca.issue(t, "/web", 9, now.Add(-time.Minute), now.Add(time.Hour))),
		jwtErr: errors.New("permission denied by the fake"),
	}
	dir := filepath.Join(t.TempDir(), "out")
	m, err := NewManager(src, []Output{{Name: "web", Dir: dir, Formats: []Format{&PEM{CertFile: "cert.pem"}, &JWT{Tokens: []JWTFile{{Audience: []string{"db"}, File: "token"}}}}}}, WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })

	require.ErrorContains(t, m.WriteAll(context.Background()), `output "web": jwt file token: permission denied by the fake`)
	_, statErr := os.Lstat(filepath.Join(dir, "cert.pem"))
	require.ErrorIs(t, statErr, os.ErrNotExist)
	st := outputState(m, "web")
	require.Equal(t, "permission denied by the fake", st.JWT[0].LastError)
	require.False(t, st.Healthy())
}

// TestBuildIsPure: the same input gives the same files, and build reads
// the clock only through in.now (an SVID valid now is rejected at a later
// now).
func TestBuildIsPure(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	sv := ca.issue(t, "/web", 10, now.Add(-time.Minute), now.Add(time.Hour))
	o, err := Output{Name: "web", Dir: t.TempDir(), Formats: []Format{&PEM{CertFile: "c", KeyFile: "k", BundleFile: "b"}}}.normalize()
	require.NoError(t, err)
	in := buildInput{x509: ca.context(sv), now: now}
	a, _, err := build(o, in)
	require.NoError(t, err)
	b, mat, err := build(o, in)
	require.NoError(t, err)
	require.Equal(t, a, b)
	require.Len(t, a, 3)
	require.Equal(t, "spiffe://example.org/web", mat.spiffeID)

	in.now = now.Add(2 * time.Hour)
	_, _, err = build(o, in)
	require.ErrorContains(t, err, "expired")

	_, _, err = build(o, buildInput{now: now})
	require.ErrorIs(t, err, errNotReady)
}

func TestExpiryOf(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(time.Hour)
	for _, c := range []struct {
		at     time.Duration // after notBefore
		window time.Duration
		want   Expiry
	}{
		{49 * time.Minute, 10 * time.Minute, ExpiryOK},
		{50 * time.Minute, 10 * time.Minute, ExpiryOverdue},
		{time.Hour, 10 * time.Minute, ExpiryExpired},
		{0, 2 * time.Hour, ExpiryOverdue},
	} {
		require.Equal(t, c.want, ExpiryOf(nb, na, c.window, nb.Add(c.at)), "%+v", c)
	}
	require.Equal(t, Expiry(""), ExpiryOf(time.Time{}, time.Time{}, time.Minute, nb))
}

// The default rule (window 0): overdue once less than a third of the
// lifetime is left, so an 8s SVID that SPIRE replaces at half-life (4s
// left) is never overdue.
func TestExpiryOfDefaultIsAThirdOfTheLifetime(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(9 * time.Second)
	require.Equal(t, ExpiryOK, ExpiryOf(nb, na, 0, nb.Add(4500*time.Millisecond)), "at half-life")
	require.Equal(t, ExpiryOK, ExpiryOf(nb, na, 0, nb.Add(5999*time.Millisecond)))
	require.Equal(t, ExpiryOverdue, ExpiryOf(nb, na, 0, nb.Add(6*time.Second)), "a third left")
	require.Equal(t, ExpiryExpired, ExpiryOf(nb, na, 0, na))
	// An explicit window wins over the default rule, either way.
	require.Equal(t, ExpiryOverdue, ExpiryOf(nb, na, time.Minute, nb))
	require.Equal(t, ExpiryOK, ExpiryOf(nb, na, time.Second, nb.Add(7*time.Second)))
}
