package rotation

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid"
)

func TestNewManagerRejectsBadOutputs(t *testing.T) {
	src := svid.NewSource(svid.WithAddr("unix:///nonexistent/socket"))
	dir := t.TempDir()
	ok := Output{Name: "a", Dir: filepath.Join(dir, "a"), CertFile: "cert.pem"}
	cases := []struct {
		name string
		outs []Output
		want string
	}{
		{"no name", []Output{{Dir: dir, CertFile: "c"}}, "name is required"},
		{"no dir", []Output{{Name: "x", CertFile: "c"}}, `output "x": dir is required`},
		{"no files", []Output{{Name: "x", Dir: dir}}, `output "x": no files to write`},
		{"path in name", []Output{{Name: "x", Dir: dir, CertFile: "../etc/c"}}, `output "x": cert_file "../etc/c" must be a base name`},
		{"reserved name", []Output{{Name: "x", Dir: dir, KeyFile: "..data"}}, `key_file "..data": names starting with ".." are reserved`},
		{"same file twice", []Output{{Name: "x", Dir: dir, CertFile: "a.pem", BundleFile: "a.pem"}}, `bundle_file "a.pem" is also used by cert_file`},
		{"jwt without audience", []Output{{Name: "x", Dir: dir, JWT: []JWTFile{{File: "t"}}}}, `output "x": jwt[0] (t): audience is required`},
		{"duplicate name", []Output{ok, {Name: "a", Dir: filepath.Join(dir, "b"), CertFile: "c"}}, `output "a": name used twice`},
		{"duplicate dir", []Output{ok, {Name: "b", Dir: filepath.Join(dir, "a"), CertFile: "c"}}, `dir ` + filepath.Join(dir, "a") + ` is also used by output "a"`},
		{"bad systemd action", []Output{{Name: "x", Dir: dir, CertFile: "c", Reloads: []Reloader{NewSystemdReloader("redis", "stop")}}}, `reloads[0]: systemd reload of "redis": unsupported action "stop"`},
		{"signal without target", []Output{{Name: "x", Dir: dir, CertFile: "c", Reloads: []Reloader{NewSignalReloader("", 0, syscall.SIGHUP)}}}, `need a pid file or a pid > 1`},
		{"empty exec", []Output{{Name: "x", Dir: dir, CertFile: "c", Reloads: []Reloader{NewExecReloader(nil, time.Second)}}}, `exec reload: empty command`},
		{"nil reloader", []Output{{Name: "x", Dir: dir, CertFile: "c", Reloads: []Reloader{nil}}}, `reloads[0] is nil`},
		{"bad launchd label", []Output{{Name: "x", Dir: dir, CertFile: "c", Reloads: []Reloader{NewLaunchdReloader("a/b", true)}}}, `invalid label "a/b"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewManager(src, c.outs)
			require.ErrorContains(t, err, c.want)
		})
	}
	_, err := NewManager(nil, []Output{ok})
	require.ErrorContains(t, err, "source is nil")
}

func TestStartTwiceCancelAndClose(t *testing.T) {
	src := svid.NewSource(svid.WithAddr("unix://" + filepath.Join(shortDir(t), "none.sock")))
	require.NoError(t, src.Start(context.Background()))
	t.Cleanup(func() { _ = src.Close() })
	m, err := NewManager(src, []Output{{Name: "a", Dir: t.TempDir(), CertFile: "c"}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	require.NoError(t, m.Start(ctx))
	require.True(t, m.running.Load())
	require.ErrorContains(t, m.Start(context.Background()), "already started")
	cancel()
	// Close after ctx ended waits for the goroutines (goleak checks none is
	// left) and a closed Manager does not start again.
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close twice")
	require.ErrorContains(t, m.Start(context.Background()), "Start after Close")
	// WriteAll before the Workload API answered names the output.
	wctx, wcancel := context.WithTimeout(context.Background(), time.Second)
	defer wcancel()
	require.ErrorContains(t, m.WriteAll(wctx), `output "a": waiting for the Workload API: no X.509 context received yet`)
}
