package redistransition

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// BenchmarkConfigSetReload: the "redis" reload action end to end (unix
// socket admin connection, AUTH, CONFIG SET of the three TLS files).
func BenchmarkConfigSetReload(b *testing.B) {
	e, r := benchEnv(b, redisSpec{tls: true, password: true})
	rl, err := NewConfigSetReloader(r.admin(e), e.files)
	require.NoError(b, err)
	ctx := context.Background()
	for b.Loop() {
		if err := rl.Reload(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEnv(b *testing.B, spec redisSpec) (*env, *redisProc) {
	b.Helper()
	e := newEnv(b)
	return e, startRedis(b, e, spec)
}
