package rotation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"software.sslmate.com/src/go-pkcs12"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var tdFed = spiffeid.RequireTrustDomainFromString("partner.test")

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (scripts/deps.sh installs it)", name)
		}
		t.Skipf("%s not installed", name)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), out)
	return string(out)
}

// opensslSerialOf is `openssl x509 -serial` of the first certificate in a
// file that may hold a key too.
func opensslSerialOf(t *testing.T, path string) string {
	t.Helper()
	out := strings.TrimSpace(run(t, "openssl", "x509", "-noout", "-serial", "-in", path))
	s, ok := strings.CutPrefix(out, "serial=")
	require.True(t, ok, out)
	return s
}

func hexOf(n *big.Int) string { return serialString(n) }

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Mode().Perm()
}

// pythonLoads has Python's ssl module (OpenSSL underneath) load a server
// certificate and key from one combined file, as a Python service given
// only certfile= does; it fails if the key does not match.
func pythonLoads(t *testing.T, path string) {
	t.Helper()
	run(t, "/usr/bin/python3", "-c", "import ssl,sys; c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1])", path)
}

// Every format, read back by tools that are not Go, before and after a
// rotation; PKCS#12 files are not rewritten by a pass that changes nothing
// even though their encoding is randomized.
func TestFormatsReadBackAcrossRotation(t *testing.T) {
	needTool(t, "openssl")
	needTool(t, "/usr/bin/python3")
	e := newEnv(t, svidtest.Config{Federated: []spiffeid.TrustDomain{tdFed}}, true)
	base := t.TempDir()
	pw := filepath.Join(base, "p12.pass")
	require.NoError(t, os.WriteFile(pw, []byte("correct horse battery\n"), 0o600))
	outs := []Output{
		{Name: "haproxy", Dir: filepath.Join(base, "haproxy"), CombinedFile: "crt.pem", CombinedOrder: svid.ChainFirst},
		{Name: "mongo", Dir: filepath.Join(base, "mongo"), CombinedFile: "mongo.pem", BundleDir: "bundles"},
		{Name: "fsd", Dir: filepath.Join(base, "fsd"), Layout: LayoutSPIFFEFSDelivery},
		{Name: "java", Dir: filepath.Join(base, "java"), PKCS12: PKCS12{KeystoreFile: "keystore.p12", TruststoreFile: "truststore.p12", PasswordFile: pw}, IncludeFederated: true},
	}
	w := newWrites()
	m := newTestManager(t, e, outs, withWriteHook(w.hook))
	runManager(t, m)

	check := func(want *big.Int) {
		t.Helper()
		serial := hexOf(want)
		for _, p := range []string{"haproxy/crt.pem", "mongo/mongo.pem", "fsd/" + svid.FSDeliveryCredentialBundle} {
			path := filepath.Join(base, p)
			require.Eventually(t, func() bool { return fileSerialAny(path) == serial }, waitFor, tick, "%s never got serial %s", p, serial)
			assert.Equal(t, serial, opensslSerialOf(t, path), p)
			pythonLoads(t, path)
			assert.Equal(t, fs.FileMode(0o600), mode(t, path), "%s holds the key", p)
		}
		// The key of a combined file is the certificate's key, for OpenSSL too.
		for _, p := range []string{"haproxy/crt.pem", "mongo/mongo.pem"} {
			path := filepath.Join(base, p)
			assert.Equal(t, run(t, "openssl", "x509", "-noout", "-pubkey", "-in", path), run(t, "openssl", "pkey", "-pubout", "-in", path), p)
		}
		// Filesystem Delivery: key block first; the credential verifies
		// against its own trust domain's bundle and not the federated one.
		cred, err := os.ReadFile(filepath.Join(base, "fsd", svid.FSDeliveryCredentialBundle))
		require.NoError(t, err)
		first, _ := pem.Decode(cred)
		require.Equal(t, "PRIVATE KEY", first.Type)
		own := filepath.Join(base, "fsd", svid.FSDeliveryTrustBundleName(td))
		fed := filepath.Join(base, "fsd", svid.FSDeliveryTrustBundleName(tdFed))
		run(t, "openssl", "verify", "-CAfile", own, filepath.Join(base, "fsd", svid.FSDeliveryCredentialBundle))
		out, err := exec.Command("openssl", "verify", "-CAfile", fed, filepath.Join(base, "fsd", svid.FSDeliveryCredentialBundle)).CombinedOutput()
		require.Error(t, err, "a federated bundle must not vouch for our SVID: %s", out)
		// bundle_dir: one file per trust domain, same separation.
		run(t, "openssl", "verify", "-CAfile", filepath.Join(base, "mongo", "bundles", "example.org.pem"), filepath.Join(base, "mongo", "mongo.pem"))
		_, err = exec.Command("openssl", "verify", "-CAfile", filepath.Join(base, "mongo", "bundles", "partner.test.pem"), filepath.Join(base, "mongo", "mongo.pem")).CombinedOutput()
		require.Error(t, err)
		// PKCS#12, password from the file.
		ks := filepath.Join(base, "java", "keystore.p12")
		require.Eventually(t, func() bool {
			out, err := exec.Command("openssl", "pkcs12", "-in", ks, "-passin", "file:"+pw, "-nokeys", "-clcerts").Output()
			return err == nil && fileSerialAny2(out) == serial
		}, waitFor, tick, "keystore never got serial %s", serial)
		keyOut := run(t, "openssl", "pkcs12", "-in", ks, "-passin", "file:"+pw, "-nocerts", "-nodes")
		assert.Contains(t, keyOut, "PRIVATE KEY")
		assert.Equal(t, fs.FileMode(0o600), mode(t, ks))
		ts := filepath.Join(base, "java", "truststore.p12")
		tsOut := run(t, "openssl", "pkcs12", "-in", ts, "-passin", "file:"+pw, "-nokeys")
		assert.Equal(t, 2, strings.Count(tsOut, "BEGIN CERTIFICATE"), "own and federated root")
		assert.Equal(t, fs.FileMode(0o644), mode(t, ts))
		if _, err := exec.LookPath("keytool"); err == nil {
			out := run(t, "keytool", "-list", "-storetype", "PKCS12", "-keystore", ks, "-storepass:file", pw)
			assert.Contains(t, out, "PrivateKeyEntry")
			out = run(t, "keytool", "-list", "-storetype", "PKCS12", "-keystore", ts, "-storepass:file", pw)
			assert.Equal(t, 2, strings.Count(out, "trustedCertEntry"), out)
			assert.Contains(t, out, "partner.test-1")
		}
	}

	first := currentSerial(e, "")
	check(first)
	st := outputState(m, "mongo")
	assert.Equal(t, []string{"mongo.pem", "bundles/example.org.pem", "bundles/partner.test.pem"}, st.Files)

	// A pass that changes nothing rewrites nothing, PKCS#12 included.
	rotationsBefore := w.count("java", true)
	require.NoError(t, m.WriteAll(context.Background()))
	assert.Equal(t, rotationsBefore, w.count("java", true), "unchanged material must not re-encode the PKCS#12 files")

	require.NoError(t, e.srv.RotateSVIDs())
	second := currentSerial(e, "")
	require.NotEqual(t, first, second)
	check(second)
}

