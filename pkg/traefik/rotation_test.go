package traefik

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var _ rotation.Reloader = (*Reloader)(nil)

// TestWithRotationManager wires the Reloader into a real rotation pipeline:
// dev Workload API → svid.Source → rotation.Manager → files → Reloader. An
// SVID push and a CA rotation each land in the dynamic configuration.
func TestWithRotationManager(t *testing.T) {
	api := svidtest.Start(t, svidtest.Config{
		TrustDomain: td,
		Identities:  []svidtest.Identity{{ID: traefikID, Hint: "traefik"}},
		TTL:         time.Hour,
		JWTTTL:      time.Hour,
		Logger:      zap.NewNop(),
	})

	ctx := context.Background()
	src := svid.NewSource(svid.WithAddr(api.Addr()))
	require.NoError(t, src.Start(ctx))
	t.Cleanup(func() { _ = src.Close() })

	outDir := filepath.Join(t.TempDir(), "traefik")
	dyn := dynPath(t)
	// The output's names: each reload is told where the manager wrote them.
	r, err := NewReloader(dyn, Files{Cert: "svid.pem", Key: "key.pem", Bundle: "bundle.pem"}, WithPeerSPIFFEID(modelID))
	require.NoError(t, err)
	m, err := rotation.NewManager(src, []rotation.Output{{
		Name: "traefik", Selector: svid.Selector{Hint: "traefik"}, Dir: outDir,
		CertFile: "svid.pem", KeyFile: "key.pem", BundleFile: "bundle.pem",
		Reloads: []rotation.Reloader{r},
	}})
	require.NoError(t, err)
	require.NoError(t, m.Start(ctx))
	t.Cleanup(func() { require.NoError(t, m.Close()) })

	serial := func() string { return api.CurrentSVIDs()[0].Certificates[0].SerialNumber.Text(16) }
	hasSerial := func(s string) func() bool {
		return func() bool {
			b, err := os.ReadFile(dyn)
			return err == nil && strings.Contains(string(b), "serial "+s+" ")
		}
	}
	require.Eventually(t, hasSerial(serial()), 30*time.Second, 20*time.Millisecond)

	require.NoError(t, api.RotateSVIDs())
	require.Eventually(t, hasSerial(serial()), 30*time.Second, 20*time.Millisecond)

	require.NoError(t, api.RotateCA())
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(dyn)
		if err != nil || !strings.Contains(string(b), "serial "+serial()+" ") {
			return false
		}
		c := parseStrict(t, b)
		return strings.Count(c.HTTP.ServersTransports["spiffe"].RootCAs[0], "BEGIN CERTIFICATE") == 2
	}, 30*time.Second, 20*time.Millisecond)
	st := m.Snapshot()
	require.Len(t, st.Outputs, 1)
	require.Empty(t, st.Outputs[0].LastReloadError)
}
