//go:build conformance

package spire

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// agentRun is one identity-agent: its directory, config and process.
type agentRun struct {
	dir, cfg string
	proc     *fleettest.Proc
}

// writeAgentConfig writes an agent configuration for api with the given
// outputs (YAML list items, indented by four spaces) and optional extra
// top-level YAML, in a short directory of its own.
func writeAgentConfig(t testing.TB, api workloadAPI, outputs string, extra string) *agentRun {
	t.Helper()
	dir := svidtest.ShortDir(t, "ia-")
	cfg := fmt.Sprintf(`workload_api:
  socket: unix://%s
  retry_max: 2s
admin:
  socket: %s/admin.sock
log: {level: debug}
rotation:
  retry_min: 100ms
  retry_max: 1s
outputs:
%s
%s`, api.Socket(), dir, strings.ReplaceAll(outputs, "$DIR", dir), strings.ReplaceAll(extra, "$DIR", dir))
	p := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &agentRun{dir: dir, cfg: p}
}

// start runs `identity-agent run` and waits until status is OK.
func (a *agentRun) start(t testing.TB) {
	t.Helper()
	a.proc = fleettest.Start(t, "identity-agent run", agentBin, "run", "--config", a.cfg)
	var last status
	fleettest.WaitFor(t, 60*time.Second, "identity-agent run: status OK", func() (bool, string) {
		if a.proc.Exited() {
			t.Fatalf("identity-agent run exited:\n%s", a.proc.Logs)
		}
		last = a.status(t)
		return last.code == 0, fmt.Sprintf("exit %d %s %v", last.code, last.Severity, last.Reasons)
	})
}

// status is `identity-agent status --json`, decoded.
type status struct {
	code     int
	Severity string   `json:"severity"`
	Reasons  []string `json:"reasons"`
	Outputs  []struct {
		Name           string    `json:"name"`
		SpiffeID       string    `json:"spiffe_id"`
		Serial         string    `json:"serial"`
		NotAfter       time.Time `json:"not_after"`
		LastWriteError string    `json:"last_write_error"`
		Rotations      uint64    `json:"rotations"`
		JWT            []struct {
			File      string    `json:"file"`
			Audience  []string  `json:"audience"`
			Expiry    time.Time `json:"expiry"`
			NextFetch time.Time `json:"next_fetch"`
			LastError string    `json:"last_error"`
		} `json:"jwt"`
	} `json:"outputs"`
	WorkloadAPI struct {
		Connected bool   `json:"connected"`
		LastError string `json:"last_error"`
	} `json:"workload_api"`
	raw string
}

func (a *agentRun) status(t testing.TB) status {
	t.Helper()
	r := fleettest.Run(t, 30*time.Second, a.dir, nil, agentBin, "status", "--config", a.cfg, "--json")
	var s status
	if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r)
	}
	s.code, s.raw = r.Code, r.Stdout
	return s
}

// waitStatus polls status until its exit code is want.
func (a *agentRun) waitStatus(t testing.TB, want int, timeout time.Duration) status {
	t.Helper()
	var last status
	fleettest.WaitFor(t, timeout, fmt.Sprintf("status exit %d", want), func() (bool, string) {
		last = a.status(t)
		return last.code == want, fmt.Sprintf("exit %d %s %v", last.code, last.Severity, last.Reasons)
	})
	return last
}

// svidFiles reads a cert/key/bundle triple and checks what any consumer
// relies on: the leaf names id, the key is the leaf's, the chain verifies
// to the bundle. It returns the leaf.
func svidFiles(t testing.TB, id spiffeid.ID, certPath, keyPath, bundlePath string) *x509.Certificate {
	t.Helper()
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := x509svid.Parse(certPEM, keyPEM) // checks that the key matches the leaf
	if err != nil {
		t.Fatalf("%s + %s: %v", certPath, keyPath, err)
	}
	if sv.ID != id {
		t.Fatalf("%s names %s, want %s", certPath, sv.ID, id)
	}
	bundle, err := x509bundle.Load(id.TrustDomain(), bundlePath)
	if err != nil {
		t.Fatalf("%s: %v", bundlePath, err)
	}
	if _, _, err := x509svid.Verify(sv.Certificates, bundle); err != nil {
		t.Fatalf("%s does not verify to %s: %v", certPath, bundlePath, err)
	}
	return sv.Certificates[0]
}

// mode is the permission bits of the file a name resolves to.
func mode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// parseCombined checks one read of a combined file (key and chain, any
// order): it must hold exactly one key, and that key must be the leaf's.
// It returns the leaf's serial, or an error for a torn read.
func parseCombined(b []byte) (string, error) {
	var key crypto.Signer
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PRIVATE KEY":
			if key != nil {
				return "", fmt.Errorf("two keys")
			}
			k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return "", err
			}
			key = k.(crypto.Signer)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return "", err
			}
			certs = append(certs, c)
		}
	}
	if key == nil || len(certs) == 0 {
		return "", fmt.Errorf("key or certificate missing (%d certificates)", len(certs))
	}
	type pub interface{ Equal(crypto.PublicKey) bool }
	if !key.Public().(pub).Equal(certs[0].PublicKey) {
		return "", fmt.Errorf("key does not match leaf %s", certs[0].SerialNumber)
	}
	return certs[0].SerialNumber.String(), nil
}

func mustID(t testing.TB, s string) spiffeid.ID {
	t.Helper()
	id, err := spiffeid.FromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// svidFilesExpired reads a certificate and key that may have expired and
// checks only that they belong together.
func svidFilesExpired(t testing.TB, certPath, keyPath string) *x509.Certificate {
	t.Helper()
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("%s + %s: %v", certPath, keyPath, err)
	}
	return sv.Certificates[0]
}
