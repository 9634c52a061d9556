package main_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A client-mode proxy whose certificate the server refuses logs that at
// WARN with cause=peer_rejected (docs/PROXY.md). Under TLS 1.3 the
// client's side of the handshake is done before the server checks the
// client's certificate, so the refusal arrives as the first read of the
// relayed connection; it used to be dropped without a word. The server
// here is the same agent's server-mode proxy, allowing another ID only.
func TestClientProxyLogsPeerRejected(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); b := make([]byte, 64); n, _ := c.Read(b); _, _ = c.Write(b[:n]) }()
		}
	}()
	srvAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cliAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
log: {level: info}
proxies:
  - {name: srv, mode: server, listen: %[3]q, target: %[4]q, allow: [spiffe://example.org/nobody]}
  - {name: cli, mode: client, listen: %[5]q, target: %[3]q, allow: [spiffe://example.org/svc]}
`, apiSock, dir, srvAddr, echo.Addr().String(), cliAddr)), 0o600))
	logs := startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	waitFor(t, 30*time.Second, "cli logs peer_rejected", func() (bool, string) {
		c, err := net.DialTimeout("tcp", cliAddr, 5*time.Second)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte("ping"))
			_, _ = c.Read(make([]byte, 8))
			_ = c.Close()
		}
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"proxy":"cli"`) && strings.Contains(l, `"cause":"peer_rejected"`) &&
				strings.Contains(l, `"level":"warn"`) && strings.Contains(l, `"peer_id":"spiffe://example.org/svc"`) {
				return true, l
			}
		}
		return false, logs.String()
	})
}

// Every file-mode problem `config validate` reports suggests a mode that
// `config validate` then accepts (issue 22: key_mode "0666" suggested
// 0644, which the next check refused as "lets every user read a secret").
func TestModeSuggestionsPass(t *testing.T) {
	suggestion := regexp.MustCompile(`use (?:at most )?(\d{4})(?: or (\d{4}))?`)
	for _, c := range []struct{ field, mode, extra string }{
		{"key_mode", "0666", ""},
		{"key_mode", "0777", ""},
		{"key_mode", "0664", ""},
		{"key_mode", "0644", ""},
		{"key_mode", "0666", "unsafe_world_readable_key: true"},
		{"cert_mode", "0666", ""},
		{"cert_mode", "0022", ""},
		{"cert_mode", "0020", ""},
	} {
		t.Run(c.field+"="+c.mode+c.extra, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "agent.yaml")
			write := func(mode string) {
				extra := ""
				if c.extra != "" {
					extra = "\n    " + c.extra
				}
				require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api: {socket: "unix:///run/spire/agent.sock"}
outputs:
  - name: svc
    dir: %s/out
    cert_file: svid.pem
    key_file: key.pem
    %s: "%s"%s
`, dir, c.field, mode, extra)), 0o600))
			}
			write(c.mode)
			r := runCLI(t, "config", "validate", cfg)
			require.Equal(t, 2, r.code, "%+v", r)
			m := suggestion.FindStringSubmatch(r.stderr)
			require.NotNil(t, m, "no suggested mode in %q", r.stderr)
			for _, s := range m[1:] {
				if s == "" {
					continue
				}
				write(s)
				r := runCLI(t, "config", "validate", cfg)
				require.Equal(t, 0, r.code, "suggested %s=%s is refused: %+v", c.field, s, r)
			}
		})
	}
}

// An allow entry whose trust domain the file names nowhere else is most
// likely a typo: `config validate` warns with its line and still exits 0.
func TestValidateWarnsUnknownAllowTrustDomain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	write := func(allow string) {
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api: {socket: "unix:///run/spire/agent.sock"}
outputs:
  - {name: svc, dir: %s/out, spiffe_id: spiffe://example.org/svc, cert_file: c.pem, key_file: k.pem}
proxies:
  - name: p
    mode: server
    listen: 127.0.0.1:6701
    target: 127.0.0.1:1
    allow:
      - spiffe://example.org/ok
      - %s
`, dir, allow)), 0o600))
	}
	write("spiffe://exmaple.org/traefik")
	r := runCLI(t, "config", "validate", cfg)
	require.Equal(t, 0, r.code, "%+v", r)
	require.Contains(t, r.stderr, "warning: "+cfg+`:11: proxies[0].allow[1]: "spiffe://exmaple.org/traefik": trust domain "exmaple.org" is named nowhere else in this file`)
	write("spiffe://example.org/traefik")
	r = runCLI(t, "config", "validate", cfg)
	require.Equal(t, 0, r.code, "%+v", r)
	require.NotContains(t, r.stderr, "warning")
}

// A proxy whose address is taken stops `run` before any side effect (no
// file written, no admin socket) with one line naming the file's line of
// that proxy's listen field, no repeated prefix, exit 1.
func TestRunPortInUseBeforeSideEffects(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = taken.Close() })
	free := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
outputs:
  - {name: svc, dir: %[2]s/out, cert_file: svid.pem, key_file: key.pem}