// fileSerialAny is the serial of the first CERTIFICATE block in a file that
// may start with a key, "" when there is none (yet).
func fileSerialAny(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return fileSerialAny2(data)
}

func fileSerialAny2(data []byte) string {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return ""
		}
		if b.Type == "CERTIFICATE" {
			if s := fileSerialFromDER(b.Bytes); s != "" {
				return s
			}
		}
	}
}

// A reader on its own schedule, opening the combined file in a tight loop
// across rotations, never gets a key that does not match the certificate
// nor a partial file.
func TestCombinedFileNeverTears(t *testing.T) {
	const rotations = 25
	e := newEnv(t, svidtest.Config{}, true)
	dir := filepath.Join(t.TempDir(), "out")
	m := newTestManager(t, e, []Output{{Name: "one", Dir: dir, CombinedFile: "tls.pem"}})
	runManager(t, m)
	path := filepath.Join(dir, "tls.pem")
	waitSerialAny(t, path, currentSerial(e, ""))

	// State follows the swap that made the file visible.
	require.Eventually(t, func() bool { return outputState(m, "one").Rotations == 1 }, waitFor, tick)
	var reads, torn atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(path)
			if err != nil {
				torn.Add(1) // a missing name is a failed read for the consumer too
				lastErr.Store(err.Error())
				continue
			}
			if _, err := tls.X509KeyPair(data, data); err != nil {
				torn.Add(1)
				lastErr.Store(err.Error())
			}
			reads.Add(1)
		}
	})
	for range rotations {
		require.NoError(t, e.srv.RotateSVIDs())
		waitSerialAny(t, path, currentSerial(e, ""))
	}
	close(stop)
	wg.Wait()
	t.Logf("combined_file: %d reads across %d rotations, %d torn", reads.Load(), rotations, torn.Load())
	require.Zero(t, torn.Load(), "torn reads; last error: %v", lastErr.Load())
	require.Greater(t, reads.Load(), int64(rotations), "the reader must have run throughout")
	require.Eventually(t, func() bool { return outputState(m, "one").Rotations == rotations+1 }, waitFor, tick, "one write per rotation")
}

