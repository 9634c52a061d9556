package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// Issue 20, finding 2, with the real binary: the workload's last identity
// is deleted while the agent runs, so the Workload API answers
// PermissionDenied ("no identity issued"). status is WARNING naming the
// output and saying no identity is issued (not "unreachable"), the files
// are kept byte for byte; issuing the identity again brings OK and new
// files without a restart.
func TestStatusNamesOutputWhenNoIdentityIssued(t *testing.T) {
	dir := svidtest.ShortDir(t, "ni")
	srv, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	logs := startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	certPath := filepath.Join(dir, "out", "svid.pem")
	keyPath := filepath.Join(dir, "out", "key.pem")
	cert, key := mustReadFile(t, certPath), mustReadFile(t, keyPath)

	id := spiffeid.RequireFromString("spiffe://example.org/svc")
	ok, err := srv.RemoveIdentity(id)
	require.NoError(t, err)
	require.True(t, ok)
	r := waitStatus(t, cfg, 1)
	head, _, _ := strings.Cut(r.stdout, "\n")
	assert.Contains(t, head, "output svc: SVID spiffe://example.org/svc no longer issued: no identity issued to this workload (uid ", r.stdout)
	assert.Contains(t, head, "registration entries deleted or not yet propagated", r.stdout)
	assert.Contains(t, head, "files kept, valid until", r.stdout)
	assert.NotContains(t, head, "unreachable", r.stdout)
	assert.Contains(t, r.stdout, "reachable, NO identity issued")
	// A few more retries of the denied stream change nothing on disk.
	time.Sleep(2 * time.Second)
	assert.True(t, bytes.Equal(cert, mustReadFile(t, certPath)), "the certificate was rewritten or removed")
	assert.True(t, bytes.Equal(key, mustReadFile(t, keyPath)), "the key was rewritten or removed")

	require.NoError(t, srv.AddIdentity(svidtest.Identity{ID: id}))
	r = waitStatus(t, cfg, 0)
	require.True(t, strings.HasPrefix(r.stdout, "OK\n"), r.stdout)
	require.Eventually(t, func() bool { return !bytes.Equal(cert, mustReadFile(t, certPath)) }, 30*time.Second, 100*time.Millisecond,
		"the re-issued SVID never reached disk; logs:\n%s", logs)
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}