proxies:
  - name: ok
    mode: server
    listen: %[4]q
    target: 127.0.0.1:1
    allow: [spiffe://example.org/x]
  - name: p
    mode: server
    listen: %[3]q
    target: 127.0.0.1:1
    allow: [spiffe://example.org/x]
`, apiSock, dir, taken.Addr().String(), free)), 0o600))
	r := runCLI(t, "run", "--config", cfg)
	require.Equal(t, 1, r.code, "%+v", r)
	want := fmt.Sprintf("%s:15: proxies[1].listen: %q: listen tcp %s: bind: address already in use", cfg, taken.Addr().String(), taken.Addr().String())
	require.Contains(t, r.stderr, want+"\n", "%+v", r)
	require.NotContains(t, r.stderr, "identity-agent: ")
	_, err = os.Stat(filepath.Join(dir, "out", "svid.pem"))
	require.ErrorIs(t, err, os.ErrNotExist, "a file was written before the agent exited")
	_, err = os.Stat(filepath.Join(dir, "admin.sock"))
	require.ErrorIs(t, err, os.ErrNotExist, "the admin socket was created before the agent exited")
	// The other proxy's listener, opened first, was released.
	l, err := net.Listen("tcp", free)
	require.NoError(t, err)
	_ = l.Close()
}

// Small rough edges of `config validate` (issue 22, 2.9): one mistake is
// one line, and a tcp:// Workload API address without a port is refused
// here instead of at every connection attempt.
func TestValidateSmallEdges(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	write := func(socket, reload string) {
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api: {socket: %q}
outputs:
  - name: svc
    dir: %s/out
    cert_file: c.pem
    key_file: k.pem
    reload:
      - %s
`, socket, dir, reload)), 0o600))
	}
	write("unix:///run/spire/agent.sock", `exec: {command: "/usr/bin/reload x"}`)
	r := runCLI(t, "config", "validate", cfg)
	require.Equal(t, 2, r.code, "%+v", r)
	require.Equal(t, cfg+`:8: outputs[0].reload[0].exec: "/usr/bi..." is not a list (use [a, b] or one "- item" per line)`+"\n", r.stderr)

	write("tcp://127.0.0.1", `exec: {command: [systemctl, reload, x]}`)
	r = runCLI(t, "config", "validate", cfg)
	require.Equal(t, 2, r.code, "%+v", r)
	require.Equal(t, cfg+`:1: workload_api.socket: "tcp://127.0.0.1" must be tcp://IP:port: address 127.0.0.1: missing port in address`+"\n", r.stderr)
	write("tcp://127.0.0.1:8081", `exec: {command: [systemctl, reload, x]}`)
	r = runCLI(t, "config", "validate", cfg)
	require.Equal(t, 0, r.code, "%+v", r)
}

// `dev` says its errors in the command's words, not the library's package
// name (issue 22: "identity-agent: svidtest: hint "a" used twice").
func TestDevErrorsNameNoPackage(t *testing.T) {
	r := runCLI(t, "dev", "--socket", filepath.Join(t.TempDir(), "s.sock"),
		"--spiffe-id", "spiffe://example.org/x#a", "--spiffe-id", "spiffe://example.org/y#a")
	require.Equal(t, 2, r.code, "%+v", r)
	require.Equal(t, "identity-agent: dev: hint \"a\" used twice\n", r.stderr)
}

// A JWT-only output is written once at start (issue 22: demo-jwt was
// written twice when the JWT bundles arrived before the first X.509
// context: that arrival minted a new token). The streams race, so the
// agent is started several times, each on a fresh directory.
func TestJWTOutputWrittenOnceAtStart(t *testing.T) {
	_, apiSock := startDevAPI(t, time.Hour)
	for i := range 6 {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "agent.yaml")
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api: {socket: "unix://%s"}
admin: {socket: %s/admin.sock}
outputs:
  - name: demo-jwt
    dir: %s/demo-jwt
    jwt:
      - audience: [demo]
        file: token.jwt
    jwt_bundle_file: jwks.json
`, apiSock, dir, dir)), 0o600))
		proc, logs := startAgentProcess(t, cfg)
		waitFor(t, 30*time.Second, "agent ready", func() (bool, string) {
			return strings.Contains(logs.String(), `"agent ready"`), logs.String()
		})
		time.Sleep(time.Second) // a second write, if any, follows within ms
		require.Equal(t, 1, strings.Count(logs.String(), `"files written","output":"demo-jwt"`), "start %d:\n%s", i, logs)
		_ = proc.Signal(os.Interrupt)
	}
}

// Once the bundles are known, `run` logs a proxy allow entry whose trust
// domain is neither ours nor federated (issue 22: exmaple.org passed run
// silently); one of a trust domain we hold a bundle for is not logged.
func TestRunWarnsUnknownAllowTrustDomain(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
proxies:
  - {name: p, mode: server, listen: "127.0.0.1:%[3]d", target: 127.0.0.1:1, allow: [spiffe://exmaple.org/traefik, spiffe://example.org/ok]}
`, apiSock, dir, freePort(t))), 0o600))
	logs := startAgent(t, cfg)
	waitFor(t, 30*time.Second, "the warning", func() (bool, string) {
		return strings.Contains(logs.String(), `"allow":"spiffe://exmaple.org/traefik","trust_domain":"exmaple.org","bundles":["example.org"]`), logs.String()
	})
	require.NotContains(t, logs.String(), `"allow":"spiffe://example.org/ok"`)
	// status says it too: WARNING, naming the proxy, the entry and the
	// trust domains the agent holds.
	r := waitStatus(t, cfg, 1)
	require.Contains(t, r.stdout, "WARNING: proxy p: allow entry spiffe://exmaple.org/traefik: no bundle for trust domain exmaple.org (have example.org): no peer of it can connect")
	require.NotContains(t, r.stdout, "spiffe://example.org/ok")
}
