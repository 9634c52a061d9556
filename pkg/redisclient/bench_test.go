package redisclient

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"
)

// BenchmarkPingMTLSPooled: a PING through the tls_only client's pool.
func BenchmarkPingMTLSPooled(b *testing.B) {
	e, r := benchEnv(b, redisSpec{tls: true, port0: true})
	c, err := New(ModeTLSOnly, WithTLS(r.tlsAddr(), e.client, e.client, tlsconfig.AuthorizeID(serverID)))
	require.NoError(b, err)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	for b.Loop() {
		if err := c.Redis().Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewMTLSConnection: dial + handshake + AUTH + PING, as a new pool
// connection or the tls-ping gate does.
func BenchmarkNewMTLSConnection(b *testing.B) {
	e, r := benchEnv(b, redisSpec{tls: true, password: true})
	ctx := context.Background()
	authz := tlsconfig.AuthorizeID(serverID)
	for b.Loop() {
		if _, err := PingTLS(ctx, r.tlsAddr(), e.client, e.client, authz, e.pwFile); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDualAuthFallbackDial: one new dual_auth connection while the TLS
// port refuses connections (TLS attempt, then password on plaintext).
func BenchmarkDualAuthFallbackDial(b *testing.B) {
	e, r := benchEnv(b, redisSpec{password: true})
	c, err := New(ModeDualAuth, WithTLS(r.tlsAddr(), e.client, e.client, tlsconfig.AuthorizeID(serverID)),
		WithPlaintext(r.plainAddr()), WithPasswordFile(e.pwFile), WithRetryTLSInterval(1)) // 1ns: try TLS on every dial
	require.NoError(b, err)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	for b.Loop() {
		conn, err := c.d.dial(ctx, "tcp", "")
		if err != nil {
			b.Fatal(err)
		}
		_ = conn.Close()
	}
}

func benchEnv(b *testing.B, spec redisSpec) (*env, *redisProc) {
	b.Helper()
	e := newEnv(b)
	return e, startRedis(b, e, spec)
}
