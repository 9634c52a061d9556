package redisclient

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/redistest"
)

// TestPythonSnippet runs examples/redis/celery_client.py (redis-py part)
// against live servers in phases B and D. Skipped without python3 + redis-py
// (Debian: python3-redis).
func TestPythonSnippet(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import redis").Run(); err != nil {
		t.Skip("python3 with redis-py not installed (apt-get install python3-redis)")
	}
	script, err := filepath.Abs("../../examples/redis/celery_client.py")
	require.NoError(t, err)
	e := redistest.NewEnv(t)

	// The worker's files, as an identity-agent output would write them.
	wdir := filepath.Join(e.Dir, "worker")
	require.NoError(t, os.MkdirAll(wdir, 0o700))
	_, certs, key, bundle := redistest.SVIDPEM(t, e.Client)
	require.NoError(t, os.WriteFile(filepath.Join(wdir, "svid.pem"), certs, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(wdir, "key.pem"), key, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(wdir, "bundle.pem"), bundle, 0o644))

	run := func(r *redistest.Proc, spiffeID string) (string, error) {
		cmd := exec.Command(py, script)
		cmd.Env = append(os.Environ(), "SVID_DIR="+wdir, "REDIS_HOST=127.0.0.1", "REDIS_TLS_PORT="+strconv.Itoa(r.TLSPort),
			"REDIS_SPIFFE_ID="+spiffeID, "REDIS_PASSWORD_FILE="+e.PasswordFile)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, spec := range []redistest.Spec{{TLS: true, Password: true}, {TLS: true, Port0: true}} {
		r := redistest.Start(t, e, spec)
		out, err := run(r, serverID.String())
		require.NoError(t, err, out)
		assert.Equal(t, "True", out)
		out, err = run(r, "spiffe://example.org/not-redis")
		require.Error(t, err)
		assert.Contains(t, out, "is not spiffe://example.org/not-redis")
	}
}
