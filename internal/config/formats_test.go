package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/agent"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
)

const formatsExample = `workload_api:
  socket: unix:///tmp/ia/agent.sock
outputs:
  - name: haproxy
    dir: /tmp/ia/haproxy
    combined_file: crt.pem
    combined_order: chain_first
    verify: {address: "tcp://127.0.0.1:8443", server_name: web.internal, timeout: 20s}
  - name: k8s-style
    dir: /tmp/ia/creds
    layout: spiffe-fs-delivery
  - name: envoy
    dir: /tmp/ia/envoy
    cert_file: svid.pem
    key_file: key.pem
    bundle_dir: bundles
  - name: java
    dir: /tmp/ia/java
    include_federated: true
    pkcs12:
      keystore_file: keystore.p12
      truststore_file: truststore.p12
      password_file: /etc/identity-agent/p12.pass
`

func TestFormatsParse(t *testing.T) {
	cfg, err := config.Parse("agent.yaml", []byte(formatsExample), noEnv)
	require.NoError(t, err)
	require.Len(t, cfg.Outputs, 4)
	h := cfg.Outputs[0]
	assert.Equal(t, "crt.pem", h.CombinedFile)
	assert.Equal(t, "chain_first", h.CombinedOrder)
	require.NotNil(t, h.Verify)
	assert.Equal(t, "tcp://127.0.0.1:8443", h.Verify.Address)
	assert.Equal(t, "web.internal", h.Verify.ServerName)
	assert.Equal(t, 20*time.Second, time.Duration(h.Verify.Timeout))
	assert.Equal(t, rotation.LayoutSPIFFEFSDelivery, cfg.Outputs[1].Layout)
	assert.Equal(t, "bundles", cfg.Outputs[2].BundleDir)
	require.NotNil(t, cfg.Outputs[3].PKCS12)
	assert.Equal(t, "/etc/identity-agent/p12.pass", cfg.Outputs[3].PKCS12.PasswordFile)
}

func TestFormatsErrorsNameFileLine(t *testing.T) {
	const bad = `workload_api:
  socket: unix:///tmp/ia/agent.sock
outputs:
  - name: a
    dir: /tmp/ia/a
    combined_file: sub/crt.pem
    combined_order: cert_first
  - name: b
    dir: /tmp/ia/b
    layout: k8s
    bundle_dir: ../up
  - name: c
    dir: /tmp/ia/c
    pkcs12:
      keystore_file: ks.p12
      password_file: p12.pass
  - name: d
    dir: /tmp/ia/d
    bundle_file: ca.pem
    verify:
      address: 127.0.0.1:6380
  - name: e
    dir: /tmp/ia/e
    pkcs12: {truststore_file: ts.p12}
    combined_order: key_first
`
	// The rules live where the values are consumed (config, svid,
	// rotation, tlsprobe); agent.Parse runs them all, as run does.
	_, err := agent.Parse("agent.yaml", []byte(bad), noEnv)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{
		`agent.yaml:6: outputs[0].combined_file: "sub/crt.pem" must be a plain file name inside dir`,
		`agent.yaml:7: outputs[0].combined_order: combined order "cert_first": want key_first or chain_first`,
		`agent.yaml:10: outputs[1].layout: "k8s": want "spiffe-fs-delivery" (or none)`,
		`agent.yaml:11: outputs[1].bundle_dir: "../up" must be a plain file name inside dir`,
		`agent.yaml:16: outputs[2].pkcs12.password_file: "p12.pass" must be an absolute path`,
		`agent.yaml:21: outputs[3].verify.address: address "127.0.0.1:6380": want tcp://host:port or unix:///path`,
		`agent.yaml:24: outputs[4].pkcs12.password_file: is required with a keystore or truststore file`,
		`agent.yaml:25: outputs[4].combined_order: is set but combined_file is not`,
	} {
		assert.Contains(t, lines, want)
	}
	assert.Len(t, lines, 8, "each problem once: %s", err)
}

// examples/formats/agent.yaml is what operators copy: it parses and
// validates as shipped (owners are resolved later, on the target host).
func TestFormatsExampleParses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "formats", "agent.yaml"))
	require.NoError(t, err)
	cfg, err := config.Parse("agent.yaml", data, noEnv)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, o := range cfg.Outputs {
		f := o.Formats
		seen["combined_file"] = seen["combined_file"] || f.CombinedFile != ""
		seen["chain_first"] = seen["chain_first"] || f.CombinedOrder == "chain_first"
		seen["bundle_dir"] = seen["bundle_dir"] || f.BundleDir != ""
		seen["layout"] = seen["layout"] || f.Layout == rotation.LayoutSPIFFEFSDelivery
		seen["pkcs12"] = seen["pkcs12"] || f.PKCS12 != nil
		seen["verify"] = seen["verify"] || f.Verify != nil
	}
	assert.Len(t, seen, 6)
	for k, v := range seen {
		assert.True(t, v, k)
	}
}
