package redistransition

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/rotation"
)

// BenchmarkConfigSetReload: the "redis" reload action end to end (unix
// socket admin connection, AUTH, CONFIG SET of the three TLS files).
func BenchmarkConfigSetReload(b *testing.B) {
	e, r := benchEnv(b, redistest.Spec{TLS: true, Password: true})
	rl, err := NewConfigSetReloader(adminConfig(r, e), TLSFiles(e.Files))
	require.NoError(b, err)
	ctx := context.Background()
	for b.Loop() {
		if err := rl.Reload(ctx, rotation.Written{}); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEnv(b *testing.B, spec redistest.Spec) (*redistest.Env, *redistest.Proc) {
	b.Helper()
	e := redistest.NewEnv(b)
	return e, redistest.Start(b, e, spec)
}
