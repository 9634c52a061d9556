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

	"github.com/identity-agent/identity-agent/internal/clientlist"
	"github.com/identity-agent/identity-agent/internal/metricstest"
	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

func TestMTLSPingAndRejections(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Port0: true})
	ctx := redistest.Context(t)

	c, err := New(ModeTLSOnly, WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID)))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.Redis().Set(ctx, "k", "v", 0).Err())
	got, err := c.Redis().Get(ctx, "k").Result()
	require.NoError(t, err)
	assert.Equal(t, "v", got)
	h, err := c.Health(ctx)
	require.NoError(t, err)
	assert.Equal(t, PathTLS, h.Path)
	assert.Equal(t, r.TLSAddr(), h.ServerAddr)

	// The server sees our SPIFFE client: a raw TLS dial with the same
	// verifier but no client certificate must be refused by Redis.
	noCert := tlsconfig.TLSClientConfig(e.Client, tlsconfig.AuthorizeID(serverID))
	conn, err := tls.Dial("tcp", r.TLSAddr(), noCert)
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
	fc, err := New(ModeTLSOnly, WithTLS(r.TLSAddr(), fsvid, e.Client, tlsconfig.AuthorizeID(serverID)), WithDialTimeout(3*time.Second),
		WithRedisOptions(func(o *redis.Options) { o.MaxRetries = -1; o.DialerRetries = 1 }))
	require.NoError(t, err)
	defer func() { _ = fc.Close() }()
	err = fc.Redis().Ping(ctx).Err()
	require.Error(t, err, "redis accepted a client from a foreign trust domain")
	t.Logf("foreign trust domain client: %v", err)

	// The client refuses a server whose SPIFFE ID is not the expected one.
	wc, err := New(ModeTLSOnly, WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/not-redis"))),
		WithRedisOptions(func(o *redis.Options) { o.MaxRetries = -1; o.DialerRetries = 1 }))
	require.NoError(t, err)
	defer func() { _ = wc.Close() }()
	err = wc.Redis().Ping(ctx).Err()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spiffe://example.org/redis")
	t.Logf("wrong server ID: %v", err)

	// Trust-domain authorization accepts the same server.
	tdAuthz, err := ServerAuthorizer("", "example.org")
	require.NoError(t, err)
	tdc, err := New(ModeTLSOnly, WithTLS(r.TLSAddr(), e.Client, e.Client, tdAuthz))
	require.NoError(t, err)
	defer func() { _ = tdc.Close() }()
	require.NoError(t, tdc.Redis().Ping(ctx).Err())
}

func TestDualAuthFallsBackAndReturns(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Password: true})
	ctx := redistest.Context(t)
	reg := prometheus.NewRegistry()
	c, err := New(ModeDualAuth, WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID)),
		WithPlaintext(r.PlainAddr()), WithPasswordFile(e.PasswordFile), WithRetryTLSInterval(200*time.Millisecond), WithName("worker"),
		WithRegisterer(reg))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()

	require.NoError(t, c.Redis().Ping(ctx).Err())
	h, err := c.Health(ctx)
	require.NoError(t, err)
	require.Equal(t, PathTLS, h.Path)
	require.Zero(t, h.Fallbacks)

	// TLS port down: close the listener and drop established TLS conns.
	admin := redistest.Admin(t, r, testPassword)
	require.NoError(t, admin.ConfigSet(ctx, "tls-port", "0").Err())
	require.NoError(t, admin.Do(ctx, "CLIENT", "KILL", "LADDR", r.TLSAddr()).Err())

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
	require.NoError(t, admin.ConfigSet(ctx, "tls-port", strconv.Itoa(r.TLSPort)).Err())
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
		plain, tlsN, err := countByPort(ctx, admin, r)
		return err == nil && plain == 0 && tlsN >= 1
	}, 20*time.Second, 100*time.Millisecond)
	v, err := c.Redis().Get(ctx, "during-outage").Result()
	require.NoError(t, err)
	assert.Equal(t, "1", v)
	assert.Equal(t, 1.0, metricstest.Value(t, reg, "identity_agent_redis_client_tls_up", map[string]string{"client": "worker"}))

	// A wrong password is not a reason to fall back.
	require.NoError(t, writeFileRename(e.PasswordFile, []byte("wrong\n")))
	before := c.d.fallbackCount()
	_, err = c.d.dial(ctx, "tcp", "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "WRONGPASS")
	assert.Equal(t, before, c.d.fallbackCount())
}

