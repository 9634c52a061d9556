package redistransition

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
	"github.com/identity-agent/identity-agent/pkg/rotation"
)

func TestConfigSetReloadPresentsNewSerial(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Password: true})
	ctx := redistest.Context(t)
	authz := tlsconfig.AuthorizeID(serverID)
	served := func() redisclient.TLSPeer {
		t.Helper()
		p, err := redisclient.PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, authz, e.PasswordFile)
		require.NoError(t, err)
		require.Equal(t, serverID.String(), p.SpiffeID)
		return p
	}
	rotate := func(old string) string {
		t.Helper()
		require.NoError(t, e.Srv.RotateSVIDs())
		require.Eventually(t, func() bool {
			s, err := e.Server.GetX509SVID()
			return err == nil && serial(s) != old
		}, 20*time.Second, 20*time.Millisecond)
		return serial(e.WriteServerFiles(t))
	}

	first, _ := e.Server.GetX509SVID()
	s0 := served().Serial
	require.Equal(t, serial(first), s0)
	s1 := rotate(s0)
	// Files changed on disk, but Redis keeps serving the old certificate:
	// it has no file watch and ignores signals.
	assert.Equal(t, s0, served().Serial)

	rl, err := NewConfigSetReloader(adminConfig(r, e), TLSFiles(e.Files))
	require.NoError(t, err)
	var _ rotation.Reloader = rl
	assert.Equal(t, "redis", rl.Kind())
	require.NoError(t, rl.Reload(ctx, rotation.Written{}))
	assert.Equal(t, s1, served().Serial, "new handshake after CONFIG SET reload presents the new serial")

	// The reloader that re-sets the server's own paths.
	s2 := rotate(s1)
	rl2, err := NewConfigSetReloader(adminConfig(r, e), TLSFiles{})
	require.NoError(t, err)
	require.NoError(t, rl2.Reload(ctx, rotation.Written{}))
	assert.Equal(t, s2, served().Serial)

	// Admin over TLS with the agent's SVID (rediss://), password from a file.
	s3 := rotate(s2)
	rl3, err := NewConfigSetReloader(AdminConfig{Addr: "rediss://" + r.TLSAddr(), PasswordFile: e.PasswordFile,
		SVIDs: e.Client, Bundles: e.Client, ServerAuthorizer: authz}, TLSFiles(e.Files))
	require.NoError(t, err)
	require.NoError(t, rl3.Reload(ctx, rotation.Written{}))
	assert.Equal(t, s3, served().Serial)

	// Names of the output's files: the paths come from the set written.
	s4 := rotate(s3)
	rl5, err := NewConfigSetReloader(adminConfig(r, e), TLSFiles{CertFile: "svid.pem", KeyFile: "key.pem", CAFile: e.Files.CAFile})
	require.NoError(t, err)
	w := rotation.Written{Dir: e.Dir, Files: map[string]string{"svid.pem": e.Files.CertFile, "key.pem": e.Files.KeyFile}}
	require.NoError(t, rl5.Reload(ctx, w))
	assert.Equal(t, s4, served().Serial)
	delete(w.Files, "key.pem")
	require.ErrorContains(t, rl5.Reload(ctx, w), "redis reload: key.pem was not written to "+e.Dir)
	require.Nil(t, r.Cmd.ProcessState, "redis-server was not restarted")

	// A broken admin password file is one clear error naming it.
	bad := adminConfig(r, e)
	bad.PasswordFile = e.Dir + "/missing.pass"
	rl4, err := NewConfigSetReloader(bad, TLSFiles(e.Files))
	require.NoError(t, err)
	err = rl4.Reload(ctx, rotation.Written{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.pass")
	_, err = NewConfigSetReloader(adminConfig(r, e), TLSFiles{CertFile: "/x"})
	require.ErrorContains(t, err, "all of cert_file, key_file, ca_file or none")
}

func NewAdminMust(t *testing.T, r *redistest.Proc, e *redistest.Env) *Admin {
	t.Helper()
	a, err := NewAdmin(adminConfig(r, e))
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func TestAdminAddrValidation(t *testing.T) {
	for addr, want := range map[string]string{
		"":                         "addr is required",
		"redis://u:pw@h:6379":      "credentials in the address",
		"tls://127.0.0.1:6380":     "SVID source",
		"ftp://x:1":                "scheme",
		"unix://":                  "empty socket path",
		"localhost":                "missing port",
		"unix:///run/redis.sock":   "",
		"127.0.0.1:6379":           "",
		"tcp://127.0.0.1:6379":     "",
		"redis://127.0.0.1:6379/0": "",
	} {
		_, err := AdminConfig{Addr: addr}.target()
		if want == "" {
			assert.NoError(t, err, addr)
		} else if assert.Error(t, err, addr) {
			assert.Contains(t, err.Error(), want, addr)
			assert.NotContains(t, err.Error(), "pw@", "password leaked in error")
		}
	}
}
