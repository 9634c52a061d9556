package svid_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// A backoff this long would keep a Source disconnected past the test's
// deadline: only the socket watch can bring it back in time.
var slowBackoff = svid.WithBackoff(time.Minute, time.Hour)

// restartAndExpect stops srv, issues new SVIDs while it is down (as a
// restarted SPIRE agent would serve), lets prepare change the socket's
// surroundings, starts srv again on sock and waits for the Source to hold
// the new SVID.
func restartAndExpect(t *testing.T, src *svid.Source, srv *svidtest.Server, sock string, prepare func()) {
	t.Helper()
	before := src.Status()
	srv.Stop()
	require.Eventually(t, func() bool { return !src.Status().Connected }, waitFor, 10*time.Millisecond)
	require.NoError(t, srv.RotateSVIDs())
	want := serial(srv.CurrentSVIDs()[0])
	prepare()
	require.NoError(t, srv.Start(sock))
	require.Eventually(t, func() bool {
		sv, err := src.GetX509SVID()
		return err == nil && serial(sv) == want
	}, waitFor, 10*time.Millisecond, "the Source never picked up the restarted API; status %+v", src.Status())
	st := src.Status()
	assert.True(t, st.Connected)
	assert.Equal(t, before.Reconnects+1, st.Reconnects)
	assert.Greater(t, st.SocketEvents, before.SocketEvents, "the socket's reappearance triggered the reconnect")
}

func TestSourceReconnectsAtOnceWhenTheSocketReappears(t *testing.T) {
	leakCheck(t)
	srv := svidtest.Start(t, svidtest.Config{TTL: time.Hour})
	src := startSource(t, srv.Addr(), slowBackoff)
	waitReady(t, src)
	restartAndExpect(t, src, srv, srv.SocketPath(), func() {})

	// And again: the watch is still armed after a reconnect.
	restartAndExpect(t, src, srv, srv.SocketPath(), func() {})
}

// The socket's directory may go away with the agent (a tmpfs, a cleanup
// on stop): the watch moves up to the nearest directory that exists and
// comes back down as the path is created again.
func TestSourceReconnectsWhenTheSocketDirectoryIsRecreated(t *testing.T) {
	leakCheck(t)
	base := svidtest.ShortDir(t, "svd")
	sock := filepath.Join(base, "a", "b", "api.sock")
	srv := svidtest.NewUnstarted(t, svidtest.Config{TTL: time.Hour})
	require.NoError(t, srv.Start(sock))
	src := startSource(t, "unix://"+sock, slowBackoff)
	waitReady(t, src)
	restartAndExpect(t, src, srv, sock, func() {
		require.NoError(t, os.RemoveAll(filepath.Join(base, "a")))
	})
}

// A Source started before its Workload API exists connects as soon as the
// socket is created, even with a long backoff.
func TestSourceConnectsWhenTheSocketFirstAppears(t *testing.T) {
	leakCheck(t)
	sock := filepath.Join(svidtest.ShortDir(t, "svd"), "late", "api.sock")
	srv := svidtest.NewUnstarted(t, svidtest.Config{TTL: time.Hour})
	src := startSource(t, "unix://"+sock, slowBackoff)
	require.Eventually(t, func() bool { return src.Status().LastError != "" }, waitFor, 10*time.Millisecond)
	require.NoError(t, srv.Start(sock))
	waitReady(t, src)
	assert.Zero(t, src.Status().Reconnects, "the first connection is not a reconnect")
}

func TestValidateRetryMax(t *testing.T) {
	require.NoError(t, svid.ValidateRetryMax(svid.DefaultRetryMax))
	require.NoError(t, svid.ValidateRetryMax(100*time.Millisecond))
	require.ErrorContains(t, svid.ValidateRetryMax(0), "must be above 0")
	require.ErrorContains(t, svid.ValidateRetryMax(2*time.Hour), "at most 1h0m0s")
}
