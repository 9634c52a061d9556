package traefik

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	_ rotation.Format   = (*Format)(nil)
	_ rotation.Reloader = (*Linker)(nil)
)

// providerWatch mimics Traefik's file provider with `filename: path`
// (pkg/provider/file in Traefik v2 and v3): it watches the directory of
// path and path itself, and counts only the events whose base name is
// path's; every counted event would make Traefik re-read path.
type providerWatch struct {
	mu      sync.Mutex
	reloads int
}

func watchLikeTraefik(t *testing.T, path string) *providerWatch {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	require.NoError(t, err)
	require.NoError(t, w.Add(filepath.Dir(path)))
	require.NoError(t, w.Add(path))
	pw := &providerWatch{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if filepath.Base(ev.Name) == filepath.Base(path) {
					pw.mu.Lock()
					pw.reloads++
					pw.mu.Unlock()
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { _ = w.Close(); <-done })
	return pw
}

func (p *providerWatch) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reloads
}

// The dynamic file is a format of the output's set, and the Linker's link
// in the watched directory is what makes Traefik's provider see each
// rotation. Watching the set's own file instead (filename: pointing into
// the output's directory) sees no event named like it on a rotation: the
// swap renames ..data, and the watch on the file follows the link to a
// version that is only deleted later.
func TestFormatWithLinkerWakesTraefikOnEveryRotation(t *testing.T) {
	api := svidtest.Start(t, svidtest.Config{
		TrustDomain: td,
		Identities:  []svidtest.Identity{{ID: traefikID, Hint: "traefik"}},
		TTL:         time.Hour,
		Logger:      zap.NewNop(),
	})
	ctx := context.Background()
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	require.NoError(t, src.Start(ctx))
	t.Cleanup(func() { _ = src.Close() })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, src.WaitReady(wctx))

	base := t.TempDir()
	outDir := filepath.Join(base, "certs", "traefik")
	watched := filepath.Join(base, "traefik", "dynamic")
	require.NoError(t, os.MkdirAll(watched, 0o755))
	link := filepath.Join(watched, "identity-agent.yml")
	f := &Format{File: "identity-agent.yml", TransportName: "model-server", PeerSPIFFEID: modelID}
	m, err := rotation.NewManager(src, []rotation.Output{{
		Name: "traefik", Selector: svid.Selector{Hint: "traefik"}, Dir: outDir,
		Formats: []rotation.Format{&rotation.PEM{CertFile: "svid.pem", KeyFile: "key.pem", BundleFile: "bundle.pem"}, f},
		Reloads: []rotation.Reloader{&Linker{Link: link, File: "identity-agent.yml"}},
	}}, rotation.WithLogger(zap.NewNop()))
	require.NoError(t, err)
	require.NoError(t, m.WriteAll(ctx))

	serial := func() string { return api.CurrentSVIDs()[0].Certificates[0].SerialNumber.Text(16) }
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	require.Contains(t, read(link), "serial "+serial()+" ")
	// The same SVID as the set's PEM files, and the key stays in the set.
	c := parseStrict(t, []byte(read(link)))
	assert.Equal(t, read(filepath.Join(outDir, "svid.pem")), c.HTTP.ServersTransports["model-server"].Certificates[0].CertFile)
	assert.Equal(t, "spiffe://"+td.Name()+"/model-server", c.HTTP.ServersTransports["model-server"].PeerCertURI)
	fi, err := os.Lstat(link)
	require.NoError(t, err)
	assert.Equal(t, os.ModeSymlink, fi.Mode().Type(), "only a link in the watched directory")
	fi, err = os.Stat(filepath.Join(outDir, "identity-agent.yml"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())

	viaLink := watchLikeTraefik(t, link)
	inSet := watchLikeTraefik(t, filepath.Join(outDir, "identity-agent.yml"))
	for i := range 3 {
		before := viaLink.count()
		require.NoError(t, api.RotateSVIDs())
		require.Eventually(t, func() bool {
			_ = m.WriteAll(ctx)
			return strings.Contains(read(link), "serial "+serial()+" ")
		}, 30*time.Second, 50*time.Millisecond, "rotation %d", i)
		require.Eventually(t, func() bool { return viaLink.count() > before }, 10*time.Second, 10*time.Millisecond,
			"rotation %d: Traefik watching the link is told", i)
	}
	// Give stray events time to arrive, then compare.
	time.Sleep(200 * time.Millisecond)
	t.Logf("events named like the file: via the link %d, on the set's file %d (3 rotations)", viaLink.count(), inSet.count())
	assert.Less(t, inSet.count(), 3, "a provider watching the set's file directly misses rotations (%d events for 3)", inSet.count())
	require.NoError(t, m.Close())
}

func TestFormatCheck(t *testing.T) {
	for _, tc := range []struct {
		f    Format
		want string
	}{
		{Format{File: "t.yml"}, ""},
		{Format{File: "t.yaml", TransportName: "model-mtls_2", Mode: 0o640}, ""},
		{Format{}, "traefik.file: is required"},
		{Format{File: "t.toml"}, "traefik: dynamic file t.toml must end in .yml or .yaml"},
		{Format{File: "t.yml", TransportName: "a b"}, `traefik: transport name "a b"`},
		{Format{File: "t.yml", Mode: 0o644}, "traefik.mode: 0644 lets every user read the inline private key; use 0600 or 0640"},
		{Format{File: "t.yml", Mode: 0o660}, "traefik.mode: 0660 lets group or other write the file"},
		{Format{File: "t.yml", Field: "reload[2].traefik", Mode: 0o604}, "reload[2].traefik.mode: 0604"},
		{Format{File: "t.yml", Mode: fs.ModeSetuid | 0o600}, "traefik.mode: 4600 sets a setuid, setgid or sticky bit"},
	} {
		err := tc.f.Check(rotation.FormatCheck{})
		if tc.want == "" {
			assert.NoError(t, err)
			continue
		}
		assert.ErrorContains(t, err, tc.want)
	}
}
