package config_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/atomicdir"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/traefik"
)

// The old spelling `reload: - traefik: {file: F}` keeps decoding and now
// means the dynamic file as a format of the output's set (base name of F,
// the entry's mode and transport) plus the reload that links F to it.
func TestTraefikReloadIsAFormatAndALink(t *testing.T) {
	const yml = `workload_api:
  socket: unix:///tmp/ia/agent.sock
outputs:
  - name: traefik
    dir: /etc/identity-agent/certs/traefik
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - traefik:
          file: /etc/traefik/dynamic/identity-agent.yml
          transport_name: model-server
          peer_spiffe_id: spiffe://example.org/model-server
          mode: "0640"
`
	cfg, err := config.Parse("agent.yaml", []byte(yml), noEnv)
	require.NoError(t, err)
	o := cfg.Outputs[0]
	formats, err := o.RotationFormats()
	require.NoError(t, err)
	var tf *traefik.Format
	for _, f := range formats {
		if f, ok := f.(*traefik.Format); ok {
			tf = f
		}
	}
	require.NotNil(t, tf, "a traefik format among %v", formats)
	assert.Equal(t, "identity-agent.yml", tf.File)
	assert.Equal(t, "model-server", tf.TransportName)
	assert.Equal(t, "spiffe://example.org/model-server", tf.PeerSPIFFEID.String())
	assert.Equal(t, os.FileMode(0o640), tf.Mode)

	rl, err := o.Reload[0].Build(config.ReloadEnv{Output: o, Owner: atomicdir.KeepOwner()})
	require.NoError(t, err)
	l, ok := rl.(*traefik.Linker)
	require.True(t, ok, "the reload is a Linker, got %T", rl)
	assert.Equal(t, traefik.Linker{Link: "/etc/traefik/dynamic/identity-agent.yml", File: "identity-agent.yml"}, *l)

	// The link replaces what an older agent wrote there, a regular file.
	dir := t.TempDir()
	link := filepath.Join(dir, "identity-agent.yml")
	require.NoError(t, os.WriteFile(link, []byte("old"), 0o600))
	target := filepath.Join(dir, "out", "identity-agent.yml")
	l2 := &traefik.Linker{Link: link, File: "identity-agent.yml"}
	require.NoError(t, l2.Reload(context.Background(), rotation.Written{Dir: filepath.Dir(target), Files: map[string]string{"identity-agent.yml": target}}))
	got, err := os.Readlink(link)
	require.NoError(t, err)
	assert.Equal(t, target, got)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary link left")
}

// Naming a file inside the output's own dir would make the link the file
// itself; Traefik must read it from its own watched directory.
func TestTraefikFileInOutputDirRefused(t *testing.T) {
	const yml = `workload_api:
  socket: unix:///tmp/ia/agent.sock
outputs:
  - name: traefik
    dir: /etc/identity-agent/certs/traefik
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - traefik: {file: /etc/identity-agent/certs/traefik/dynamic.yml}
`
	cfg, err := config.Parse("agent.yaml", []byte(yml), noEnv)
	require.NoError(t, err)
	_, err = cfg.Outputs[0].Reload[0].Build(config.ReloadEnv{Output: cfg.Outputs[0], Owner: atomicdir.KeepOwner()})
	require.ErrorContains(t, err, "traefik: dynamic file /etc/identity-agent/certs/traefik/dynamic.yml is in the output's dir")
}
