package rotation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func parseCertsFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs, nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]bool{}
	for _, c := range a {
		seen[string(c.Raw)] = true
	}
	for _, c := range b {
		if !seen[string(c.Raw)] {
			return false
		}
	}
	return true
}

func TestRotatesSVIDAndCABundle(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	dir := filepath.Join(t.TempDir(), "web")
	reg := prometheus.NewRegistry()
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem", BundleFile: "bundle.pem"}}}}, WithRegisterer(reg))
	runManager(t, m)
	certPath, keyPath, bundlePath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")

	first := currentSerial(e, "")
	waitSerial(t, certPath, first)
	require.Zero(t, opensslSerial(t, certPath).Cmp(first), "openssl disagrees with the Workload API")
	_, err := tls.LoadX509KeyPair(certPath, keyPath)
	require.NoError(t, err, "key does not match cert")
	for name, mode := range map[string]os.FileMode{"cert.pem": 0o644, "key.pem": 0o600, "bundle.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), name)
	}

	// SVID rotation: a new serial on disk, checked by openssl too.
	require.NoError(t, e.srv.RotateSVIDs())
	second := currentSerial(e, "")
	require.NotZero(t, second.Cmp(first))
	waitSerial(t, certPath, second)
	require.Zero(t, opensslSerial(t, certPath).Cmp(second))
	_, err = tls.LoadX509KeyPair(certPath, keyPath)
	require.NoError(t, err, "key does not match cert after rotation")
	require.Eventually(t, func() bool {
		st := outputState(m, "web")
		return st.Serial == serialString(second) && st.Healthy() && st.Rotations >= 2
	}, waitFor, tick)

	// CA rotation: the bundle file carries old and new roots.
	oldRoots := e.srv.CA().X509Bundle().X509Authorities()
	require.Len(t, oldRoots, 1)
	require.NoError(t, e.srv.RotateCA())
	newRoots := e.srv.CA().X509Bundle().X509Authorities()
	require.Len(t, newRoots, 2)
	require.Eventually(t, func() bool {
		got, err := parseCertsFile(bundlePath)
		return err == nil && sameCerts(got, newRoots)
	}, waitFor, tick, "bundle never held old+new roots")
	waitSerial(t, certPath, currentSerial(e, ""))

	// The cert on disk verifies against the bundle on disk.
	roots := x509.NewCertPool()
	bundle, err := parseCertsFile(bundlePath)
	require.NoError(t, err)
	for _, c := range bundle {
		roots.AddCert(c)
	}
	leaf, err := parseCertsFile(certPath)
	require.NoError(t, err)
	_, err = leaf[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	require.NoError(t, err)

	// The state as `status` sees it.
	require.Eventually(t, func() bool { return outputState(m, "web").Serial == serialString(leaf[0].SerialNumber) }, waitFor, tick)
	js, err := json.Marshal(m.Snapshot())
	require.NoError(t, err)
	for _, want := range []string{`"connected":true`, `"name":"web"`, `"spiffe_id":"spiffe://example.org/workload"`,
		`"expiry":"ok"`, `"expiry_rule":"rotation overdue: less than a third of the lifetime left"`, `"files":["cert.pem","key.pem","bundle.pem"]`} {
		require.Contains(t, string(js), want)
	}

	// Metrics on the given registry only.
	// (Eventually: the counter moves just after the files hit the disk.)
	require.Eventually(t, func() bool {
		rot, ok, err := metricstest.Lookup(reg, "identity_agent_rotations_total", map[string]string{"output": "web"})
		return err == nil && ok && rot == 3
	}, waitFor, tick)
	exp := metricstest.Value(t, reg, "identity_agent_svid_expiry_timestamp_seconds",
		map[string]string{"output": "web", "spiffe_id": "spiffe://example.org/workload"})
	require.Equal(t, float64(leaf[0].NotAfter.Unix()), exp)
	_, err = NewManager(e.src, []Output{{Name: "x", Dir: t.TempDir(), Formats: []Format{&PEM{CertFile: "c"}}}}, WithRegisterer(reg))
	require.ErrorContains(t, err, "already registered")
	// A registration that failed half-way left nothing behind, and Close
	// (which stops the running Manager) frees the names for the next one.
	require.NoError(t, m.Close())
	m2, err := NewManager(e.src, []Output{{Name: "x", Dir: t.TempDir(), Formats: []Format{&PEM{CertFile: "c"}}}}, WithRegisterer(reg))
	require.NoError(t, err)
	require.NoError(t, m2.Close())
}

func TestCloseUnregistersMetrics(t *testing.T) {
	src := svid.NewSource(svid.WithAddr("unix:///nonexistent/socket"))
	reg := prometheus.NewRegistry()
	outs := []Output{{Name: "x", Dir: t.TempDir(), Formats: []Format{&PEM{CertFile: "c"}}}}
	m, err := NewManager(src, outs, WithRegisterer(reg))
	require.NoError(t, err)
	_, err = NewManager(src, outs, WithRegisterer(reg))
	require.ErrorContains(t, err, "already registered")
	require.NoError(t, m.Close())
	_, err = NewManager(src, outs, WithRegisterer(reg))
	require.NoError(t, err)
}

func TestOutputsPickSVIDByHint(t *testing.T) {
	idA := spiffeid.RequireFromString("spiffe://example.org/a")
	idB := spiffeid.RequireFromString("spiffe://example.org/b")
	e := newEnv(t, svidtest.Config{Identities: []svidtest.Identity{{ID: idA, Hint: "a"}, {ID: idB, Hint: "b"}}}, true)
	base := t.TempDir()
	m := newTestManager(t, e, []Output{
		{Name: "a", Selector: svidSelector("", "a"), Dir: filepath.Join(base, "a"), Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem"}}},
		{Name: "b", Selector: svidSelector(idB.String(), "b"), Dir: filepath.Join(base, "b"), Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem"}}}})
	runManager(t, m)
	for round := 0; round < 2; round++ {
		for _, c := range []struct {
			name string
			id   spiffeid.ID
		}{{"a", idA}, {"b", idB}} {
			p := filepath.Join(base, c.name, "cert.pem")
			waitSerial(t, p, currentSerial(e, c.name))
			certs, err := parseCertsFile(p)
			require.NoError(t, err)
			require.Len(t, certs[0].URIs, 1)
			require.Equal(t, c.id.String(), certs[0].URIs[0].String())
			_, err = tls.LoadX509KeyPair(p, filepath.Join(base, c.name, "key.pem"))
			require.NoError(t, err)
		}
		require.NoError(t, e.srv.RotateSVIDs())
	}
	st := m.Snapshot()
	require.Len(t, st.SVIDs, 2)
	require.Equal(t, "a", st.SVIDs[0].Hint)
}

func TestFederatedBundleIncludedOrExcluded(t *testing.T) {
	other := spiffeid.RequireTrustDomainFromString("other.org")
	e := newEnv(t, svidtest.Config{Federated: []spiffeid.TrustDomain{other}}, true)
	base := t.TempDir()
	m := newTestManager(t, e, []Output{
		{Name: "fed", Dir: filepath.Join(base, "fed"), IncludeFederated: true, Formats: []Format{&PEM{BundleFile: "bundle.pem"}, &JWT{BundleFile: "jwks.json"}}},
		{Name: "own", Dir: filepath.Join(base, "own"), Formats: []Format{&PEM{BundleFile: "bundle.pem"}, &JWT{BundleFile: "jwks.json"}}}})
	runManager(t, m)
	own := e.srv.CA().X509Bundle().X509Authorities()
	fed := e.srv.FederatedCA(other).X509Bundle().X509Authorities()
	require.Eventually(t, func() bool {
		got, err := parseCertsFile(filepath.Join(base, "fed", "bundle.pem"))
		return err == nil && sameCerts(got, append(append([]*x509.Certificate{}, own...), fed...))
	}, waitFor, tick, "federated roots missing from the fed output")
	require.Eventually(t, func() bool {
		got, err := parseCertsFile(filepath.Join(base, "own", "bundle.pem"))
		return err == nil && sameCerts(got, own)
	}, waitFor, tick, "own output must hold only its trust domain's roots")

	// JWKS: the federated output carries both trust domains' keys.
	require.Eventually(t, func() bool {
		_, errOwn := os.Stat(filepath.Join(base, "own", "jwks.json"))
		_, errFed := os.Stat(filepath.Join(base, "fed", "jwks.json"))
		return errOwn == nil && errFed == nil
	}, waitFor, tick)
	ownJWKS, err := jwtbundle.Parse(td, mustRead(t, filepath.Join(base, "own", "jwks.json")))
	require.NoError(t, err)
	require.Len(t, ownJWKS.JWTAuthorities(), 1)
	fedJWKS, err := jwtbundle.Parse(td, mustRead(t, filepath.Join(base, "fed", "jwks.json")))
	require.NoError(t, err)
	require.Len(t, fedJWKS.JWTAuthorities(), 2)
	for kid := range e.srv.FederatedCA(other).JWTBundle().JWTAuthorities() {
		require.True(t, fedJWKS.HasJWTAuthority(kid))
		require.False(t, ownJWKS.HasJWTAuthority(kid))
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}

func TestJWTTokenAndJWKSFiles(t *testing.T) {
	e := newEnv(t, svidtest.Config{JWTTTL: 4 * time.Second}, true)
	dir := t.TempDir()
	m := newTestManager(t, e, []Output{{Name: "jwt", Dir: dir, Formats: []Format{&JWT{Tokens: []JWTFile{{Audience: []string{"db", "cache"}, File: "db.jwt"}}, BundleFile: "jwks.json"}}}})
	runManager(t, m)
	tokenPath, jwksPath := filepath.Join(dir, "db.jwt"), filepath.Join(dir, "jwks.json")

	validate := func() *jwtsvid.SVID {
		t.Helper()
		bundle, err := jwtbundle.Parse(td, mustRead(t, jwksPath))
		require.NoError(t, err)
		tok := strings.TrimSpace(string(mustRead(t, tokenPath)))
		sv, err := jwtsvid.ParseAndValidate(tok, jwtbundle.NewSet(bundle), []string{"db"})
		require.NoError(t, err)
		require.Equal(t, "spiffe://example.org/workload", sv.ID.String())
		require.ElementsMatch(t, []string{"db", "cache"}, sv.Audience)
		return sv
	}
	require.Eventually(t, func() bool {
		_, e1 := os.Stat(tokenPath)
		_, e2 := os.Stat(jwksPath)
		return e1 == nil && e2 == nil
	}, waitFor, tick)
	first := validate()
	for name, mode := range map[string]os.FileMode{"db.jwt": 0o600, "jwks.json": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), name)
	}

	// Refreshed at half its 4s lifetime without any X.509 push (TTL is 1h).
	pushes := e.src.Status().X509Updates
	require.Eventually(t, func() bool {
		tok, err := os.ReadFile(tokenPath)
		return err == nil && strings.TrimSpace(string(tok)) != first.Marshal()
	}, waitFor, tick, "token never refreshed")
	second := validate()
	require.Equal(t, pushes, e.src.Status().X509Updates, "refresh must come from the token timer, not a push")
	require.True(t, second.Expiry.After(first.Expiry) || second.Marshal() != first.Marshal())
	st := outputState(m, "jwt")
	require.Len(t, st.JWT, 1)
	require.False(t, st.JWT[0].Expiry.IsZero())
	require.True(t, st.Healthy(), "%+v", st)
}

func TestJWTRefreshedOnX509Push(t *testing.T) {
	e := newEnv(t, svidtest.Config{JWTTTL: time.Hour}, true)
	dir := t.TempDir()
	m := newTestManager(t, e, []Output{{Name: "jwt", Dir: dir, Formats: []Format{&PEM{CertFile: "cert.pem"}, &JWT{Tokens: []JWTFile{{Audience: []string{"db"}, File: "db.jwt"}}}}}})
	runManager(t, m)
	tokenPath := filepath.Join(dir, "db.jwt")
	waitSerial(t, filepath.Join(dir, "cert.pem"), currentSerial(e, ""))
	_ = mustRead(t, tokenPath)
	// SPIRE's agent (and the dev API) answers the cached token until half
	// of its lifetime: what the push must cause is the request.
	asked := e.srv.JWTSVIDRequests()
	require.NoError(t, e.srv.RotateSVIDs())
	waitSerial(t, filepath.Join(dir, "cert.pem"), currentSerial(e, ""))
	require.Eventually(t, func() bool {
		return e.srv.JWTSVIDRequests() > asked
	}, waitFor, tick, "an X.509 push must refresh the JWT too")
}

func TestWriteAll(t *testing.T) {
	e := newEnv(t, svidtest.Config{}, true)
	base := t.TempDir()
	m := newTestManager(t, e, []Output{
		{Name: "good", Dir: filepath.Join(base, "good"), Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem"}}},
		{Name: "bad", Selector: svidSelector("", "nope"), Dir: filepath.Join(base, "bad"), Formats: []Format{&PEM{CertFile: "cert.pem"}}},
		// JWT bundles come on their own stream; WriteAll waits for them.
		{Name: "jwt", Dir: filepath.Join(base, "jwt"), Formats: []Format{&JWT{BundleFile: "jwks.json", Tokens: []JWTFile{{Audience: []string{"x"}, File: "x.jwt"}}}}}})
	err := m.WriteAll(context.Background())
	require.Error(t, err)
	require.Contains(t, err.Error(), `output "bad"`)
	require.Contains(t, err.Error(), `hint="nope"`)
	require.NotContains(t, err.Error(), `output "good"`)
	require.Zero(t, fileSerial(filepath.Join(base, "good", "cert.pem")).Cmp(currentSerial(e, "")))
	_, statErr := os.Stat(filepath.Join(base, "bad", "cert.pem"))
	require.ErrorIs(t, statErr, os.ErrNotExist)
	st := m.Snapshot()
	require.True(t, st.Outputs[0].Healthy())
	require.False(t, st.Outputs[1].Healthy())
	require.True(t, st.Outputs[2].Healthy())
	_, err = jwtbundle.Parse(td, mustRead(t, filepath.Join(base, "jwt", "jwks.json")))
	require.NoError(t, err)
	require.Contains(t, st.Outputs[1].LastWriteError, "nope")
}

// Material that fails validation (here: expired while the Workload API is
// gone) is never written; the last good files stay.
func TestExpiredMaterialIsNotWritten(t *testing.T) {
	e := newEnv(t, svidtest.Config{TTL: 3 * time.Second}, true)
	dir := t.TempDir()
	m := newTestManager(t, e, []Output{{Name: "web", Dir: dir, Formats: []Format{&PEM{CertFile: "cert.pem", KeyFile: "key.pem"}}}})
	require.NoError(t, m.WriteAll(context.Background()))
	certPath := filepath.Join(dir, "cert.pem")
	before := mustRead(t, certPath)
	e.srv.Stop()
	require.Eventually(t, func() bool { return !e.src.Status().Connected }, waitFor, tick)
	// The Source keeps its last context; wait until that SVID expired.
	x := e.src.X509Context()
	time.Sleep(time.Until(x.SVIDs[0].Certificates[0].NotAfter) + 100*time.Millisecond)
	// Remove the files so that a write would be visible.
	require.NoError(t, os.Remove(certPath))
	err := m.WriteAll(context.Background())
	require.ErrorContains(t, err, `output "web": validate SVID spiffe://example.org/workload`)
	_, statErr := os.Lstat(certPath)
	require.ErrorIs(t, statErr, os.ErrNotExist, "expired material was written")
	st := outputState(m, "web")
	require.False(t, st.Healthy())
	require.Equal(t, ExpiryExpired, st.Expiry)
	require.NotEmpty(t, st.LastWriteError)
	require.NotEmpty(t, before)
}