func TestDisabledModeAndValidation(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{Password: true})
	ctx := redistest.Context(t)
	c, err := New(ModeDisabled, WithPlaintext(r.PlainAddr()), WithPasswordFile(e.PasswordFile), WithDB(2))
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	require.NoError(t, c.Redis().Set(ctx, "x", "y", 0).Err())
	h, err := c.Health(ctx)
	require.NoError(t, err)
	assert.Equal(t, PathPlaintext, h.Path)
	// DB is selected on every connection: the key landed in db 2.
	a := redis.NewClient(&redis.Options{Network: "unix", Addr: r.Sock, Password: testPassword, DB: 2})
	defer func() { _ = a.Close() }()
	v, err := a.Get(ctx, "x").Result()
	require.NoError(t, err)
	assert.Equal(t, "y", v)

	authz := tlsconfig.AuthorizeID(serverID)
	for _, tc := range []struct {
		mode Mode
		o    []Option
		want string
	}{
		{"bogus", nil, "mode"},
		{ModeDualAuth, []Option{WithPlaintext("127.0.0.1:1"), WithPasswordFile("x"), WithTLS("127.0.0.1:2", nil, nil, authz)}, "SVID source"},
		{ModeDisabled, []Option{WithPlaintext("127.0.0.1:1")}, "password_file"},
		{ModeTLSOnly, []Option{WithTLS("nope", e.Client, e.Client, authz)}, "tls_addr"},
		{ModeTLSOnly, nil, "tls_addr"},
		{ModeDualAuth, []Option{WithTLS("127.0.0.1:2", e.Client, e.Client, authz), WithPasswordFile("x")}, "plain_addr"},
	} {
		_, err := New(tc.mode, tc.o...)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err = New(ModeTLSOnly, WithTLS("127.0.0.1:1", e.Client, e.Client, nil))
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

func TestServerAuthorizerForms(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Port0: true})
	ctx := redistest.Context(t)
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
		_, err = PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, authz, "")
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

// countByPort counts the server's connections by laddr port, from the
// server's own CLIENT LIST (the assertion client's unix socket is neither).
func countByPort(ctx context.Context, admin *redis.Client, r *redistest.Proc) (plain, tlsN int, err error) {
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		return 0, 0, err
	}
	for _, c := range clientlist.Parse(list) {
		switch c.LocalPort() {
		case strconv.Itoa(r.Port):
			plain++
		case strconv.Itoa(r.TLSPort):
			tlsN++
		}
	}
	return plain, tlsN, nil
}

// A real redis-server presenting spiffe://example.org/redis to a client
// whose server_id (or server_trust_domain) wants another: the error names
// what the server presented and what was wanted, through the client and
// through PingTLS (redis check, the transition's tls-ping gate).
func TestWrongServerIDNamesPresentedAndWanted(t *testing.T) {
	e := redistest.NewEnv(t)
	r := redistest.Start(t, e, redistest.Spec{TLS: true, Port0: true})
	ctx := redistest.Context(t)
	for _, tc := range []struct{ id, td, want string }{
		{"spiffe://example.org/not-redis", "", "server_id wants spiffe://example.org/not-redis"},
		{"spiffe://other.org", "", "server_id wants a member of other.org"},
		{"", "other.org", "server_trust_domain wants a member of other.org"},
	} {
		authz, err := ServerAuthorizer(tc.id, tc.td)
		require.NoError(t, err)
		c, err := New(ModeTLSOnly, WithTLS(r.TLSAddr(), e.Client, e.Client, authz),
			WithRedisOptions(func(o *redis.Options) { o.MaxRetries = -1; o.DialerRetries = 1 }))
		require.NoError(t, err)
		err = c.Redis().Ping(ctx).Err()
		_ = c.Close()
		require.Error(t, err)
		var te *TLSError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, CauseServerID, te.Cause)
		_, perr := PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, authz, "")
		require.Error(t, perr)
		for _, err := range []error{err, perr} {
			assert.Contains(t, err.Error(), "server presented spiffe://example.org/redis", "%+v", tc)
			assert.Contains(t, err.Error(), tc.want, "%+v", tc)
		}
		t.Logf("%v\n%v", err, perr)
	}
}
