package service

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/stretchr/testify/require"
)

// unitCapabilities reads CapabilityBoundingSet= from the reference unit, so
// the test below exercises exactly what the reviewed unit grants.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	unit, err := os.ReadFile(referenceUnit)
	require.NoError(t, err)
	for _, l := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(l, "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("no CapabilityBoundingSet= in the reference unit")
	return nil
}

// TestUnitCapabilitiesSufficeForWriter runs pkg/svid's writers as an
// unprivileged user holding only the unit's capabilities (setpriv: same
// bounding/ambient sets, no_new_privs) and gives the files to another user,
// as an output with `owner:` does under systemd. Several rotations make the
// writer remove old version directories too.
func TestUnitCapabilitiesSufficeForWriter(t *testing.T) {
	if dir := os.Getenv("IA_CAPS_CHILD_DIR"); dir != "" {
		writeAsOther(t, dir)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop to another user with setpriv")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	agent, err := user.Lookup("daemon")
	if err != nil {
		t.Skip("no user daemon to act as the agent")
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody to own the files")
	}
	uid, _ := strconv.Atoi(agent.Uid)
	gid, _ := strconv.Atoi(agent.Gid)
	base, err := os.MkdirTemp("", "ia-caps-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	require.NoError(t, os.Chmod(base, 0o755))
	out := filepath.Join(base, "out")
	// What `service prepare` does as root: the output dir belongs to the agent.
	require.NoError(t, EnsureDirs(Dir{Path: out, Mode: OutputDirMode, User: agent.Username}))

	var caps []string
	for _, c := range unitCapabilities(t) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	set := "-all," + strings.Join(caps, ",")
	cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(gid), "--clear-groups",
		"--inh-caps="+set, "--ambient-caps="+set, "--bounding-set="+set, "--no-new-privs",
		os.Args[0], "-test.run=^TestUnitCapabilitiesSufficeForWriter$", "-test.v")
	cmd.Env = append(os.Environ(), "IA_CAPS_CHILD_DIR="+out)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "pkg/svid cannot give files to another user with only the unit's capabilities (%s) as %s.\n"+
		"With CAP_CHOWN alone the writer must chmod before chown, and keep version directories owned by the agent\n"+
		"(chown only their group) so it can fill and later remove them; see docs/SERVICE.md, Privileges.\n%s",
		set, agent.Username, b)
	require.Contains(t, string(b), "--- PASS")
}

func writeAsOther(t *testing.T, dir string) {
	nobody, err := user.Lookup("nobody")
	require.NoError(t, err)
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	owner := atomicdir.Owner{UID: uid, GID: gid}

	w, err := atomicdir.NewWriter(dir, atomicdir.WithOwner(owner))
	require.NoError(t, err)
	for i := range 4 {
		changed, err := w.Write([]atomicdir.File{
			{Name: "svid.pem", Data: []byte(fmt.Sprintf("cert %d\n", i)), Mode: 0o644},
			{Name: "key.pem", Data: []byte(fmt.Sprintf("key %d\n", i)), Mode: 0o600},
		})
		require.NoError(t, err, "rotation %d", i)
		require.True(t, changed)
	}
	fi, err := os.Stat(filepath.Join(dir, "key.pem"))
	require.NoError(t, err)
	require.Equal(t, fs.FileMode(0o600), fi.Mode().Perm())
	require.Equal(t, uint32(uid), fi.Sys().(*syscall.Stat_t).Uid)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var versions []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") {
			versions = append(versions, e.Name())
		}
	}
	require.LessOrEqual(t, len(versions), 2, "old versions not removed: %v", versions)

	single := filepath.Join(dir, "token.jwt")
	require.NoError(t, atomicdir.WriteFile(single, []byte("jwt 1"), 0o640, owner))
	require.NoError(t, atomicdir.WriteFile(single, []byte("jwt 2"), 0o640, owner))
}
