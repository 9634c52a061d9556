package rotation

import (
	"context"
	"io/fs"
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
	ok := Output{Name: "a", Dir: filepath.Join(dir, "a"), Formats: []Format{&PEM{CertFile: "cert.pem"}}}
	cases := []struct {
		name string
		outs []Output
		want string
	}{
		{"no name", []Output{{Dir: dir, Formats: []Format{&PEM{CertFile: "c"}}}}, "name: is required"},
		{"no dir", []Output{{Name: "x", Formats: []Format{&PEM{CertFile: "c"}}}}, `output "x": dir: is required`},
		{"no files", []Output{{Name: "x", Dir: dir}}, `output "x": no files to write`},
		{"path in name", []Output{{Name: "x", Dir: dir, Formats: []Format{&PEM{CertFile: "../etc/c"}}}}, `output "x": cert_file: "../etc/c" must be a plain file name`},
		{"reserved name", []Output{{Name: "x", Dir: dir, Formats: []Format{&PEM{KeyFile: "..data"}}}}, `key_file: "..data": names starting with ".." are reserved`},
		{"same file twice", []Output{{Name: "x", Dir: dir, Formats: []Format{&PEM{CertFile: "a.pem", BundleFile: "a.pem"}}}}, `bundle_file: "a.pem" is also used by cert_file`},
		{"jwt without audience", []Output{{Name: "x", Dir: dir, Formats: []Format{&JWT{Tokens: []JWTFile{{File: "t"}}}}}}, `output "x": jwt[0].audience: at least one audience is required`},
		{"duplicate name", []Output{ok, {Name: "a", Dir: filepath.Join(dir, "b"), Formats: []Format{&PEM{CertFile: "c"}}}}, `output "a": name used twice`},
		{"duplicate dir", []Output{ok, {Name: "b", Dir: filepath.Join(dir, "a"), Formats: []Format{&PEM{CertFile: "c"}}}}, `dir ` + filepath.Join(dir, "a") + ` is also used by output "a"`},
		{"bad systemd action", []Output{{Name: "x", Dir: dir, Reloads: []Reloader{NewSystemdReloader("redis", "stop")}, Formats: []Format{&PEM{CertFile: "c"}}}}, `reloads[0]: systemd reload of "redis": unsupported action "stop"`},
		{"signal without target", []Output{{Name: "x", Dir: dir, Reloads: []Reloader{NewSignalReloader("", 0, syscall.SIGHUP)}, Formats: []Format{&PEM{CertFile: "c"}}}}, `need a pid file or a pid > 1`},
		{"empty exec", []Output{{Name: "x", Dir: dir, Reloads: []Reloader{NewExecReloader(nil, time.Second)}, Formats: []Format{&PEM{CertFile: "c"}}}}, `exec reload: empty command`},
		{"nil reloader", []Output{{Name: "x", Dir: dir, Reloads: []Reloader{nil}, Formats: []Format{&PEM{CertFile: "c"}}}}, `reloads[0]: is nil`},
		{"bad launchd label", []Output{{Name: "x", Dir: dir, Reloads: []Reloader{NewLaunchdReloader("a/b", true)}, Formats: []Format{&PEM{CertFile: "c"}}}}, `invalid label "a/b"`},
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
	m, err := NewManager(src, []Output{{Name: "a", Dir: t.TempDir(), Formats: []Format{&PEM{CertFile: "c"}}}})
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

func TestValidateModes(t *testing.T) {
	cases := []struct {
		name string
		mut  func(*Output, *PEM)
		want string // "" = valid
	}{
		{"defaults", func(*Output, *PEM) {}, ""},
		{"group-readable key", func(_ *Output, o *PEM) { o.KeyMode = 0o640 }, ""},
		{"group-writable cert", func(_ *Output, o *PEM) { o.CertMode = 0o664 }, "cert_mode: 0664 lets group or other write the file"},
		{"world-writable key", func(_ *Output, o *PEM) { o.KeyMode = 0o777 }, "key_mode: 0777 lets group or other write the file"},
		{"setuid", func(_ *Output, o *PEM) { o.CertMode = 0o644 | fs.ModeSetuid }, "cert_mode: 4644 sets a setuid, setgid or sticky bit"},
		{"sticky", func(_ *Output, o *PEM) { o.BundleMode = 0o644 | fs.ModeSticky }, "bundle_mode: 1644 sets a setuid"},
		{"world-readable key", func(_ *Output, o *PEM) { o.KeyMode = 0o644 }, "key_mode: 0644 lets every user read a secret"},
		{"world-readable key, asked for", func(o *Output, p *PEM) { p.KeyMode = 0o644; o.UnsafeWorldReadableKey = true }, ""},
		{"world-readable token", func(o *Output, _ *PEM) {
			o.Formats = append(o.Formats, &JWT{Tokens: []JWTFile{{Audience: []string{"a"}, File: "t", Mode: 0o604}}})
		}, "jwt[0].mode: 0604 lets every user read a secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pem := &PEM{CertFile: "c.pem", KeyFile: "k.pem"}
			o := Output{Name: "x", Dir: "/d", Formats: []Format{pem}}
			c.mut(&o, pem)
			err := o.Validate()
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.want)
			var fe *FieldError
			require.ErrorAs(t, err, &fe, "names the field")
		})
	}
}

func TestWarningsKeyWiderThanCert(t *testing.T) {
	pem := &PEM{CertFile: "c.pem", KeyFile: "k.pem", CertMode: 0o600, KeyMode: 0o640}
	o := Output{Name: "x", Dir: "/d", Formats: []Format{pem}}
	w := o.Warnings()
	require.Len(t, w, 1)
	require.EqualError(t, w[0], "key_mode: 0640 is wider than cert_mode 0600: the key is readable where the certificate is not")
	pem.CertMode = 0o644
	require.Empty(t, o.Warnings())
}

func TestParseSignal(t *testing.T) {
	for _, n := range []string{"SIGHUP", "hup", "HUP", " sigusr1 "} {
		_, err := ParseSignal(n)
		require.NoError(t, err, n)
	}
	_, err := ParseSignal("SIGKILL")
	require.ErrorContains(t, err, `"SIGKILL" is not a supported signal (SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH)`)
}
