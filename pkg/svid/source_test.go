package svid_test

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	tdMain = spiffeid.RequireTrustDomainFromString("example.org")
	tdFed  = spiffeid.RequireTrustDomainFromString("partner.test")
	idA    = spiffeid.RequireFromString("spiffe://example.org/a")
	idB    = spiffeid.RequireFromString("spiffe://example.org/b")
)

const waitFor = 30 * time.Second

func startSource(t *testing.T, addr string, opts ...svid.SourceOption) *svid.Source {
	t.Helper()
	opts = append([]svid.SourceOption{
		svid.WithAddr(addr),
		svid.WithLogger(zaptest.NewLogger(t)),
		// Fast retries keep the outage tests short; production uses 1s..30s.
		svid.WithBackoff(50*time.Millisecond, 500*time.Millisecond),
	}, opts...)
	src := svid.NewSource(opts...)
	require.NoError(t, src.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, src.Close()) })
	return src
}

func waitReady(t *testing.T, src *svid.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	require.NoError(t, src.WaitReady(ctx))
}

func serial(sv *x509svid.SVID) string { return sv.Certificates[0].SerialNumber.Text(16) }

func leakCheck(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	// Registered first, so it runs last: after the source is closed and
	// the dev server stopped.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func TestSourceFirstUpdateAndRotation(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour})
	src := startSource(t, srv.Addr())

	assert.Nil(t, src.X509Context(), "nothing before ready")
	waitReady(t, src)

	first, err := src.GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, "spiffe://example.org/workload", first.ID.String())
	assert.Equal(t, serial(srv.CurrentSVIDs()[0]), serial(first))
	st := src.Status()
	assert.True(t, st.Connected)
	assert.Equal(t, srv.Addr(), st.Addr)
	assert.GreaterOrEqual(t, st.X509Updates, uint64(1))
	assert.Zero(t, st.Reconnects)

	updates, cancel := src.Subscribe()
	defer cancel()
	require.NoError(t, srv.RotateSVIDs())
	want := serial(srv.CurrentSVIDs()[0])
	require.NotEqual(t, serial(first), want)
	deadline := time.After(waitFor)
	for {
		select {
		case <-updates:
		case <-deadline:
			t.Fatalf("rotated SVID %s never arrived", want)
		}
		cur, err := src.GetX509SVID()
		require.NoError(t, err)
		if serial(cur) == want {
			break
		}
	}
	assert.GreaterOrEqual(t, src.Status().X509Updates, uint64(2))
}

// A TLS server built on X509SVIDSource presents the SVID current at each
// handshake, so a rotation needs no restart of the listener.
func TestSourceTLSHandshakeSeesRotation(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour})
	src := startSource(t, srv.Addr())
	waitReady(t, src)

	ln, err := tls.Listen("tcp", "127.0.0.1:0",
		tlsconfig.MTLSServerConfig(src.X509SVIDSource(svid.Selector{}), src, tlsconfig.AuthorizeMemberOf(tdMain)))
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	defer func() { _ = ln.Close(); <-done }()

	peerSerial := func() string {
		conn, err := tls.Dial("tcp", ln.Addr().String(),
			tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/workload"))))
		require.NoError(t, err)
		defer func() { _ = conn.Close() }()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
	}
	assert.Equal(t, serial(srv.CurrentSVIDs()[0]), peerSerial())
	require.NoError(t, srv.RotateSVIDs())
	want := serial(srv.CurrentSVIDs()[0])
	require.Eventually(t, func() bool { return peerSerial() == want }, waitFor, 20*time.Millisecond)
}

