package service

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the reference files in packaging/ from their templates")

var (
	referenceUnit  = filepath.Join("..", "..", "packaging", "systemd", "identity-agent.service")
	referencePlist = filepath.Join("..", "..", "packaging", "launchd", "io.identity-agent.plist")
)

// TestReferenceFiles keeps the reviewed files in packaging/ identical to what
// Install renders with the default values.
func TestReferenceFiles(t *testing.T) {
	for _, tc := range []struct {
		file   string
		render func(InstallConfig) ([]byte, error)
		goos   string
	}{
		{referenceUnit, RenderSystemdUnit, "linux"},
		{referencePlist, RenderLaunchdPlist, "darwin"},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			got, err := tc.render(ReferenceConfig(tc.goos))
			require.NoError(t, err)
			if *update {
				require.NoError(t, os.WriteFile(tc.file, got, 0o644))
			}
			want, err := os.ReadFile(tc.file)
			require.NoError(t, err)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from its template rendered with the defaults.\n"+
					"If the template change is intended, refresh it with:\n"+
					"    go generate ./packaging/   (= go test ./internal/service -run TestReferenceFiles -update)\n"+
					"and review the diff.\n--- rendered ---\n%s", tc.file, got)
			}
		})
	}
}
