package svidtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// After RotateSVIDsAndWait returns, the source already serves the new SVID:
// for go-spiffe's X509Source, svid.Source and a selected view of it, with
// no polling in the test.
func TestRotateSVIDsAndWait(t *testing.T) {
	api := svidtest.Start(t, svidtest.Config{TTL: time.Hour, Identities: []svidtest.Identity{
		{ID: spiffeid.RequireFromString("spiffe://example.org/a"), Hint: "a"},
		{ID: spiffeid.RequireFromString("spiffe://example.org/b"), Hint: "b"},
	}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	gs, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(api.Addr())))
	require.NoError(t, err)
	t.Cleanup(func() { _ = gs.Close() })
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	require.NoError(t, src.Start(ctx))
	t.Cleanup(func() { _ = src.Close() })
	require.NoError(t, src.WaitReady(ctx))

	for name, s := range map[string]x509svid.Source{
		"workloadapi.X509Source":  gs,
		"svid.Source":             src,
		"svid.Source hint b":      src.X509SVIDSource(svid.Selector{Hint: "b"}),
		"svid.Source spiffe_id a": src.X509SVIDSource(svid.Selector{SpiffeID: "spiffe://example.org/a"}),
	} {
		before, err := s.GetX509SVID()
		require.NoError(t, err, name)
		got, err := api.RotateSVIDsAndWait(ctx, s)
		require.NoError(t, err, name)
		assert.Equal(t, before.ID, got.ID, name)
		assert.NotEqual(t, before.Certificates[0].SerialNumber, got.Certificates[0].SerialNumber, "%s: the SVID returned is the new one", name)
		now, err := s.GetX509SVID()
		require.NoError(t, err, name)
		assert.Equal(t, got.Certificates[0].Raw, now.Certificates[0].Raw, "%s: the source serves it on return", name)
	}
}

// staticSource serves one SVID forever, as a source whose stream stopped.
type staticSource struct{ sv *x509svid.SVID }

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.sv, nil }

// A source that never sees the rotation makes the wait end with ctx, and
// the error names the SVID it is stuck on.
func TestWaitForCurrentSVIDNamesWhatTheSourceStillServes(t *testing.T) {
	api := svidtest.Start(t, svidtest.Config{TTL: time.Hour})
	old := api.CurrentSVIDs()[0]
	got, err := api.WaitForCurrentSVID(t.Context(), staticSource{old})
	require.NoError(t, err, "the source serves the current SVID: no wait")
	assert.Equal(t, old, got)

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = api.RotateSVIDsAndWait(ctx, staticSource{old})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "still serves spiffe://example.org/workload serial "+old.Certificates[0].SerialNumber.String())
}