func TestSourceSelectsByHintAndID(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour, Identities: []svidtest.Identity{
		{ID: idA, Hint: "a"}, {ID: idB, Hint: "b"},
	}})
	src := startSource(t, srv.Addr(), svid.WithDefaultSelector(svid.Selector{Hint: "b"}))
	waitReady(t, src)

	byHint, err := src.X509SVIDSource(svid.Selector{Hint: "b"}).GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, idB, byHint.ID)
	byID, err := src.X509SVIDSource(svid.Selector{SpiffeID: idA.String()}).GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, idA, byID.ID)
	first, err := src.X509SVIDSource(svid.Selector{}).GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, idA, first.ID)
	def, err := src.GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, idB, def.ID, "WithDefaultSelector")

	_, err = src.X509SVIDSource(svid.Selector{Hint: "c"}).GetX509SVID()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `hint="c"`)
	assert.Contains(t, err.Error(), `spiffe://example.org/a (hint "a")`)
	assert.Contains(t, err.Error(), `spiffe://example.org/b (hint "b")`)

	// The view picks on every call: after a rotation it returns the new SVID.
	view := src.X509SVIDSource(svid.Selector{Hint: "b"})
	require.NoError(t, srv.RotateSVIDs())
	var want string
	for _, sv := range srv.CurrentSVIDs() {
		if sv.ID == idB {
			want = serial(sv)
		}
	}
	require.Eventually(t, func() bool {
		sv, err := view.GetX509SVID()
		return err == nil && serial(sv) == want
	}, waitFor, 10*time.Millisecond)

	// JWT-SVIDs are selected the same way.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	jwt, err := src.FetchJWTSVID(ctx, svid.Selector{SpiffeID: idB.String()}, []string{"redis", "extra"})
	require.NoError(t, err)
	assert.Equal(t, idB, jwt.ID)
	assert.Equal(t, []string{"redis", "extra"}, jwt.Audience)
	_, err = src.FetchJWTSVID(ctx, svid.Selector{}, nil)
	require.ErrorContains(t, err, "audience is empty")
}

func TestSourceFederatedAndJWTBundles(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour, Federated: []spiffeid.TrustDomain{tdFed}})
	src := startSource(t, srv.Addr())
	waitReady(t, src)

	own, err := src.GetX509BundleForTrustDomain(tdMain)
	require.NoError(t, err)
	assert.True(t, own.Equal(srv.CA().X509Bundle()))
	fed, err := src.GetX509BundleForTrustDomain(tdFed)
	require.NoError(t, err)
	assert.True(t, fed.Equal(srv.FederatedCA(tdFed).X509Bundle()))
	_, err = src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("nowhere.test"))
	require.ErrorContains(t, err, `no X.509 bundle for trust domain "nowhere.test"`)

	bundles := svid.BundleCerts(src.X509Context(), tdMain, true, false)
	require.Len(t, bundles, 2)
	assert.Equal(t, srv.CA().X509Bundle().X509Authorities()[0].Raw, bundles[0].Raw)
	assert.Equal(t, srv.FederatedCA(tdFed).X509Bundle().X509Authorities()[0].Raw, bundles[1].Raw)

	require.Eventually(t, func() bool { return src.JWTBundles() != nil }, waitFor, 10*time.Millisecond)
	jb, err := src.GetJWTBundleForTrustDomain(tdMain)
	require.NoError(t, err)
	assert.True(t, jb.Equal(srv.CA().JWTBundle()))
	assert.GreaterOrEqual(t, src.Status().JWTBundleUpdates, uint64(1))

	// A JWT-SVID from the API validates against the streamed JWT bundles.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	tok, err := src.FetchJWTSVID(ctx, svid.Selector{}, []string{"api"})
	require.NoError(t, err)
	parsed, err := jwtsvid.ParseAndValidate(tok.Marshal(), jwtbundle.Source(src), []string{"api"})
	require.NoError(t, err)
	assert.Equal(t, "spiffe://example.org/workload", parsed.ID.String())
}

