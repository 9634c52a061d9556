package main_test

import (
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refusedAlike runs `config validate` and `run` on cfg and checks that both
// refuse it with the same exit code and the same one line naming the
// output's dir (validate's followed by hint, its advice to root).
func refusedAlike(t *testing.T, cfg, want, hint string) {
	t.Helper()
	v := runCLI(t, "config", "validate", cfg)
	r := runCLI(t, "run", "--config", cfg)
	assert.Equal(t, 2, v.code, "config validate: %+v", v)
	assert.Equal(t, v.code, r.code, "run gives the same answer as config validate: %+v", r)
	for name, out := range map[string]string{"config validate": v.stderr, "run": r.stderr} {
		want := want
		if name == "config validate" {
			want += hint
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.Contains(l, "outputs[0].dir") {
				lines = append(lines, l)
			}
		}
		require.Len(t, lines, 1, "%s: one line for the dir: %q", name, out)
		assert.True(t, strings.HasSuffix(lines[0], want), "%s: %q does not end in %q", name, lines[0], want)
	}
}

// A symlinked output dir: `config validate` said OK and `run` refused it
// (its prepare step). Now both refuse it, with the same line, and nothing
// is written through the link.
func TestSymlinkedOutputDirOneAnswer(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "")
	real := filepath.Join(dir, "real")
	require.NoError(t, os.Mkdir(real, 0o700))
	require.NoError(t, os.Symlink(real, filepath.Join(dir, "out")))

	refusedAlike(t, cfg, `: outputs[0].dir: "`+filepath.Join(dir, "out")+`" is a symlink; configure the directory it points to`, "")
	ents, err := os.ReadDir(real)
	require.NoError(t, err)
	assert.Empty(t, ents, "nothing written through the link")
}

// An output dir another user made in a sticky 1777 directory (as in /tmp)
// is refused by `config validate`, `run` and a reload alike, with one line,
// and never chmod-ed: before, the agent took it over, and its owner could
// then swap a version directory for a symlink the guard chmod-ed through.
func TestOutputDirOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another user (uid 65534)")
	}
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	shared := filepath.Join(dir, "shared")
	require.NoError(t, os.Mkdir(shared, 0o700))
	require.NoError(t, os.Chmod(shared, 0o777|fs.ModeSticky))
	foreign := filepath.Join(shared, "tls")
	require.NoError(t, os.Mkdir(foreign, 0o700))
	require.NoError(t, os.Chown(foreign, 65534, 65534))
	require.NoError(t, os.Chmod(foreign, 0o777))
	unchanged := func() {
		t.Helper()
		fi, err := os.Lstat(foreign)
		require.NoError(t, err)
		assert.Equal(t, fs.ModeDir|0o777, fi.Mode(), "not chmod-ed")
		ents, err := os.ReadDir(foreign)
		require.NoError(t, err)
		assert.Empty(t, ents, "nothing written into it")
	}
	want := `: outputs[0].dir: "` + foreign + `" is owned by uid 65534, not the agent's user (uid 0): chown it to the agent's user or point the config at a directory of its own`

	cfg := writeConfig(t, dir, apiSock, "")
	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Replace(string(good), "dir: "+dir+"/out", "dir: "+foreign, 1)), 0o600))
	refusedAlike(t, cfg, want, "; validating as root: pass --user "+nobodyName(t)+" to check as the service's user")
	unchanged()

	// A running agent asked to add it.
	require.NoError(t, os.WriteFile(cfg, good, 0o600))
	startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	added := string(good) + "  - {name: extra, dir: " + foreign + ", cert_file: svid.pem, key_file: key.pem}\n"
	require.NoError(t, os.WriteFile(cfg, []byte(added), 0o600))
	res := runCLI(t, "reload", "--config", cfg)
	assert.Equal(t, 2, res.code, "%+v", res)
	assert.Contains(t, res.stdout, strings.Replace(want, "outputs[0]", "outputs[1]", 1), "%+v", res)
	unchanged()
}

func nobodyName(t *testing.T) string {
	t.Helper()
	u, err := user.LookupId("65534")
	if err != nil {
		t.Skip("needs a user with uid 65534 (nobody) in the user database")
	}
	return u.Username
}

// The running agent's guard, attacked as in the issue: the current version
// directory swapped for a symlink to another directory (mode 0751) - the
// target keeps its mode and contents; then a chmod flood on the key - at
// most 3 quarantined versions stay, each 0700.
func TestGuardAgainstSymlinkSwapAndChmodFlood(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	logs := startAgent(t, writeConfig(t, dir, apiSock, ""))
	out := filepath.Join(dir, "out")
	keyPath := filepath.Join(out, "key.pem")
	require.Eventually(t, func() bool { _, err := os.Stat(keyPath); return err == nil }, 30*time.Second, 20*time.Millisecond, "logs:\n%s", logs)
	time.Sleep(300 * time.Millisecond) // let the first write and its guard check settle
	key, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	whole := func() bool {
		k, err := os.ReadFile(keyPath)
		fi, serr := os.Stat(keyPath)
		return err == nil && serr == nil && string(k) == string(key) && fi.Mode().Perm() == 0o600
	}

	victim := filepath.Join(dir, "victim")
	require.NoError(t, os.Mkdir(victim, 0o700))
	require.NoError(t, os.Chmod(victim, 0o751))
	require.NoError(t, os.WriteFile(filepath.Join(victim, "key.pem"), []byte("victim's"), 0o644))
	ver, err := os.Readlink(filepath.Join(out, "..data"))
	require.NoError(t, err)
	require.NoError(t, os.Rename(filepath.Join(out, ver), filepath.Join(dir, "old-version")))
	require.NoError(t, os.Symlink(victim, filepath.Join(out, ver)))
	require.Eventually(t, func() bool {
		_, err := os.Lstat(filepath.Join(out, ver))
		return whole() && os.IsNotExist(err)
	}, 20*time.Second, 20*time.Millisecond, "not restored; logs:\n%s", logs)
	fi, err := os.Lstat(victim)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|0o751, fi.Mode(), "chmod-ed through the symlink")
	b, err := os.ReadFile(filepath.Join(victim, "key.pem"))
	require.NoError(t, err)
	assert.Equal(t, "victim's", string(b))

	for range 8 {
		require.NoError(t, os.Chmod(keyPath, 0o644))
		require.Eventually(t, whole, 20*time.Second, 20*time.Millisecond, "chmod not restored; logs:\n%s", logs)
		require.LessOrEqual(t, len(quarantined(t, out, "")), 3)
	}
	require.Eventually(t, func() bool { return len(quarantined(t, out, "..20")) == 3 }, 20*time.Second, 20*time.Millisecond,
		"%v", quarantined(t, out, ""))
	for _, q := range quarantined(t, out, "") {
		fi, err := os.Lstat(q)
		require.NoError(t, err)
		assert.Equal(t, fs.ModeDir|0o700, fi.Mode(), q)
	}
}
