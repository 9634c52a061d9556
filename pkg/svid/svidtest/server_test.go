package svidtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	fedTD = spiffeid.RequireTrustDomainFromString("partner.test")
	idA   = spiffeid.RequireFromString("spiffe://example.org/a")
	idB   = spiffeid.RequireFromString("spiffe://example.org/b")
)

func TestX509ContextHintsAndFederation(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{
		TrustDomain: td,
		Identities:  []svidtest.Identity{{ID: idA, Hint: "a"}, {ID: idB, Hint: "b"}},
		Federated:   []spiffeid.TrustDomain{fedTD},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	x509ctx, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	require.Len(t, x509ctx.SVIDs, 2)
	assert.Equal(t, idA, x509ctx.SVIDs[0].ID)
	assert.Equal(t, "a", x509ctx.SVIDs[0].Hint)
	assert.Equal(t, "b", x509ctx.SVIDs[1].Hint)

	for _, sv := range x509ctx.SVIDs {
		_, _, err := x509svid.Verify(sv.Certificates, x509ctx.Bundles)
		require.NoError(t, err, "SVID %s must verify against the served bundle", sv.ID)
	}
	fed, ok := x509ctx.Bundles.Get(fedTD)
	require.True(t, ok, "federated bundle must be served")
	assert.True(t, fed.Equal(srv.FederatedCA(fedTD).X509Bundle()))

	// A certificate from the federated CA verifies through the same set.
	foreign, err := srv.FederatedCA(fedTD).IssueX509SVID(spiffeid.RequireFromString("spiffe://partner.test/x"), time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	_, _, err = x509svid.Verify(foreign.Certificates, x509ctx.Bundles)
	require.NoError(t, err)
}

func TestPushesRotationAtHalfLife(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	updates := make(chan *workloadapi.X509Context, 16)
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	defer client.Close()
	go func() {
		_ = client.WatchX509Context(ctx, watcher{updates})
	}()

	first := <-updates
	firstSerial := first.DefaultSVID().Certificates[0].SerialNumber
	select {
	case next := <-updates:
		assert.NotEqual(t, firstSerial, next.DefaultSVID().Certificates[0].SerialNumber, "half-life push must carry a new SVID")
	case <-ctx.Done():
		t.Fatal("no push at half-life")
	}
}

type watcher struct{ ch chan *workloadapi.X509Context }

func (w watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.ch <- c }
func (w watcher) OnX509ContextWatchError(error)                  {}

func TestJWTSVIDAndBundles(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, Identities: []svidtest.Identity{{ID: idA, Hint: "a"}, {ID: idB}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	defer client.Close()

	sv, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "redis", Subject: idB})
	require.NoError(t, err)
	assert.Equal(t, idB, sv.ID)

	bundles, err := client.FetchJWTBundles(ctx)
	require.NoError(t, err)
	parsed, err := jwtsvid.ParseAndValidate(sv.Marshal(), bundles, []string{"redis"})
	require.NoError(t, err)
	assert.Equal(t, idB, parsed.ID)

	validated, err := client.ValidateJWTSVID(ctx, sv.Marshal(), "redis")
	require.NoError(t, err)
	assert.Equal(t, idB, validated.ID)
	_, err = client.ValidateJWTSVID(ctx, sv.Marshal(), "other-audience")
	require.Error(t, err)

	_, err = client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x", Subject: spiffeid.RequireFromString("spiffe://example.org/unknown")})
	assert.Equal(t, codes.PermissionDenied, status.Code(err))
}

func TestSecurityHeaderRequired(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td})
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	stream, err := api.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	require.NoError(t, err)
	_, err = stream.Recv()
	assert.Equal(t, codes.InvalidArgument, status.Code(err))
	assert.Contains(t, err.Error(), "security header missing")

	_, err = api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"a"}})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))

	withHeader := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	_, err = api.FetchJWTSVID(withHeader, &workload.JWTSVIDRequest{})
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "audience is required, as in SPIRE")
}

func TestStopAndRestartKeepsCA(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)

	srv.Stop()
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = workloadapi.FetchX509Bundles(short, workloadapi.WithAddr(srv.Addr()))
	cancelShort()
	require.Error(t, err, "a stopped server must not answer")

	require.NoError(t, srv.Start(srv.SocketPath()))
	after, err := workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	b1, _ := before.Get(td)
	b2, _ := after.Get(td)
	assert.True(t, b1.Equal(b2))
}

func TestConfigErrors(t *testing.T) {
	_, err := svidtest.New(svidtest.Config{})
	require.ErrorContains(t, err, "trust domain is required")
	_, err = svidtest.New(svidtest.Config{TrustDomain: td, Identities: []svidtest.Identity{{ID: spiffeid.RequireFromString("spiffe://other.org/x")}}})
	require.ErrorContains(t, err, "not in trust domain")
	_, err = svidtest.New(svidtest.Config{TrustDomain: td, Identities: []svidtest.Identity{{ID: idA, Hint: "h"}, {ID: idB, Hint: "h"}}})
	require.ErrorContains(t, err, "hint \"h\" used twice")
}