func TestSourceWaitReadyWhenAPIStartsLate(t *testing.T) {
	leakCheck(t)
	sock := filepath.Join(svidtest.ShortDir(t, "svid"), "api.sock")
	srv := svidtest.NewUnstarted(t, svidtest.Config{TTL: time.Hour})
	src := startSource(t, "unix://"+sock)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := src.WaitReady(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool { return src.Status().LastError != "" }, waitFor, 10*time.Millisecond)
	assert.False(t, src.Status().Connected)
	_, err = src.GetX509SVID()
	require.ErrorIs(t, err, svid.ErrNotReady)

	require.NoError(t, srv.Start(sock))
	waitReady(t, src)
	sv, err := src.GetX509SVID()
	require.NoError(t, err)
	assert.Equal(t, serial(srv.CurrentSVIDs()[0]), serial(sv))
	assert.True(t, src.Status().Connected)
	assert.Zero(t, src.Status().Reconnects, "the first connection is not a reconnect")
}

func TestSourceRecoversAfterRestart(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour})
	src := startSource(t, srv.Addr())
	waitReady(t, src)

	srv.Stop()
	require.Eventually(t, func() bool { return !src.Status().Connected }, waitFor, 10*time.Millisecond)
	assert.NotEmpty(t, src.Status().LastError)
	// The last good material stays available during the outage.
	_, err := src.GetX509SVID()
	require.NoError(t, err)

	require.NoError(t, srv.Start(srv.SocketPath()))
	require.Eventually(t, func() bool {
		st := src.Status()
		return st.Connected && st.Reconnects == 1
	}, waitFor, 10*time.Millisecond)

	require.NoError(t, srv.RotateSVIDs())
	want := serial(srv.CurrentSVIDs()[0])
	require.Eventually(t, func() bool {
		sv, err := src.GetX509SVID()
		return err == nil && serial(sv) == want
	}, waitFor, 10*time.Millisecond)
}

func TestSourceStartErrors(t *testing.T) {
	src := svid.NewSource(svid.WithAddr("ftp://nope"))
	err := src.Start(context.Background())
	require.ErrorContains(t, err, `workload API address "ftp://nope"`)
	require.NoError(t, src.Close())

	src = svid.NewSource(svid.WithAddr("unix:///nonexistent/agent.sock"))
	require.NoError(t, src.Start(context.Background()))
	require.ErrorContains(t, src.Start(context.Background()), "already started")
	require.NoError(t, src.Close())
	require.NoError(t, src.Close(), "Close twice")
	require.ErrorContains(t, src.WaitReady(context.Background()), "closed")
	_, err = src.FetchJWTSVID(context.Background(), svid.Selector{}, []string{"x"})
	require.ErrorContains(t, err, "closed")
}

// With the workload's last identity deleted the Workload API answers
// PermissionDenied: the Source says so in its status (not just
// "disconnected"), keeps the last X.509 context, and recovers on its own
// once an identity is issued again.
func TestSourceReportsNoIdentityIssued(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour, Identities: []svidtest.Identity{{ID: idA, Hint: "a"}}})
	src := startSource(t, srv.Addr())
	waitReady(t, src)
	held := serial(srv.CurrentSVIDs()[0])

	ok, err := srv.RemoveIdentity(idA)
	require.NoError(t, err)
	require.True(t, ok)
	require.Eventually(t, func() bool { return src.Status().NoIdentity }, waitFor, 10*time.Millisecond)
	st := src.Status()
	assert.False(t, st.Connected)
	assert.Contains(t, st.Reason, "no identity issued to this workload (uid ")
	assert.Contains(t, st.Reason, "registration entries deleted or not yet propagated")
	assert.Contains(t, st.LastError, "PermissionDenied")
	sv, err := src.GetX509SVID()
	require.NoError(t, err, "the last good SVID stays available")
	assert.Equal(t, held, serial(sv))

	require.NoError(t, srv.AddIdentity(svidtest.Identity{ID: idA, Hint: "a"}))
	require.Eventually(t, func() bool {
		st := src.Status()
		return st.Connected && !st.NoIdentity && st.Reason == ""
	}, waitFor, 10*time.Millisecond)
	sv, err = src.GetX509SVID()
	require.NoError(t, err)
	assert.NotEqual(t, held, serial(sv), "the re-issued SVID replaces the held one")
}
