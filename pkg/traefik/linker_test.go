package traefik

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// TestLinkerReload: the link points at the file where the reload is told
// it was written, replacing a regular file an older version left there;
// a cancelled context, a set without the file and a bad Link each fail
// and leave what is at Link alone, with no temp file in the watched
// directory.
func TestLinkerReload(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	set, other, watched := filepath.Join(base, "certs"), filepath.Join(base, "other"), filepath.Join(base, "dynamic")
	for _, d := range []string{set, other, watched} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	target, otherTarget := filepath.Join(set, "dyn.yml"), filepath.Join(other, "dyn.yml")
	require.NoError(t, os.WriteFile(target, []byte("set\n"), 0o600))
	require.NoError(t, os.WriteFile(otherTarget, []byte("other\n"), 0o600))
	w := rotation.Written{Dir: set, Files: map[string]string{"dyn.yml": target}}
	wOther := rotation.Written{Dir: other, Files: map[string]string{"dyn.yml": otherTarget}}

	link := filepath.Join(watched, "identity-agent.yml")
	require.NoError(t, os.WriteFile(link, []byte("an older version's dynamic file\n"), 0o600))
	l := &Linker{Link: link, File: "dyn.yml"}
	require.Equal(t, "traefik", l.Kind())
	require.NoError(t, l.Reload(ctx, w))
	linked := func() string {
		t.Helper()
		got, err := os.Readlink(link)
		require.NoError(t, err, "Link is a symlink")
		return got
	}
	require.Equal(t, target, linked())
	require.Equal(t, "set\n", string(read(t, link)))

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, l.Reload(cancelled, wOther), context.Canceled)
	require.Equal(t, target, linked())

	err := l.Reload(ctx, rotation.Written{Dir: other, Files: map[string]string{}})
	require.EqualError(t, err, "traefik: link "+link+": dyn.yml was not written to "+other)
	require.Equal(t, target, linked())

	require.NoError(t, l.Reload(ctx, wOther))
	require.Equal(t, otherTarget, linked())

	err = (&Linker{Link: "dynamic/identity-agent.yml", File: "dyn.yml"}).Reload(ctx, w)
	require.ErrorContains(t, err, "must be an absolute path")
	err = (&Linker{Link: target, File: "dyn.yml"}).Reload(ctx, w)
	require.ErrorContains(t, err, "is the dynamic file itself")
	require.Equal(t, "set\n", string(read(t, target)))
	fi, err := os.Lstat(target)
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular(), "the set's file is not replaced by a link to itself")

	dirLink := filepath.Join(watched, "dir.yml")
	require.NoError(t, os.Mkdir(dirLink, 0o755))
	require.Error(t, (&Linker{Link: dirLink, File: "dyn.yml"}).Reload(ctx, w))
	fi, err = os.Lstat(dirLink)
	require.NoError(t, err)
	require.True(t, fi.IsDir())

	entries, err := os.ReadDir(watched)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{"dir.yml", "identity-agent.yml"}, names, "no temp link left behind")
}

