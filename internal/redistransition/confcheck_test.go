package redistransition

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

func TestCheckCertlessAccess(t *testing.T) {
	const tlsOn = "tls-port 6380\n"
	for _, tc := range []struct {
		name, conf, want string // want "" = accepted
	}{
		{"no tls port", "tls-auth-clients optional\n", ""},
		{"tls port 0", "tls-port 0\ntls-auth-clients optional\n", ""},
		{"default yes", tlsOn, ""},
		{"optional, requirepass", tlsOn + "tls-auth-clients optional\nrequirepass s3cret\n", ""},
		{"optional, no password", tlsOn + "tls-auth-clients optional\n", "password-less user default (no requirepass)"},
		{"optional quoted, no password", tlsOn + `tls-auth-clients "optional"` + "\n", "tls-auth-clients optional (line 2)"},
		{"no, no password", tlsOn + "tls-auth-clients no\n", "tls-auth-clients no"},
		{"optional, requirepass cleared", tlsOn + "requirepass s3cret\ntls-auth-clients optional\nrequirepass \"\"\n", "user default (line 4)"},
		{"optional, ACL default nopass", tlsOn + "requirepass s3cret\ntls-auth-clients optional\nuser default on nopass ~* +@all\n", "user default (line 4)"},
		{"optional, other nopass user", tlsOn + "requirepass s3cret\ntls-auth-clients OPTIONAL\nuser celery on nopass ~* +@all\n", "user celery (line 4)"},
		{"optional, nopass user off", tlsOn + "requirepass s3cret\ntls-auth-clients optional\nuser celery off nopass ~*\n", ""},
		{"optional, nopass then password", tlsOn + "requirepass s3cret\ntls-auth-clients optional\nuser celery on nopass >pw ~*\n", ""},
		{"optional, aclfile", tlsOn + "tls-auth-clients optional\nrequirepass x\naclfile /etc/redis/users.acl\n", "aclfile (line 4)"},
		{"later yes wins", tlsOn + "tls-auth-clients optional\nuser default on nopass\ntls-auth-clients yes\n", ""},
		{"comments ignored", tlsOn + "# tls-auth-clients optional\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckCertlessAccess(tc.conf)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "redis/redis#14638")
		})
	}
	require.ErrorContains(t, CheckCertlessAccess("requirepass \"x\n"), "line 1: unbalanced quotes")
}

// confDirectives parses conf into its last value per directive (and every
// user line), the way Redis applies a file: later directives win.
func confDirectives(t *testing.T, conf string) (last map[string]string, users []string) {
	t.Helper()
	last = map[string]string{}
	for _, l := range strings.Split(conf, "\n") {
		args, err := splitConfLine(l)
		require.NoError(t, err, l)
		if len(args) == 0 {
			continue
		}
		k := strings.ToLower(args[0])
		if k == "user" {
			users = append(users, strings.Join(args[1:], " "))
			continue
		}
		last[k] = strings.Join(args[1:], " ")
	}
	return last, users
}

// Every generated phase block, alone, after a hostile redis.conf and as
// the shipped examples: never a password-less user with tls-auth-clients
// optional (redis/redis#14638).
func TestGeneratedConfigsNeverCertlessPasswordless(t *testing.T) {
	files := TLSFiles{CertFile: "/etc/identity-agent/certs/redis/svid.pem", KeyFile: "/etc/identity-agent/certs/redis/key.pem", CAFile: "/etc/identity-agent/certs/redis/bundle.pem"}
	hostile := "tls-auth-clients optional\nuser default on nopass ~* +@all\nrequirepass \"\"\n"
	for _, ph := range []Phase{PhaseA, PhaseB, PhaseC, PhaseD} {
		block, err := ServerConfig(ph, ServerConfigOptions{TLSFiles: files})
		require.NoError(t, err)
		for name, conf := range map[string]string{"alone": block, "after hostile": hostile + block, "after requirepass": "requirepass s3cret\n" + block} {
			require.NoError(t, CheckCertlessAccess(conf), "phase %s %s", ph, name)
			last, _ := confDirectives(t, conf)
			if last["tls-port"] != "0" {
				assert.Equal(t, "yes", last["tls-auth-clients"], "phase %s %s", ph, name)
			}
		}
		for _, l := range strings.Split(block, "\n") {
			args, err := splitConfLine(l)
			require.NoError(t, err)
			for _, a := range args {
				assert.NotEqual(t, "optional", strings.ToLower(a), "phase %s: %s", ph, l)
				assert.NotEqual(t, "nopass", strings.ToLower(a), "phase %s: %s", ph, l)
			}
		}
		last, users := confDirectives(t, block)
		assert.Empty(t, users, "phase %s: the block defines no ACL users", ph)
		switch ph {
		case PhaseA:
			assert.Equal(t, "0", last["tls-port"])
		case PhaseD:
			assert.Equal(t, "", last["requirepass"], "D clears requirepass, so it must require certificates")
			assert.Equal(t, "0", last["port"])
		default:
			_, set := last["requirepass"]
			assert.False(t, set, "phase %s keeps the operator's requirepass", ph)
		}
	}

	confs, err := filepath.Glob("../../examples/redis/*.conf")
	require.NoError(t, err)
	require.NotEmpty(t, confs)
	for _, p := range confs {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		assert.NoError(t, CheckCertlessAccess(string(b)), p)
		assert.NotContains(t, string(b), "tls-auth-clients optional", p)
	}
}

