package redisclient

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/redistest"
)

// BenchmarkPingMTLSPooled: a PING through the tls_only client's pool.
func BenchmarkPingMTLSPooled(b *testing.B) {
	e, r := benchEnv(b, redistest.Spec{TLS: true, Port0: true})
	c, err := New(ModeTLSOnly, WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID)))
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
	e, r := benchEnv(b, redistest.Spec{TLS: true, Password: true})
	ctx := context.Background()
	authz := tlsconfig.AuthorizeID(serverID)
	for b.Loop() {
		if _, err := PingTLS(ctx, r.TLSAddr(), e.Client, e.Client, authz, e.PasswordFile); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDualAuthFallbackDial: one new dual_auth connection while the TLS
// port refuses connections (TLS attempt, then password on plaintext).
func BenchmarkDualAuthFallbackDial(b *testing.B) {
	e, r := benchEnv(b, redistest.Spec{Password: true})
	c, err := New(ModeDualAuth, WithTLS(r.TLSAddr(), e.Client, e.Client, tlsconfig.AuthorizeID(serverID)),
		WithPlaintext(r.PlainAddr()), WithPasswordFile(e.PasswordFile), WithRetryTLSInterval(1)) // 1ns: try TLS on every dial
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

func benchEnv(b *testing.B, spec redistest.Spec) (*redistest.Env, *redistest.Proc) {
	b.Helper()
	e := redistest.NewEnv(b)
	return e, redistest.Start(b, e, spec)
}
