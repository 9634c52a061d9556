package svidtest_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// update is one X.509 context as a go-spiffe client received it.
type update struct {
	at     time.Time
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

// watch streams X.509 contexts from srv over the real gRPC Workload API
// until the test ends.
func watch(t *testing.T, srv *svidtest.Server) <-chan update {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	ch := make(chan update, 256)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = client.WatchX509Context(ctx, ctxWatcher{ctx: ctx, ch: ch})
	}()
	t.Cleanup(func() { cancel(); _ = client.Close(); wg.Wait() })
	return ch
}

type ctxWatcher struct {
	ctx context.Context
	ch  chan update
}

func (w ctxWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	b, _ := c.Bundles.Get(td)
	select {
	case w.ch <- update{at: time.Now(), svid: c.DefaultSVID(), bundle: b}:
	case <-w.ctx.Done():
	}
}
func (w ctxWatcher) OnX509ContextWatchError(error) {}

func next(t *testing.T, ch <-chan update) update {
	t.Helper()
	select {
	case u := <-ch:
		return u
	case <-time.After(20 * time.Second):
		t.Fatal("no X.509 context pushed within 20s")
		return update{}
	}
}

func signedBy(sv *x509svid.SVID, root *x509.Certificate) bool {
	return bytes.Equal(sv.Certificates[0].AuthorityKeyId, root.SubjectKeyId)
}

func verifies(sv *x509svid.SVID, b *x509bundle.Bundle) bool {
	_, _, err := x509svid.Verify(sv.Certificates, b)
	return err == nil
}

// untilSignedByOther collects updates until one carries an SVID that old
// did not sign.
func untilSignedByOther(t *testing.T, ch <-chan update, old *x509.Certificate) []update {
	t.Helper()
	var got []update
	for {
		u := next(t, ch)
		got = append(got, u)
		if !signedBy(u.svid, old) {
			return got
		}
	}
}

// RotateCA publishes the next root before anything chains to it, as a
// SPIRE server does: the client first receives a bundle with both roots
// and its old SVID, and only later an SVID signed by the new root. Every
// SVID pushed verifies against the bundle pushed before it, so a peer
// that is one update behind still accepts it.
func TestRotateCAPublishesTheRootBeforeSigning(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour, CAActivationDelay: time.Hour})
	ch := watch(t, srv)
	first := next(t, ch)
	oldRoot := srv.CA().Root()
	require.True(t, signedBy(first.svid, oldRoot))
	require.Len(t, first.bundle.X509Authorities(), 1)

	require.NoError(t, srv.RotateCA())
	prepared := next(t, ch)
	assert.Equal(t, first.svid.Certificates[0].SerialNumber, prepared.svid.Certificates[0].SerialNumber,
		"preparing a CA changes the bundle, not the SVID")
	require.Len(t, prepared.bundle.X509Authorities(), 2, "the next root is published at once")
	assert.True(t, prepared.bundle.HasX509Authority(oldRoot))
	assert.Equal(t, 1, srv.CA().Prepared())
	assert.Equal(t, oldRoot, srv.CA().Root(), "the old root still signs")

	// Half-life rotations before the activation are still signed by the old root.
	require.NoError(t, srv.RotateSVIDs())
	again := next(t, ch)
	assert.NotEqual(t, first.svid.Certificates[0].SerialNumber, again.svid.Certificates[0].SerialNumber)
	assert.True(t, signedBy(again.svid, oldRoot), "no SVID chains to the new root before activation")

	activated, err := srv.ActivateCA()
	require.NoError(t, err)
	require.True(t, activated)
	got := untilSignedByOther(t, ch, oldRoot)
	newSVID := got[len(got)-1]
	newRoot := srv.CA().Root()
	assert.True(t, signedBy(newSVID.svid, newRoot))
	assert.True(t, prepared.bundle.HasX509Authority(newRoot), "the new root was in the bundle pushed before")
	assert.True(t, newSVID.bundle.HasX509Authority(oldRoot), "the old root stays while its SVIDs are valid")

	all := append([]update{first, prepared, again}, got...)
	for i := 1; i < len(all); i++ {
		assert.True(t, verifies(all[i].svid, all[i-1].bundle), "update %d's SVID fails against the bundle of update %d", i, i-1)
	}
	assert.Zero(t, srv.CA().Prepared())
	ok, err := srv.ActivateCA()
	require.NoError(t, err)
	assert.False(t, ok, "nothing left to activate")
}