// TestReadsThroughLinkAreWhole has a reader loop on the link, as Traefik
// reads it, while the Linker re-points it many times between two sets'
// dynamic files (built by Format, different transports): every read must
// be one of the two complete documents, never a missing or torn file.
func TestReadsThroughLinkAreWhole(t *testing.T) {
	_, src := startSource(t)
	base := t.TempDir()
	dirs := []string{filepath.Join(base, "a"), filepath.Join(base, "b")}
	writeOnce(t, src,
		rotation.Output{Name: "a", Dir: dirs[0], Formats: []rotation.Format{&Format{File: "dyn.yml", PeerSPIFFEID: modelID}}},
		rotation.Output{Name: "b", Dir: dirs[1], Formats: []rotation.Format{&Format{File: "dyn.yml", ServerName: "model.internal"}}},
	)
	ws := make([]rotation.Written, 2)
	for i, d := range dirs {
		ws[i] = rotation.Written{Dir: d, Files: map[string]string{"dyn.yml": filepath.Join(d, "dyn.yml")}}
	}
	watched := filepath.Join(base, "dynamic")
	require.NoError(t, os.Mkdir(watched, 0o755))
	link := filepath.Join(watched, "identity-agent.yml")
	l := &Linker{Link: link, File: "dyn.yml"}
	ctx := context.Background()

	// The two complete documents: every read must be byte-identical to one.
	require.NoError(t, l.Reload(ctx, ws[1]))
	docB := read(t, link)
	require.NoError(t, checkDoc(docB))
	require.NoError(t, l.Reload(ctx, ws[0]))
	docA := read(t, link)
	require.NoError(t, checkDoc(docA))
	require.NotEqual(t, docA, docB)

	var (
		stop  atomic.Bool
		reads atomic.Int64
		wg    sync.WaitGroup
		bad   = make(chan error, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			data, err := os.ReadFile(link)
			if err == nil && !bytes.Equal(data, docA) && !bytes.Equal(data, docB) {
				err = checkDoc(data)
				if err == nil {
					err = fmt.Errorf("unexpected document of %d bytes", len(data))
				}
			}
			if err != nil {
				select {
				case bad <- err:
				default:
				}
				return
			}
			reads.Add(1)
		}
	}()
	const relinks = 300
	for i := range relinks {
		require.NoError(t, l.Reload(ctx, ws[(i+1)%2]))
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-bad:
		t.Fatalf("reader saw a broken file: %v", err)
	default:
	}
	require.Positive(t, reads.Load())
	t.Logf("%d relinks, %d consistent reads", relinks, reads.Load())
}

func checkDoc(data []byte) error {
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil {
		return fmt.Errorf("parse (%d bytes): %w", len(data), err)
	}
	st := c.HTTP.ServersTransports["spiffe"]
	if st == nil || len(st.Certificates) != 1 {
		return errors.New("transport missing")
	}
	if _, err := tls.X509KeyPair([]byte(st.Certificates[0].CertFile), []byte(st.Certificates[0].KeyFile)); err != nil {
		return fmt.Errorf("key/cert: %w", err)
	}
	return nil
}

// TestLinkerNeverLinksOutsideTheWatchedDir: the watched directory swapped
// for a symlink to another directory (by a user who can write its parent),
// or left writable by every user, is refused on reload, and the directory
// the symlink points to gets nothing; the error names the directory.
func TestLinkerNeverLinksOutsideTheWatchedDir(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	set, elsewhere, watched := filepath.Join(base, "certs"), filepath.Join(base, "elsewhere"), filepath.Join(base, "dynamic")
	require.NoError(t, os.Mkdir(set, 0o755))
	require.NoError(t, os.Mkdir(elsewhere, 0o755))
	target := filepath.Join(set, "dyn.yml")
	require.NoError(t, os.WriteFile(target, []byte("set\n"), 0o600))
	w := rotation.Written{Dir: set, Files: map[string]string{"dyn.yml": target}}
	l := &Linker{Link: filepath.Join(watched, "identity-agent.yml"), File: "dyn.yml"}

	require.NoError(t, os.Symlink(elsewhere, watched))
	err := l.Reload(ctx, w)
	require.ErrorContains(t, err, "traefik: link "+l.Link+": directory "+watched+" is a symlink")
	ents, err := os.ReadDir(elsewhere)
	require.NoError(t, err)
	require.Empty(t, ents, "nothing made where the symlink points")

	require.NoError(t, os.Remove(watched))
	require.NoError(t, os.Mkdir(watched, 0o700))
	require.NoError(t, os.Chmod(watched, 0o777|os.ModeSticky))
	err = l.Reload(ctx, w)
	require.ErrorContains(t, err, "directory "+watched+" is writable by every user (mode 1777)")
	ents, err = os.ReadDir(watched)
	require.NoError(t, err)
	require.Empty(t, ents)

	require.NoError(t, os.Chmod(watched, 0o755))
	require.NoError(t, l.Reload(ctx, w))
	got, err := os.Readlink(l.Link)
	require.NoError(t, err)
	require.Equal(t, target, got)
}
