package main_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// quarantined lists the .quarantine-<prefix>* entries of dir.
func quarantined(t *testing.T, dir, prefix string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, d := range des {
		if strings.HasPrefix(d.Name(), ".quarantine-"+prefix) {
			out = append(out, filepath.Join(dir, d.Name()))
		}
	}
	return out
}

// The running agent's guard closes the holes that a plain rewrite cannot:
// a directory in place of ..data (through which svid.pem would resolve
// into someone else's files), a directory in place of a file name, and an
// owner or group change on the key. Each time the files come back as they
// were, and what stood in the way is kept under a .quarantine- name in the
// output directory (the newest 3).
func TestGuardRestoresWhatARewriteCannot(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	logs := startAgent(t, writeConfig(t, dir, apiSock, ""))
	out := filepath.Join(dir, "out")
	certPath, keyPath := filepath.Join(out, "svid.pem"), filepath.Join(out, "key.pem")
	require.Eventually(t, func() bool { _, err := os.Stat(keyPath); return err == nil }, 30*time.Second, 20*time.Millisecond, "logs:\n%s", logs)
	time.Sleep(300 * time.Millisecond) // let the first write and its guard check settle
	cert, err := os.ReadFile(certPath)
	require.NoError(t, err)
	key, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	whole := func() bool {
		c, err1 := os.ReadFile(certPath)
		k, err2 := os.ReadFile(keyPath)
		data, err3 := os.Lstat(filepath.Join(out, "..data"))
		return err1 == nil && err2 == nil && err3 == nil && data.Mode()&fs.ModeSymlink != 0 &&
			bytes.Equal(c, cert) && bytes.Equal(k, key)
	}
	require.True(t, whole())

	t.Run("..data replaced by a directory", func(t *testing.T) {
		evil := filepath.Join(out, "evil")
		require.NoError(t, os.Mkdir(evil, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(evil, "svid.pem"), []byte("someone else's\n"), 0o644))
		require.NoError(t, os.Remove(filepath.Join(out, "..data")))
		require.NoError(t, os.Rename(evil, filepath.Join(out, "..data")))
		require.Eventually(t, whole, 20*time.Second, 20*time.Millisecond, "not restored; logs:\n%s", logs)
		require.Eventually(t, func() bool { return len(quarantined(t, out, "..data-")) == 1 }, 20*time.Second, 20*time.Millisecond)
		q := quarantined(t, out, "..data-")
		b, err := os.ReadFile(filepath.Join(q[0], "svid.pem"))
		require.NoError(t, err)
		assert.Equal(t, "someone else's\n", string(b), "kept as it was")
	})

	t.Run("key.pem replaced by a directory", func(t *testing.T) {
		require.NoError(t, os.Remove(keyPath))
		require.NoError(t, os.Mkdir(keyPath, 0o700))
		require.Eventually(t, whole, 20*time.Second, 20*time.Millisecond, "not restored; logs:\n%s", logs)
		require.Eventually(t, func() bool { return len(quarantined(t, out, "key.pem-")) == 1 }, 20*time.Second, 20*time.Millisecond)
		q := quarantined(t, out, "key.pem-")
		fi, err := os.Stat(q[0])
		require.NoError(t, err)
		assert.True(t, fi.IsDir())
	})

	t.Run("owner and group of the key changed", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown needs root")
		}
		for _, ids := range [][2]int{{65534, -1}, {-1, 65534}} {
			before := map[string]bool{}
			for _, q := range quarantined(t, out, "") {
				before[q] = true
			}
			resolved, err := filepath.EvalSymlinks(keyPath)
			require.NoError(t, err)
			require.NoError(t, os.Chown(resolved, ids[0], ids[1]))
			require.Eventually(t, func() bool {
				fi, err := os.Stat(keyPath)
				if err != nil || !whole() {
					return false
				}
				st := fi.Sys().(*syscall.Stat_t)
				return st.Uid == 0 && st.Gid == 0
			}, 20*time.Second, 20*time.Millisecond, "chown %v not restored; logs:\n%s", ids, logs)
			require.Eventually(t, func() bool {
				for _, q := range quarantined(t, out, "..20") {
					if !before[q] {
						return true
					}
				}
				return false
			}, 20*time.Second, 20*time.Millisecond, "the altered version is kept aside: %v", quarantined(t, out, ""))
			assert.LessOrEqual(t, len(quarantined(t, out, "")), 3, "the quarantine keeps the newest 3")
		}
	})

	assert.Contains(t, logs.String(), "kept for inspection (the newest 3, for at most 24h)")
	r := runCLI(t, "status", "--config", filepath.Join(dir, "agent.yaml"))
	assert.Equal(t, 0, r.code, r.stdout)
}
