package svid_test

// The encoders' output written by pkg/atomicdir, as a service reads it.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A reader that resolves ..data once and reads cert and key below it never
// sees a certificate with another key, across hundreds of swaps.
func TestDirWriterReaderNeverSeesMismatchedPair(t *testing.T) {
	const pairs, writes = 16, 400
	now := time.Now()
	ca := newCA(t, tdMain)
	sets := make([][]atomicdir.File, pairs)
	for i := range sets {
		sv := issue(t, ca, idA, now.Add(-time.Minute), now.Add(time.Hour))
		key, err := svid.EncodeKeyPEM(sv.PrivateKey)
		require.NoError(t, err)
		sets[i] = []atomicdir.File{
			{Name: "cert.pem", Data: svid.EncodeCertsPEM(sv.Certificates), Mode: 0o644},
			{Name: "key.pem", Data: key, Mode: 0o600},
			{Name: "bundle.pem", Data: svid.EncodeCertsPEM(ca.X509Bundle().X509Authorities()), Mode: 0o644},
		}
	}
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	_, err = w.Write(sets[0])
	require.NoError(t, err)

	var stop atomic.Bool
	var checked, vanished atomic.Int64
	var mismatch atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			d, err := filepath.EvalSymlinks(filepath.Join(dir, "..data"))
			if errors.Is(err, fs.ErrNotExist) {
				// ..data named a version that two later swaps already
				// pruned before the lstat: a retry, not a wrong pair.
				vanished.Add(1)
				continue
			}
			if err != nil {
				mismatch.Store(fmt.Sprintf("resolve ..data: %v", err))
				return
			}
			cert, err1 := os.ReadFile(filepath.Join(d, "cert.pem"))
			key, err2 := os.ReadFile(filepath.Join(d, "key.pem"))
			if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
				// Resolved two or more swaps ago and since deleted: an error
				// the reader sees and retries, never a wrong pair.
				vanished.Add(1)
				continue
			}
			if err1 != nil || err2 != nil {
				mismatch.Store(fmt.Sprintf("read: %v %v", err1, err2))
				return
			}
			if _, err := tls.X509KeyPair(cert, key); err != nil {
				mismatch.Store(fmt.Sprintf("in %s: %v", d, err))
				return
			}
			checked.Add(1)
		}
	}()
	for i := 1; i <= writes; i++ {
		changed, err := w.Write(sets[i%pairs])
		require.NoError(t, err)
		require.True(t, changed)
	}
	stop.Store(true)
	wg.Wait()
	require.Nil(t, mismatch.Load())
	t.Logf("%d writes, %d consistent reads, %d reads of a deleted old version", writes, checked.Load(), vanished.Load())
	require.Greater(t, checked.Load(), int64(50), "the reader must have run alongside the writer")
	assert.Len(t, versionDirs(t, dir), 2)
}

// openssl, an independent implementation, reads what was written: the URI
// SAN is there, the key belongs to the certificate, the chain verifies.
func TestDirWriterOutputReadByOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	now := time.Now()
	ca := newCA(t, tdMain)
	sv := issue(t, ca, idA, now.Add(-time.Minute), now.Add(time.Hour))
	key, err := svid.EncodeKeyPEM(sv.PrivateKey)
	require.NoError(t, err)
	dir := t.TempDir()
	w, err := atomicdir.NewWriter(dir)
	require.NoError(t, err)
	_, err = w.Write([]atomicdir.File{
		{Name: "cert.pem", Data: svid.EncodeCertsPEM(sv.Certificates), Mode: 0o644},
		{Name: "key.pem", Data: key, Mode: 0o600},
		{Name: "bundle.pem", Data: svid.EncodeCertsPEM(ca.X509Bundle().X509Authorities()), Mode: 0o644},
	})
	require.NoError(t, err)

	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(openssl, args...).CombinedOutput()
		require.NoError(t, err, "openssl %v: %s", args, out)
		return string(out)
	}
	text := run("x509", "-noout", "-text", "-in", filepath.Join(dir, "cert.pem"))
	assert.Contains(t, text, "URI:spiffe://example.org/a")
	certPub := run("x509", "-noout", "-pubkey", "-in", filepath.Join(dir, "cert.pem"))
	keyPub := run("pkey", "-pubout", "-in", filepath.Join(dir, "key.pem"))
	assert.Equal(t, certPub, keyPub)
	assert.Contains(t, run("verify", "-CAfile", filepath.Join(dir, "bundle.pem"), filepath.Join(dir, "cert.pem")), "OK")
}

// versionDirs lists the writer's hidden version directories ("..2026…"), not
// the "..data" link.
func versionDirs(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, de := range des {
		if n := de.Name(); strings.HasPrefix(n, "..") && n != "..data" && n != "..data_tmp" {
			out = append(out, n)
		}
	}
	return out
}
