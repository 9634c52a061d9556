package main_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refusedAlike runs `config validate` and `run` on cfg and checks that both
// refuse it with the same exit code and the same one line naming the
// output's dir.
func refusedAlike(t *testing.T, cfg, want string) {
	t.Helper()
	v := runCLI(t, "config", "validate", cfg)
	r := runCLI(t, "run", "--config", cfg)
	assert.Equal(t, 2, v.code, "config validate: %+v", v)
	assert.Equal(t, v.code, r.code, "run gives the same answer as config validate: %+v", r)
	for name, out := range map[string]string{"config validate": v.stderr, "run": r.stderr} {
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

	refusedAlike(t, cfg, `: outputs[0].dir: "`+filepath.Join(dir, "out")+`" is a symlink; configure the directory it points to`)
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
	refusedAlike(t, cfg, want)
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
