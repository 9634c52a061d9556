package traefik

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("example.org")
	traefikID = spiffeid.RequireFromPath(td, "/traefik")
	modelID   = spiffeid.RequireFromPath(td, "/model-server")
)

// startSource starts a dev Workload API serving traefikID (hint
// "traefik") and a svid.Source that has its first X.509 context.
func startSource(t *testing.T) (*svidtest.Server, *svid.Source) {
	t.Helper()
	api := svidtest.Start(t, svidtest.Config{
		TrustDomain: td,
		Identities:  []svidtest.Identity{{ID: traefikID, Hint: "traefik"}},
		TTL:         time.Hour,
		Logger:      zap.NewNop(),
	})
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	// Start's context is the streams' lifetime: not the wait's.
	require.NoError(t, src.Start(context.Background()))
	t.Cleanup(func() { _ = src.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, src.WaitReady(ctx))
	return api, src
}

// writeOnce builds a rotation.Manager over src for outs and runs one pass:
// Format.Build is reached only through an Output.
func writeOnce(t *testing.T, src rotation.Source, outs ...rotation.Output) *rotation.Manager {
	t.Helper()
	m, err := rotation.NewManager(src, outs, rotation.WithLogger(zap.NewNop()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	require.NoError(t, m.WriteAll(context.Background()))
	return m
}

func pemFormat() *rotation.PEM {
	return &rotation.PEM{CertFile: "svid.pem", KeyFile: "key.pem", BundleFile: "bundle.pem"}
}

// parseStrict decodes like a schema check: unknown keys are errors.
func parseStrict(t *testing.T, data []byte) Config {
	t.Helper()
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(data))
	d.KnownFields(true)
	require.NoError(t, d.Decode(&c))
	return c
}

func read(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}