func waitSerialAny(t *testing.T, path string, want *big.Int) {
	t.Helper()
	require.Eventually(t, func() bool { return fileSerialAny(path) == hexOf(want) }, waitFor, tick, "serial %x never reached %s", want, path)
}

func fileSerialFromDER(der []byte) string {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return ""
	}
	return serialString(c.SerialNumber)
}

// A federated trust domain that stops being sent keeps an empty file in
// the Filesystem Delivery layout (the draft's redaction), also across an
// agent restart; bundle_dir drops its file with the swap.
func TestFSDeliveryRedactsWithdrawnTrustDomain(t *testing.T) {
	ca, fedCA := newTestCA(t), newTestCA(t)
	now := time.Now()
	sv := ca.issue(t, "/web", 21, now.Add(-time.Minute), now.Add(time.Hour))
	withFed := ca.context(sv)
	withFed.Bundles.Add(x509bundle.FromX509Authorities(tdFed, []*x509.Certificate{fedCA.cert}))
	src := &fakeSource{x509: withFed}
	dir := filepath.Join(t.TempDir(), "out")
	outs := []Output{{Name: "web", Dir: dir, Layout: LayoutSPIFFEFSDelivery, BundleDir: "bundles"}}
	m, err := NewManager(src, outs, WithLogger(testLogger(t)))
	require.NoError(t, err)
	require.NoError(t, m.WriteAll(context.Background()))
	fed := filepath.Join(dir, svid.FSDeliveryTrustBundleName(tdFed))
	data, err := os.ReadFile(fed)
	require.NoError(t, err)
	require.Contains(t, string(data), "BEGIN CERTIFICATE")
	require.FileExists(t, filepath.Join(dir, "bundles", "partner.test.pem"))
	require.NoError(t, m.Close())

	// De-federated while the agent was down: a new Manager still knows.
	src.mu.Lock()
	src.x509 = ca.context(sv)
	src.mu.Unlock()
	m, err = NewManager(src, outs, WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	require.NoError(t, m.WriteAll(context.Background()))
	data, err = os.ReadFile(fed)
	require.NoError(t, err, "redacted by an empty file, not removed")
	assert.Empty(t, data)
	assert.Equal(t, fs.FileMode(0o644), mode(t, fed))
	own, err := os.ReadFile(filepath.Join(dir, svid.FSDeliveryTrustBundleName(td)))
	require.NoError(t, err)
	assert.Contains(t, string(own), "BEGIN CERTIFICATE")
	_, err = os.Stat(filepath.Join(dir, "bundles", "partner.test.pem"))
	assert.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, outputState(m, "web").Files, svid.FSDeliveryTrustBundleName(tdFed))
}

func TestFormatConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		o    Output
		want string
	}{
		{Output{Name: "x", Dir: dir, Layout: "k8s"}, `layout: "k8s": want "spiffe-fs-delivery"`},
		{Output{Name: "x", Dir: dir, Layout: LayoutSPIFFEFSDelivery, CertFile: svid.FSDeliveryCredentialBundle}, "is also used by cert_file"},
		{Output{Name: "x", Dir: dir, CombinedFile: "a/b"}, `combined_file: "a/b" must be a plain file name`},
		{Output{Name: "x", Dir: dir, CombinedFile: "tls.pem", KeyFile: "tls.pem"}, `combined_file: "tls.pem" is also used by key_file`},
		{Output{Name: "x", Dir: dir, BundleDir: "..b"}, `bundle_dir: "..b": names starting with ".." are reserved`},
		{Output{Name: "x", Dir: dir, PKCS12: PKCS12{KeystoreFile: "k.p12"}}, "pkcs12.password_file: is required"},
		{Output{Name: "x", Dir: dir, PKCS12: PKCS12{KeystoreFile: "k.p12", PasswordFile: "pw"}}, `pkcs12.password_file: "pw" must be an absolute path`},
		{Output{Name: "x", Dir: dir, CertFile: "c", PKCS12: PKCS12{PasswordFile: "/pw"}}, "neither keystore_file nor truststore_file"},
		{Output{Name: "x", Dir: dir, BundleFile: "b", Verify: fakeChecker{}}, "verify: needs a certificate"},
		{Output{Name: "x", Dir: dir, CombinedFile: "c", CombinedOrder: 7}, "combined_order: 7"},
	} {
		_, err := tc.o.normalize()
		require.ErrorContains(t, err, tc.want)
	}
	o, err := Output{Name: "x", Dir: dir, CombinedFile: "c", Verify: fakeChecker{}}.normalize()
	require.NoError(t, err)
	assert.Equal(t, DefaultVerifyTimeout, o.VerifyTimeout)
}

