package redisclient

import (
	"context"
	"crypto/tls"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func TestMTLSPingAndRejections(t *testing.T) {
	e := newEnv(t)
	r := startRedis(t, e, redisSpec{tls: true, port0: true})
	ctx := ctxT(t)

	c, err := New(Options{Mode: ModeTLSOnly, TLSAddr: r.tlsAddr(), ServerID: serverID.String()}, e.client, e.client)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.Redis().Set(ctx, "k", "v", 0).Err())
	got, err := c.Redis().Get(ctx, "k").Result()
	require.NoError(t, err)
	assert.Equal(t, "v", got)
	h, err := c.Health(ctx)
	require.NoError(t, err)
	assert.Equal(t, PathTLS, h.Path)
	assert.Equal(t, r.tlsAddr(), h.ServerAddr)

	// The server sees our SPIFFE client: a raw TLS dial with the same
	// verifier but no client certificate must be refused by Redis.
	noCert := tlsconfig.TLSClientConfig(e.client, tlsconfig.AuthorizeID(serverID))
	conn, err := tls.Dial("tcp", r.tlsAddr(), noCert)
	if err == nil {
		_, err = roundTrip(ctx, conn, 5*time.Second, "PING")
		_ = conn.Close()
	}
	require.Error(t, err, "redis accepted a TLS client without a certificate")

	// A client whose SVID comes from a foreign trust domain.
	foreign, err := svidtest.NewCA(spiffeid.RequireTrustDomainFromString("evil.org"))
	require.NoError(t, err)
	fsvid, err := foreign.IssueX509SVID(spiffeid.RequireFromString("spiffe://evil.org/worker"), time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	fc, err := New(Options{Mode: ModeTLSOnly, TLSAddr: r.tlsAddr(), ServerID: serverID.String(), DialTimeout: 3 * time.Second},
		fsvid, e.client, WithRedisOptions(func(o *redis.Options) { o.MaxRetries = -1; o.DialerRetries = 1 }))
	require.NoError(t, err)
	defer func() { _ = fc.Close() }()
	err = fc.Redis().Ping(ctx).Err()
	require.Error(t, err, "redis accepted a client from a foreign trust domain")
	t.Logf("foreign trust domain client: %v", err)

	// The client refuses a server whose SPIFFE ID is not the expected one.
	wc, err := New(Options{Mode: ModeTLSOnly, TLSAddr: r.tlsAddr(), ServerID: "spiffe://example.org/not-redis"}, e.client, e.client,
		WithRedisOptions(func(o *redis.Options) { o.MaxRetries = -1; o.DialerRetries = 1 }))
	require.NoError(t, err)
	defer func() { _ = wc.Close() }()
	err = wc.Redis().Ping(ctx).Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spiffe://example.org/redis")
	t.Logf("wrong server ID: %v", err)

	// Trust-domain authorization accepts the same server.
	tdc, err := New(Options{Mode: ModeTLSOnly, TLSAddr: r.tlsAddr(), ServerTrustDomain: "example.org"}, e.client, e.client)
	require.NoError(t, err)
	defer func() { _ = tdc.Close() }()
	require.NoError(t, tdc.Redis().Ping(ctx).Err())
}

func TestConfigSetReloadPresentsNewSerial(t *testing.T) {
	e := newEnv(t)
	r := startRedis(t, e, redisSpec{tls: true, password: true})
	ctx := ctxT(t)
	authz := tlsconfig.AuthorizeID(serverID)
	served := func() TLSPeer {
		t.Helper()
		p, err := PingTLS(ctx, r.tlsAddr(), e.client, e.client, authz, e.pwFile)
		require.NoError(t, err)
		require.Equal(t, serverID.String(), p.SpiffeID)
		return p
	}
	rotate := func(old string) string {
		t.Helper()
		require.NoError(t, e.srv.RotateSVIDs())
		require.Eventually(t, func() bool {
			s, err := e.server.GetX509SVID()
			return err == nil && serial(s) != old
		}, 20*time.Second, 20*time.Millisecond)
		return serial(e.writeServerFiles(t))
	}

	first, _ := e.server.GetX509SVID()
	s0 := served().Serial
	require.Equal(t, serial(first), s0)
	s1 := rotate(s0)
	// Files changed on disk, but Redis keeps serving the old certificate:
	// it has no file watch and ignores signals.
	assert.Equal(t, s0, served().Serial)

	rl, err := NewConfigSetReloader(r.admin(e), e.files)
	require.NoError(t, err)
	var _ interface {
		Kind() string
		Reload(context.Context) error
	} = rl // pkg/rotation's Reloader method set
	assert.Equal(t, "redis", rl.Kind())
	require.NoError(t, rl.Reload(ctx))
	assert.Equal(t, s1, served().Serial, "new handshake after CONFIG SET reload presents the new serial")

	// The reloader that re-sets the server's own paths.
	s2 := rotate(s1)
	rl2, err := NewConfigSetReloader(r.admin(e), TLSFiles{})
	require.NoError(t, err)
	require.NoError(t, rl2.Reload(ctx))
	assert.Equal(t, s2, served().Serial)

	// Admin over TLS with the agent's SVID (rediss://), password from a file.
	s3 := rotate(s2)
	rl3, err := NewConfigSetReloader(AdminConfig{Addr: "rediss://" + r.tlsAddr(), PasswordFile: e.pwFile,
		SVIDs: e.client, Bundles: e.client, ServerAuthorizer: authz}, e.files)
	require.NoError(t, err)
	require.NoError(t, rl3.Reload(ctx))
	assert.Equal(t, s3, served().Serial)
	require.Nil(t, r.cmd.ProcessState, "redis-server was not restarted")

	// A broken admin password file is one clear error naming it.
	bad := r.admin(e)
	bad.PasswordFile = e.dir + "/missing.pass"
	rl4, err := NewConfigSetReloader(bad, e.files)
	require.NoError(t, err)
	err = rl4.Reload(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.pass")
	_, err = NewConfigSetReloader(r.admin(e), TLSFiles{CertFile: "/x"})
	require.ErrorContains(t, err, "all of cert_file, key_file, ca_file or none")
}

func TestDualAuthFallsBackAndReturns(t *testing.T) {
	e := newEnv(t)
	r := startRedis(t, e, redisSpec{tls: true, password: true})
	ctx := ctxT(t)
	reg := prometheus.NewRegistry()
	c, err := New(Options{Mode: ModeDualAuth, TLSAddr: r.tlsAddr(), PlainAddr: r.plainAddr(), PasswordFile: e.pwFile,
		ServerID: serverID.String(), RetryTLSInterval: 200 * time.Millisecond, Name: "worker"}, e.client, e.client,
		WithRegisterer(reg))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	require.NoError(t, c.Redis().Ping(ctx).Err())
	h, err := c.Health(ctx)
	require.NoError(t, err)
	require.Equal(t, PathTLS, h.Path)
	require.Zero(t, h.Fallbacks)

	// TLS port down: close the listener and drop established TLS conns.
	admin := adminRedis(t, r, testPassword)
	require.NoError(t, admin.ConfigSet(ctx, "tls-port", "0").Err())
	require.NoError(t, admin.Do(ctx, "CLIENT", "KILL", "LADDR", r.tlsAddr()).Err())

	require.Eventually(t, func() bool {
		h, err := c.Health(ctx)
		return err == nil && h.Path == PathPlaintext
	}, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, c.Redis().Set(ctx, "during-outage", "1", 0).Err())
	h, err = c.Health(ctx)
	require.NoError(t, err)
	assert.False(t, h.TLSUp)
	assert.GreaterOrEqual(t, h.Fallbacks, uint64(1))
	assert.NotEmpty(t, h.LastFallbackError)
	assert.GreaterOrEqual(t, metricstest.Value(t, reg, "identity_agent_redis_client_fallbacks_total", map[string]string{"client": "worker"}), 1.0)

	// TLS back: the prober notices, plaintext conns are retired.
	require.NoError(t, admin.ConfigSet(ctx, "tls-port", strconv.Itoa(r.tlsPort)).Err())
	require.Eventually(t, func() bool {
		h, err := c.Health(ctx)
		return err == nil && h.Path == PathTLS && h.TLSUp
	}, 20*time.Second, 50*time.Millisecond)
	// Every pooled connection is back on TLS, from the server's view.
	require.Eventually(t, func() bool {
		for i := 0; i < 5; i++ {
			if h, err := c.Health(ctx); err != nil || h.Path != PathTLS {
				return false
			}
		}
		counts, err := NewAdminMust(t, r, e).Clients(ctx, strconv.Itoa(r.port), strconv.Itoa(r.tlsPort))
		return err == nil && counts.Plaintext == 0 && counts.TLS >= 1
	}, 20*time.Second, 100*time.Millisecond)
	v, err := c.Redis().Get(ctx, "during-outage").Result()
	require.NoError(t, err)
	assert.Equal(t, "1", v)
	assert.Equal(t, 1.0, metricstest.Value(t, reg, "identity_agent_redis_client_tls_up", map[string]string{"client": "worker"}))

	// A wrong password is not a reason to fall back.
	require.NoError(t, writeFileAtomic(e.pwFile, []byte("wrong\n"), 0o600))
	before := c.d.fallbackCount()
	_, err = c.d.dial(ctx, "tcp", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WRONGPASS")
	assert.Equal(t, before, c.d.fallbackCount())
}

func NewAdminMust(t *testing.T, r *redisProc, e *env) *Admin {
	t.Helper()
	a, err := NewAdmin(r.admin(e))
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func TestDisabledModeAndValidation(t *testing.T) {
	e := newEnv(t)
	r := startRedis(t, e, redisSpec{password: true})
	ctx := ctxT(t)
	c, err := New(Options{Mode: ModeDisabled, PlainAddr: r.plainAddr(), PasswordFile: e.pwFile, DB: 2}, nil, nil)
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.Redis().Set(ctx, "x", "y", 0).Err())
	h, err := c.Health(ctx)
	require.NoError(t, err)
	assert.Equal(t, PathPlaintext, h.Path)
	// DB is selected on every connection: the key landed in db 2.
	a := redis.NewClient(&redis.Options{Network: "unix", Addr: r.sock, Password: testPassword, DB: 2})
	defer func() { _ = a.Close() }()
	v, err := a.Get(ctx, "x").Result()
	require.NoError(t, err)
	assert.Equal(t, "y", v)

	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Mode: "bogus"}, "mode"},
		{Options{Mode: ModeDualAuth, PlainAddr: "127.0.0.1:1", PasswordFile: "x", TLSAddr: "127.0.0.1:2"}, "SVID source"},
		{Options{Mode: ModeDisabled, PlainAddr: "127.0.0.1:1"}, "password_file"},
		{Options{Mode: ModeTLSOnly, TLSAddr: "nope"}, "tls_addr"},
	} {
		_, err := New(tc.o, nil, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err = New(Options{Mode: ModeTLSOnly, TLSAddr: "127.0.0.1:1"}, e.client, e.client)
	require.ErrorContains(t, err, "server_id or server_trust_domain")
}

func TestModeFromEnv(t *testing.T) {
	t.Setenv("IA_TEST_MODE", "")
	m, err := ModeFromEnv("IA_TEST_MODE", ModeDualAuth)
	require.NoError(t, err)
	assert.Equal(t, ModeDualAuth, m)
	t.Setenv("IA_TEST_MODE", "TLS-only")
	m, err = ModeFromEnv("IA_TEST_MODE", ModeDisabled)
	require.NoError(t, err)
	assert.Equal(t, ModeTLSOnly, m)
	t.Setenv("IA_TEST_MODE", "mtls")
	_, err = ModeFromEnv("IA_TEST_MODE", ModeDisabled)
	require.ErrorContains(t, err, "$IA_TEST_MODE")
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

func TestServerAuthorizerForms(t *testing.T) {
	e := newEnv(t)
	r := startRedis(t, e, redisSpec{tls: true, port0: true})
	ctx := ctxT(t)
	for _, tc := range []struct {
		id, td string
		ok     bool
	}{
		{"spiffe://example.org/redis", "", true},
		{"spiffe://example.org", "", true}, // trust domain ID: any member
		{"", "example.org", true},
		{"spiffe://other.org", "", false},
		{"", "other.org", false},
	} {
		authz, err := ServerAuthorizer(tc.id, tc.td)
		require.NoError(t, err)
		_, err = PingTLS(ctx, r.tlsAddr(), e.client, e.client, authz, "")
		if tc.ok {
			assert.NoError(t, err, "%+v", tc)
		} else {
			assert.Error(t, err, "%+v", tc)
		}
	}
	_, err := ServerAuthorizer("", "")
	require.ErrorContains(t, err, "server_id or server_trust_domain")
	_, err = ServerAuthorizer("http://x", "")
	require.ErrorContains(t, err, "server_id")
}
