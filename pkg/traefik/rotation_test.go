package traefik

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// TestCARotationReachesTheLink runs Format and Linker in a started
// rotation.Manager (dev Workload API → svid.Source → Manager → set →
// link), as the agent does: a CA rotation lands in what Traefik reads
// through the link, old and new root together in rootCAs, and no reload
// fails. (SVID rotations through WriteAll: format_test.go.)
func TestCARotationReachesTheLink(t *testing.T) {
	api, src := startSource(t)
	base := t.TempDir()
	outDir := filepath.Join(base, "certs")
	watched := filepath.Join(base, "dynamic")
	require.NoError(t, os.Mkdir(watched, 0o755))
	link := filepath.Join(watched, "identity-agent.yml")
	m, err := rotation.NewManager(src, []rotation.Output{{
		Name: "traefik", Selector: svid.Selector{Hint: "traefik"}, Dir: outDir,
		Formats: []rotation.Format{pemFormat(), &Format{File: "dyn.yml", PeerSPIFFEID: modelID}},
		Reloads: []rotation.Reloader{&Linker{Link: link, File: "dyn.yml"}},
	}}, rotation.WithLogger(zap.NewNop()))
	require.NoError(t, err)
	require.NoError(t, m.Start(context.Background()))
	t.Cleanup(func() { require.NoError(t, m.Close()) })

	serial := func() string { return api.CurrentSVIDs()[0].Certificates[0].SerialNumber.Text(16) }
	roots := func() (string, bool) {
		b, err := os.ReadFile(link)
		if err != nil || !strings.Contains(string(b), "serial "+serial()+" ") {
			return "", false
		}
		return parseStrict(t, b).HTTP.ServersTransports["spiffe"].RootCAs[0], true
	}
	require.Eventually(t, func() bool { _, ok := roots(); return ok }, 30*time.Second, 20*time.Millisecond)
	first, _ := roots()
	require.Equal(t, 1, strings.Count(first, "BEGIN CERTIFICATE"))

	require.NoError(t, api.RotateCA())
	require.Eventually(t, func() bool {
		r, ok := roots()
		return ok && strings.Count(r, "BEGIN CERTIFICATE") == 2
	}, 30*time.Second, 20*time.Millisecond, "old and new root during the CA rotation")
	r, _ := roots()
	require.Equal(t, string(read(t, filepath.Join(outDir, "bundle.pem"))), r, "the same set as the PEM files")
	st := m.Snapshot()
	require.Len(t, st.Outputs, 1)
	require.Empty(t, st.Outputs[0].LastReloadError)
}

// TestFormatFileTakesOwner: the key-bearing dynamic file gets the output's
// owner and the format's mode, so Traefik can read it as another user
// through its group and nobody else can.
func TestFormatFileTakesOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the file to another user")
	}
	_, src := startSource(t)
	dir := filepath.Join(t.TempDir(), "certs")
	writeOnce(t, src, rotation.Output{
		Name: "traefik", Dir: dir, Owner: atomicdir.Owner{UID: 65534, GID: 65534},
		Formats: []rotation.Format{&Format{File: "dyn.yml", Mode: 0o640}},
	})
	fi, err := os.Stat(filepath.Join(dir, "dyn.yml"))
	require.NoError(t, err)
	require.Equal(t, uint32(65534), fi.Sys().(*syscall.Stat_t).Uid)
	require.Equal(t, uint32(65534), fi.Sys().(*syscall.Stat_t).Gid)
	require.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())
}