// A real redis-server started from the generated B, C and D configs
// refuses a TLS client without a certificate, even with the password; the
// same server with tls-auth-clients optional and no password (the pair
// CheckCertlessAccess rejects) lets it in, which is what this guards.
func TestGeneratedConfigsRefuseCertlessClient(t *testing.T) {
	e := redistest.NewEnv(t)
	ctx := redistest.Context(t)
	noCert := tlsconfig.TLSClientConfig(e.Client, tlsconfig.AuthorizeID(serverID)) // verifies the server, presents nothing
	start := func(t *testing.T, conf string) string {
		t.Helper()
		dir := redistest.ShortDir(t)
		plain, tlsPort := redistest.FreePort(t), redistest.FreePort(t)
		conf = strings.NewReplacer("\nport 6379\n", "\nport "+strconv.Itoa(plain)+"\n", "tls-port 6380", "tls-port "+strconv.Itoa(tlsPort)).Replace(conf)
		path := dir + "/redis.conf"
		require.NoError(t, os.WriteFile(path, []byte("bind 127.0.0.1\nsave \"\"\nappendonly no\ndir "+dir+"\n"+conf), 0o600))
		startRaw(t, path)
		addr := "127.0.0.1:" + strconv.Itoa(tlsPort)
		var err error
		require.Eventually(t, func() bool {
			_, err = redisclient.PingTLS(ctx, addr, e.Client, e.Client, tlsconfig.AuthorizeID(serverID), e.PasswordFile)
			return err == nil
		}, 20*time.Second, 50*time.Millisecond, "mTLS PING: %v", err)
		return addr
	}
	certless := func(addr, password string) error {
		c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: noCert.Clone(), Password: password, MaxRetries: -1})
		defer func() { _ = c.Close() }()
		return c.Ping(ctx).Err()
	}
	for _, ph := range []Phase{PhaseB, PhaseC, PhaseD} {
		t.Run(string(ph), func(t *testing.T) {
			block, err := ServerConfig(ph, ServerConfigOptions{TLSFiles: TLSFiles(e.Files)})
			require.NoError(t, err)
			base := "requirepass " + testPassword + "\n"
			addr := start(t, base+block)
			pw := testPassword
			if ph == PhaseD {
				pw = "" // D clears requirepass: the certificate is the only credential
			}
			err = certless(addr, pw)
			require.Error(t, err, "phase %s let a TLS client without a certificate in", ph)
			assert.NotContains(t, err.Error(), "NOAUTH", "refused by TLS, not by the password")
			t.Logf("phase %s, no client certificate: %v", ph, err)
		})
	}
	t.Run("optional-without-password", func(t *testing.T) {
		block, err := ServerConfig(PhaseD, ServerConfigOptions{TLSFiles: TLSFiles(e.Files)})
		require.NoError(t, err)
		bad := block + "tls-auth-clients optional\n"
		require.ErrorContains(t, CheckCertlessAccess(bad), "redis/redis#14638")
		require.NoError(t, certless(start(t, bad), ""), "the hazard this test guards against is real")
	})
}

// A rollback D→C that would restore tls-auth-clients optional on a server
// without a password (a hand-edited state, or a server configured so
// before the transition) restores yes instead: reopening the plaintext
// port must not also open certificate-less TLS to a password-less user.
func TestRollbackNeverRestoresOptionalWithoutPassword(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Port0: true})
	ctx := redistest.Context(t)
	state := filepath.Join(redistest.ShortDir(t), "state.json")
	require.NoError(t, updateState(state, func(s *State) error {
		s.Phase = PhaseD
		s.History = []Step{{From: PhaseC, To: PhaseD, At: time.Now().UTC(),
			Previous:       map[string]string{"port": strconv.Itoa(r.Port), "tls-auth-clients": "optional"},
			PasswordWasSet: false}}
		return nil
	}))
	admin, err := NewAdmin(AdminConfig{Addr: "unix://" + r.Sock})
	require.NoError(t, err)
	defer func() { _ = admin.Close() }()
	tr, err := NewTransition(admin, TransitionConfig{StateFile: state, PlainPort: r.Port, TLSPort: r.TLSPort})
	require.NoError(t, err)
	res, err := tr.Rollback(ctx, true)
	require.NoError(t, err)
	assert.Equal(t, PhaseC, res.To)
	v, err := admin.ConfigGet(ctx, "tls-auth-clients", "requirepass", "port")
	require.NoError(t, err)
	assert.Equal(t, "yes", v["tls-auth-clients"])
	assert.Equal(t, "", v["requirepass"])
	assert.Equal(t, strconv.Itoa(r.Port), v["port"])
}