// Without a call to ActivateCA, the prepared CA activates after
// CAActivationDelay; the ordering holds as above.
func TestRotateCAActivatesAfterTheDelay(t *testing.T) {
	const delay = 2 * time.Second
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour, CAActivationDelay: delay})
	ch := watch(t, srv)
	first := next(t, ch)
	oldRoot := srv.CA().Root()

	require.NoError(t, srv.RotateCA())
	rotated := time.Now()
	got := untilSignedByOther(t, ch, oldRoot)
	assert.GreaterOrEqual(t, time.Since(rotated), delay, "activated before its delay")
	require.GreaterOrEqual(t, len(got), 2, "the bundle with the new root came in its own push, before the new SVID")
	assert.True(t, signedBy(got[0].svid, oldRoot))
	assert.Len(t, got[0].bundle.X509Authorities(), 2)
	all := append([]update{first}, got...)
	for i := 1; i < len(all); i++ {
		assert.True(t, verifies(all[i].svid, all[i-1].bundle), "update %d's SVID fails against the bundle of update %d", i, i-1)
	}
}

// Several rotations in a row activate in order, each after its own delay,
// and the bundle always holds the root of every SVID served.
func TestRotateCAQueuesRotations(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour, CAActivationDelay: 300 * time.Millisecond})
	ch := watch(t, srv)
	prev := next(t, ch)
	root0 := srv.CA().Root()
	require.NoError(t, srv.RotateCA())
	require.NoError(t, srv.RotateCA())
	for {
		u := next(t, ch)
		assert.True(t, verifies(u.svid, prev.bundle), "an SVID chains to a root the previous push did not carry")
		assert.True(t, verifies(u.svid, u.bundle))
		prev = u
		if srv.CA().Prepared() == 0 && signedBy(u.svid, srv.CA().Root()) {
			break
		}
	}
	assert.False(t, srv.CA().Root().Equal(root0))
	// The first root's SVIDs are valid for an hour: it stays. The second
	// stays too if it signed anything before the third took over.
	assert.True(t, prev.bundle.HasX509Authority(root0))
	assert.True(t, prev.bundle.HasX509Authority(srv.CA().Root()))
}

// The unsafe mode keeps the old behaviour on purpose: the new root and
// the SVIDs it signs arrive in the same push, so a peer holding the
// previous bundle rejects them.
func TestUnsafeImmediateCASwitch(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour, UnsafeImmediateCASwitch: true})
	ch := watch(t, srv)
	first := next(t, ch)
	oldRoot := srv.CA().Root()
	require.NoError(t, srv.RotateCA())
	u := next(t, ch)
	assert.False(t, signedBy(u.svid, oldRoot), "the first push after RotateCA is signed by the new root")
	assert.True(t, verifies(u.svid, u.bundle))
	assert.False(t, verifies(u.svid, first.bundle), "a peer one update behind rejects it")
	assert.Zero(t, srv.CA().Prepared())
}

// A retired root stays in the bundle exactly as long as an SVID it signed
// is still valid, then leaves it with a later push; its JWT key likewise
// keeps validating what it signed.
func TestRetiredRootStaysWhileItsSVIDsAreValid(t *testing.T) {
	const ttl = 2 * time.Second
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: ttl, CAActivationDelay: 200 * time.Millisecond, JWTTTL: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	defer client.Close()
	oldToken, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "db"})
	require.NoError(t, err)

	ch := watch(t, srv)
	oldRoot := srv.CA().Root()
	var oldExpiry time.Time // the latest NotAfter of an SVID the old root signed
	require.NoError(t, srv.RotateCA())
	for {
		u := next(t, ch)
		if signedBy(u.svid, oldRoot) && u.svid.Certificates[0].NotAfter.After(oldExpiry) {
			oldExpiry = u.svid.Certificates[0].NotAfter
		}
		if !u.bundle.HasX509Authority(oldRoot) {
			// Received after the server dropped the root: by then every
			// SVID it signed had expired.
			assert.False(t, u.at.Before(oldExpiry), "old root dropped at %s while its SVID is valid until %s", u.at, oldExpiry)
			assert.True(t, verifies(u.svid, u.bundle))
			require.Len(t, u.bundle.X509Authorities(), 1)
			break
		}
		if u.at.Before(oldExpiry) {
			assert.True(t, verifies(u.svid, u.bundle))
		}
	}
	// The JWT key retired with the root still validates its token, which
	// is valid for a minute.
	_, err = client.ValidateJWTSVID(ctx, oldToken.Marshal(), "db")
	require.NoError(t, err, "a JWT-SVID signed before the rotation must validate while it is valid")
}

func TestNegativeDurationsRejected(t *testing.T) {
	for _, cfg := range []svidtest.Config{
		{TrustDomain: td, TTL: -time.Second},
		{TrustDomain: td, JWTTTL: -time.Second},
		{TrustDomain: td, CAActivationDelay: -time.Second},
	} {
		_, err := svidtest.New(cfg)
		require.ErrorContains(t, err, "must not be negative")
	}
}