// ValidateJWTSVID shapes claims as SPIRE's agent does: "aud" is a list,
// and a federated trust domain's token keeps only sub, aud and exp. The
// raw gRPC response is read: go-spiffe's client returns the token's own
// claims instead.
func TestValidateJWTSVIDClaimsAsSPIRE(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, Federated: []spiffeid.TrustDomain{fedTD}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	api := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")

	own, err := api.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"db"}})
	require.NoError(t, err)
	v, err := api.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: own.Svids[0].Svid})
	require.NoError(t, err)
	claims := v.Claims.AsMap()
	assert.Equal(t, []any{"db"}, claims["aud"])
	assert.Contains(t, claims, "iat", "own trust domain: every claim")

	foreignID := spiffeid.RequireFromString("spiffe://partner.test/batch")
	token, err := srv.FederatedCA(fedTD).IssueJWTSVID(foreignID, []string{"db"}, time.Minute)
	require.NoError(t, err)
	v, err = api.ValidateJWTSVID(ctx, &workload.ValidateJWTSVIDRequest{Audience: "db", Svid: token})
	require.NoError(t, err)
	assert.Equal(t, foreignID.String(), v.SpiffeId)
	keys := []string{}
	for k := range v.Claims.AsMap() {
		keys = append(keys, k)
	}
	assert.ElementsMatch(t, []string{"sub", "aud", "exp"}, keys)
}

// After a Stop longer than half of the TTL, Start renews the SVIDs before
// serving them, as a restarting SPIRE agent does; a short Stop keeps them.
func TestStartRenewsStaleSVIDs(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: 2 * time.Second})
	srv.Stop()
	kept := srv.CurrentSVIDs()[0].Certificates[0].SerialNumber
	require.NoError(t, srv.Start(srv.SocketPath()))
	assert.Equal(t, kept, srv.CurrentSVIDs()[0].Certificates[0].SerialNumber, "fresh SVIDs are kept")
	srv.Stop()
	time.Sleep(time.Second) // half of the TTL
	require.NoError(t, srv.Start(srv.SocketPath()))
	assert.NotEqual(t, kept, srv.CurrentSVIDs()[0].Certificates[0].SerialNumber, "stale SVIDs are renewed")
}

// An entry registered or deleted while the server runs changes only its
// own SVID in the response, as on SPIRE; with none left the stream is
// PermissionDenied.
func TestAddAndRemoveIdentityLikeEntries(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, Identities: []svidtest.Identity{{ID: idA, Hint: "a"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fetch := func() map[string]string {
		x, err := workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(srv.Addr()))
		require.NoError(t, err)
		out := map[string]string{}
		for _, sv := range x.SVIDs {
			out[sv.ID.String()+"#"+sv.Hint] = sv.Certificates[0].SerialNumber.String()
		}
		return out
	}
	before := fetch()
	require.NoError(t, srv.AddIdentity(svidtest.Identity{ID: idB, Hint: "b"}))
	after := fetch()
	require.Len(t, after, 2)
	assert.Equal(t, before[idA.String()+"#a"], after[idA.String()+"#a"], "adding an entry must not re-issue the others")
	require.Error(t, srv.AddIdentity(svidtest.Identity{ID: spiffeid.RequireFromString("spiffe://example.org/c"), Hint: "b"}), "a hint twice")

	ok, err := srv.RemoveIdentity(idA)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, map[string]string{idB.String() + "#b": after[idB.String()+"#b"]}, fetch())
	_, err = workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "x", Subject: idA}, workloadapi.WithAddr(srv.Addr()))
	require.Error(t, err, "no JWT-SVID for a deleted entry")

	ok, err = srv.RemoveIdentity(idB)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = workloadapi.FetchX509Context(ctx, workloadapi.WithAddr(srv.Addr()))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	// SPIRE's agent denies the bundle streams too (unless
	// allow_unauthenticated_verifiers is set).
	_, err = workloadapi.FetchJWTBundles(ctx, workloadapi.WithAddr(srv.Addr()))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	_, err = workloadapi.FetchX509Bundles(ctx, workloadapi.WithAddr(srv.Addr()))
	require.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

// SPIRE's agent answers the same JWT-SVID for an identity and audience set
// until half of its lifetime has passed, then a new one.
func TestJWTSVIDCachedUntilHalfLifetime(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, JWTTTL: 4 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	defer client.Close()
	get := func(aud string, more ...string) string {
		sv, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud, ExtraAudiences: more})
		require.NoError(t, err)
		return sv.Marshal()
	}
	first := get("a", "b")
	assert.Equal(t, first, get("b", "a"), "same audiences in another order: the cached token")
	assert.NotEqual(t, first, get("c"), "another audience: another token")
	require.Eventually(t, func() bool { return get("a", "b") != first }, 5*time.Second, 100*time.Millisecond,
		"a new token once half of the lifetime has passed")
	assert.GreaterOrEqual(t, srv.JWTSVIDRequests(), uint64(4), "every call is counted, cached or not")
}
