package svidtest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func fetchCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Start serves a real Workload API: go-spiffe's client fetches an
// X.509-SVID of the default identity in the default trust domain, and it
// verifies against the served bundle.
func TestStartServesWorkloadAPI(t *testing.T) {
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour})

	sock := srv.SocketPath()
	assert.Equal(t, "unix://"+sock, srv.Addr())
	assert.True(t, filepath.IsAbs(sock), "socket path %q", sock)
	assert.Less(t, len(sock), 100, "a unix socket path must stay short: %q", sock)

	x509ctx, err := workloadapi.FetchX509Context(fetchCtx(t, 10*time.Second), workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	require.Len(t, x509ctx.SVIDs, 1)
	sv := x509ctx.DefaultSVID()
	assert.Equal(t, "spiffe://"+svidtest.DefaultTrustDomain+"/workload", sv.ID.String())
	assert.Equal(t, srv.CurrentSVIDs()[0].Certificates[0].SerialNumber, sv.Certificates[0].SerialNumber)
	_, _, err = x509svid.Verify(sv.Certificates, x509ctx.Bundles)
	require.NoError(t, err)
}

// A trust domain, identities and hints given in the Config are kept.
func TestStartKeepsConfig(t *testing.T) {
	id := spiffeid.RequireFromString("spiffe://other.test/svc")
	srv := svidtest.Start(t, svidtest.Config{
		TrustDomain: id.TrustDomain(),
		Identities:  []svidtest.Identity{{ID: id, Hint: "svc"}},
	})
	sv, err := workloadapi.FetchX509SVID(fetchCtx(t, 10*time.Second), workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
	assert.Equal(t, id, sv.ID)
	assert.Equal(t, "svc", sv.Hint)
}

// New does not listen; the server starts where the test says and can be
// restarted at SocketPath after a Stop.
func TestNewStartsNothingAndRestarts(t *testing.T) {
	sock := filepath.Join(svidtest.ShortDir(t, "dat"), "api.sock")
	srv := svidtest.NewUnstarted(t, svidtest.Config{})
	_, err := os.Stat(sock)
	require.ErrorIs(t, err, os.ErrNotExist, "New must not listen")

	require.NoError(t, srv.Start(sock))
	assert.Equal(t, sock, srv.SocketPath())
	_, err = workloadapi.FetchX509SVID(fetchCtx(t, 10*time.Second), workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)

	srv.Stop()
	require.NoError(t, srv.Start(srv.SocketPath()))
	_, err = workloadapi.FetchX509SVID(fetchCtx(t, 10*time.Second), workloadapi.WithAddr(srv.Addr()))
	require.NoError(t, err)
}

// When the test ends, the server is stopped and its directory removed.
func TestCleanup(t *testing.T) {
	var srv *svidtest.Server
	var dir string
	t.Run("fixture", func(t *testing.T) {
		dir = svidtest.ShortDir(t, "dat")
		require.DirExists(t, dir)
		srv = svidtest.Start(t, svidtest.Config{})
	})
	assert.NoDirExists(t, dir)
	assert.NoDirExists(t, filepath.Dir(srv.SocketPath()))
	_, err := workloadapi.FetchX509SVID(fetchCtx(t, 300*time.Millisecond), workloadapi.WithAddr(srv.Addr()))
	require.Error(t, err, "a stopped server must not answer")
}