// A password file that is missing or empty stops the write and names the
// file, never a password.
func TestPKCS12PasswordFileErrors(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	src := &fakeSource{x509: ca.context(ca.issue(t, "/web", 22, now.Add(-time.Minute), now.Add(time.Hour)))}
	pw := filepath.Join(t.TempDir(), "pw")
	dir := filepath.Join(t.TempDir(), "out")
	m, err := NewManager(src, []Output{{Name: "web", Dir: dir, PKCS12: PKCS12{KeystoreFile: "k.p12", PasswordFile: pw}}}, WithLogger(testLogger(t)))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	require.ErrorContains(t, m.WriteAll(context.Background()), "pkcs12.password_file: open "+pw)
	require.NoError(t, os.WriteFile(pw, []byte("\n"), 0o600))
	require.ErrorContains(t, m.WriteAll(context.Background()), "pkcs12.password_file: "+pw+": empty")
	_, err = os.Lstat(filepath.Join(dir, "k.p12"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, os.WriteFile(pw, []byte("hunter2-but-long\r\n"), 0o600))
	require.NoError(t, m.WriteAll(context.Background()))
	data, err := os.ReadFile(filepath.Join(dir, "k.p12"))
	require.NoError(t, err)
	_, leaf, err := pkcs12.Decode(data, "hunter2-but-long")
	require.NoError(t, err)
	assert.Equal(t, big.NewInt(22), leaf.SerialNumber)
	assert.NotContains(t, outputState(m, "web").LastWriteError, "hunter2")

	// Every trailing line break goes, as "$(cat FILE)" and openssl's
	// -passin file: read it (internal/secretfile holds the rule).
	require.NoError(t, os.WriteFile(pw, []byte("hunter2-but-longer\n\n"), 0o600))
	require.NoError(t, m.WriteAll(context.Background()))
	data, err = os.ReadFile(filepath.Join(dir, "k.p12"))
	require.NoError(t, err)
	_, _, err = pkcs12.Decode(data, "hunter2-but-longer")
	require.NoError(t, err, "the password is the file without its trailing line breaks")
}

type fakeChecker struct{}

func (fakeChecker) Address() string { return "tcp://fake:1" }
func (fakeChecker) Served(context.Context, *tls.Certificate) (*x509.Certificate, error) {
	return nil, errors.New("fake")
}

// The guard restores files of a bundle_dir subdirectory: one deleted, one
// edited, a stray one dropped in, and the subdirectory link itself removed.
func TestGuardRestoresBundleDir(t *testing.T) {
	e := newEnv(t, svidtest.Config{Federated: []spiffeid.TrustDomain{tdFed}}, true)
	dir := filepath.Join(t.TempDir(), "out")
	m := newTestManager(t, e, []Output{{Name: "envoy", Dir: dir, CombinedFile: "tls.pem", BundleDir: "bundles"}})
	runManager(t, m)
	own, fed := filepath.Join(dir, "bundles", "example.org.pem"), filepath.Join(dir, "bundles", "partner.test.pem")
	waitSerialAny(t, filepath.Join(dir, "tls.pem"), currentSerial(e, ""))
	require.Eventually(t, func() bool { _, err := os.Stat(fed); return err == nil }, waitFor, tick)
	ownWant, err := os.ReadFile(own)
	require.NoError(t, err)
	fedWant, err := os.ReadFile(fed)
	require.NoError(t, err)
	same := func(p string, want []byte) func() bool {
		return func() bool { got, err := os.ReadFile(p); return err == nil && bytes.Equal(got, want) }
	}

	require.NoError(t, os.Remove(fed))
	require.Eventually(t, same(fed, fedWant), waitFor, tick, "deleted federated bundle not restored")
	require.NoError(t, os.WriteFile(own, []byte("-----BEGIN CERTIFICATE-----\nevil\n"), 0o644))
	require.Eventually(t, same(own, ownWant), waitFor, tick, "edited bundle not restored")
	stray := filepath.Join(dir, "bundles", "evil.test.pem")
	require.NoError(t, os.WriteFile(stray, fedWant, 0o644))
	require.Eventually(t, func() bool { _, err := os.Stat(stray); return errors.Is(err, fs.ErrNotExist) }, waitFor, tick,
		"a trust bundle slipped into bundles/ must not stay")
	require.NoError(t, os.Remove(filepath.Join(dir, "bundles")))
	require.Eventually(t, same(own, ownWant), waitFor, tick, "removed bundles link not restored")
	require.True(t, outputState(m, "envoy").Healthy())
}
