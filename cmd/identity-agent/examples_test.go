package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/service"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// The examples' tests run the shipped files, not copies of them: each
// example file is read from examples/ and only well-known values (socket
// paths, directories, published ports, the service group) are replaced by
// temporary ones. A replacement whose old value is no longer in the file
// fails the test, so an edited example cannot silently stop being tested.

const examplesDir = "../../examples"

// Values the examples use and the tests replace.
const (
	exSpireSocket    = "unix:///run/spire/sockets/agent.sock"
	exSpireSocketMac = "unix:///var/run/spire/sockets/agent.sock"
	exAdminSocket    = "/run/identity-agent/admin.sock"
	exAdminSocketMac = "/var/db/identity-agent/admin.sock"
)

var (
	idAPI         = spiffeid.RequireFromString("spiffe://example.org/api")
	idTraefik     = spiffeid.RequireFromString("spiffe://example.org/traefik")
	idModelServer = spiffeid.RequireFromString("spiffe://example.org/model-server")
	idIntruder    = spiffeid.RequireFromString("spiffe://example.org/web")
)

// readExample returns an example file with each (old, new) pair replaced;
// every old value must occur in the file.
func readExample(t *testing.T, name string, oldNew ...string) string {
	t.Helper()
	require.Zero(t, len(oldNew)%2, "old/new pairs")
	b, err := os.ReadFile(filepath.Join(examplesDir, name))
	require.NoError(t, err)
	s := string(b)
	for i := 0; i < len(oldNew); i += 2 {
		require.Contains(t, s, oldNew[i], "examples/%s no longer contains %q: update the test with the example", name, oldNew[i])
		s = strings.ReplaceAll(s, oldNew[i], oldNew[i+1])
	}
	return s
}

// exampleConfig writes an example agent config with replacements into dir
// and checks that `config validate` accepts it.
func exampleConfig(t *testing.T, dir, name string, oldNew ...string) string {
	t.Helper()
	p := filepath.Join(dir, filepath.Base(name))
	require.NoError(t, os.WriteFile(p, []byte(readExample(t, name, oldNew...)), 0o600))
	r := runCLI(t, "config", "validate", p)
	require.Equal(t, 0, r.code, "examples/%s after replacements: %s", name, r.stderr)
	return p
}

// startDevAPIWith serves the development Workload API with the given
// identities; rotations happen only when the test asks (TTL 1h). It returns
// the path of the API's socket with it.
func startDevAPIWith(t *testing.T, ids ...svidtest.Identity) (*svidtest.Server, string) {
	t.Helper()
	srv := svidtest.Start(t, svidtest.Config{TrustDomain: td, TTL: time.Hour, Identities: ids})
	return srv, srv.SocketPath()
}

// clientSVID issues an SVID for id from the dev API's CA, as SPIRE would
// for another workload, and writes it as PEM files for curl and openssl.
func clientSVID(t *testing.T, srv *svidtest.Server, dir string, id spiffeid.ID) (certFile, keyFile string) {
	t.Helper()
	s, err := srv.CA().IssueX509SVID(id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	certPEM, keyPEM, err := s.Marshal()
	require.NoError(t, err)
	base := filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(id.Path(), "/"), "/", "_"))
	certFile, keyFile = base+".pem", base+"-key.pem"
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	return certFile, keyFile
}

// curl runs the real curl; a non-zero code is a refused or failed request.
func curl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "10", "--connect-timeout", "5"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{code, out.String(), errb.String()}
}

// httpsLocalhost is curl's target for a server on 127.0.0.1:port whose
// certificate names localhost (the dev API's DNSNames, as SPIRE's -dns).
func httpsLocalhost(port int, path string) []string {
	return []string{"--resolve", fmt.Sprintf("localhost:%d:127.0.0.1", port), fmt.Sprintf("https://localhost:%d%s", port, path)}
}

// needUvicorn finds Debian's python3-uvicorn: skipped locally, a failure in CI.
func needUvicorn(t *testing.T) {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", "import uvicorn").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("uvicorn is not installed for /usr/bin/python3 (CI must install python3-uvicorn): %v: %s", err, out)
		}
		t.Skipf("uvicorn not installed for /usr/bin/python3: %s", out)
	}
}

// execStart returns the argv of a unit file's ExecStart= (continuation lines
// joined; the examples use no quoting).
func execStart(t *testing.T, unit string) []string {
	t.Helper()
	var line string
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if line != "" {
			line += " " + strings.TrimSuffix(l, `\`)
			if !strings.HasSuffix(l, `\`) {
				break
			}
			continue
		}
		if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
			line = strings.TrimSuffix(rest, `\`)
			if !strings.HasSuffix(rest, `\`) {
				break
			}
		}
	}
	require.NotEmpty(t, line, "no ExecStart= in unit")
	return strings.Fields(line)
}

// currentGroup is the test user's primary group, standing in for the
// service's group (api, traefik) in owner: lines.
func currentGroup(t *testing.T) (string, int) {
	t.Helper()
	u, err := user.Current()
	require.NoError(t, err)
	g, err := user.LookupGroupId(u.Gid)
	require.NoError(t, err)
	gid, err := strconv.Atoi(u.Gid)
	require.NoError(t, err)
	return g.Name, gid
}

// waitFor polls cond until it holds or timeout passes, then fails with
// what and cond's last description (require.Eventually formats its message
// before the first try, which would show no result).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after %v; last: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hexSerial(c *x509.Certificate) string {
	return strings.TrimLeft(strings.ToUpper(c.SerialNumber.Text(16)), "0")
}

func leafOf(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	require.NotNil(t, block, "no PEM block")
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}

// supervisor restarts a process whenever it exits, as systemd does for a
// unit with Restart=always (RestartSec shortened): the example's reload
// `systemctl restart api.service` only has to stop uvicorn.
type supervisor struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	starts  int
	stopped bool
	done    chan struct{}
}

func supervise(t *testing.T, argv []string, dir, pidFile string, logs *syncBuffer) *supervisor {
	t.Helper()
	s := &supervisor{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			s.mu.Lock()
			if s.stopped {
				s.mu.Unlock()
				return
			}
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Dir = dir
			cmd.Stdout, cmd.Stderr = logs, logs
			err := cmd.Start()
			if err == nil {
				s.cmd = cmd
				s.starts++
				tmp := pidFile + ".tmp"
				err = os.WriteFile(tmp, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600)
				if err == nil {
					err = os.Rename(tmp, pidFile)
				}
			}
			s.mu.Unlock()
			if err != nil {
				fmt.Fprintf(logs, "supervisor: %v\n", err)
				if cmd.Process != nil {
					_ = cmd.Process.Kill()
					_ = cmd.Wait()
				}
				return
			}
			_ = cmd.Wait()
			_ = os.Remove(pidFile)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		s.mu.Lock()
		s.stopped = true
		if s.cmd != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
		s.mu.Unlock()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.mu.Lock()
			if s.cmd != nil {
				_ = s.cmd.Process.Kill()
			}
			s.mu.Unlock()
			<-s.done
		}
	})
	return s
}

func (s *supervisor) state() (pid, starts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		pid = s.cmd.Process.Pid
	}
	return pid, s.starts
}

// examples/uvicorn: the agent writes uvicorn's files and restarts it after a
// rotation; uvicorn requires a client certificate.
func TestUvicornExample(t *testing.T) {
	needUvicorn(t)
	needBinary(t, "curl")
	needBinary(t, "openssl")
	dir := t.TempDir()
	srv, apiSock := startDevAPIWith(t, svidtest.Identity{ID: idAPI, DNSNames: []string{"localhost"}})
	group, _ := currentGroup(t)
	certDir := filepath.Join(dir, "certs", "api")
	cfg := exampleConfig(t, dir, "uvicorn/agent.yaml",
		exSpireSocket, "unix://"+apiSock,
		exAdminSocket, filepath.Join(dir, "admin.sock"),
		"/etc/identity-agent/certs/api", certDir,
		"group: api", "group: "+group)

	// systemctl stand-in on the agent's PATH: `restart api.service` stops
	// uvicorn (SIGTERM, as systemd's stop does) and the supervisor below
	// starts it again (Restart=always). The agent's first write happens
	// before uvicorn runs: `is-active` says so (exit 3) and the agent
	// skips that restart, as it does at boot for a unit ordered after it.
	shimDir := filepath.Join(dir, "shim")
	require.NoError(t, os.Mkdir(shimDir, 0o755))
	pidFile := filepath.Join(dir, "uvicorn.pid")
	shimLog := filepath.Join(dir, "systemctl.log")
	shim := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]s
if [ "$*" = "is-active --quiet api.service" ]; then [ -f %[2]s ] && exit 0; exit 3; fi
[ "$1" = restart ] && [ "$2" = api.service ] || { echo "systemctl stand-in: unexpected: $*" >&2; exit 1; }
[ -f %[2]s ] || exit 0
exec kill -TERM "$(cat %[2]s)"
`, shimLog, pidFile)
	require.NoError(t, os.WriteFile(filepath.Join(shimDir, "systemctl"), []byte(shim), 0o755))
	t.Setenv("PATH", shimDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	logs := startAgent(t, cfg)
	defer func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	}()
	waitStatus(t, cfg, 0)
	key, err := os.Stat(filepath.Join(certDir, "key.pem"))
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), key.Mode().Perm(), "key_mode from the example")

	// uvicorn exactly as api.service starts it, on a free loopback port,
	// serving the example's app.py.
	port := freePort(t)
	argv := execStart(t, readExample(t, "uvicorn/api.service",
		"/etc/identity-agent/certs/api", certDir,
		"--host 0.0.0.0", "--host 127.0.0.1",
		"--port 8443", "--port "+strconv.Itoa(port)))
	require.Contains(t, argv, "--ssl-cert-reqs")
	appDir := filepath.Join(dir, "srv-api")
	require.NoError(t, os.Mkdir(appDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(appDir, "app.py"), []byte(readExample(t, "uvicorn/app.py")), 0o644))
	uvLogs := &syncBuffer{}
	sup := supervise(t, argv, appDir, pidFile, uvLogs)
	defer func() {
		if t.Failed() {
			t.Logf("uvicorn logs:\n%s", uvLogs)
		}
	}()

	cert, ckey := clientSVID(t, srv, dir, idTraefik)
	bundle := filepath.Join(certDir, "bundle.pem")
	withSVID := append([]string{"--cacert", bundle, "--cert", cert, "--key", ckey}, httpsLocalhost(port, "/")...)
	var r result
	waitFor(t, 30*time.Second, "uvicorn never answered with an SVID", func() (bool, string) {
		r = curl(t, withSVID...)
		return r.code == 0, fmt.Sprintf("%+v", r)
	})
	assert.Equal(t, "ok caller=-\n", r.stdout)

	// No client certificate: --ssl-cert-reqs 2 refuses the connection.
	r = curl(t, append([]string{"--cacert", bundle}, httpsLocalhost(port, "/")...)...)
	assert.NotEqual(t, 0, r.code, "uvicorn must refuse a client without a certificate: %+v", r)
	t.Logf("without a client certificate: curl exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	assert.NotContains(t, r.stdout, "ok caller")
	assert.Contains(t, readExample(t, "uvicorn/README.md"), "\n#   "+strings.TrimSpace(r.stderr)+"\n",
		"examples/uvicorn/README.md shows what curl prints without a client certificate (it lists both outcomes the race allows)")

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	first, err := serverSerial(t, addr, cert, ckey, bundle)
	require.NoError(t, err)
	assert.Equal(t, hexSerial(srv.CurrentSVIDs()[0].Certificates[0]), strings.TrimLeft(first, "0"))
	pid1, _ := sup.state()

	// Rotation: new files, `systemctl restart api.service`, and the
	// restarted uvicorn presents the new certificate.
	require.NoError(t, srv.RotateSVIDs())
	want := hexSerial(srv.CurrentSVIDs()[0].Certificates[0])
	require.NotEqual(t, want, strings.TrimLeft(first, "0"))
	waitFor(t, 40*time.Second, "uvicorn never served the rotated certificate "+want, func() (bool, string) {
		s, err := serverSerial(t, addr, cert, ckey, bundle)
		return err == nil && strings.TrimLeft(s, "0") == want, fmt.Sprintf("serial %s, error %v", s, err)
	})
	pid2, starts := sup.state()
	assert.NotEqual(t, pid1, pid2, "uvicorn was restarted")
	assert.GreaterOrEqual(t, starts, 2)
	calls, err := os.ReadFile(shimLog)
	require.NoError(t, err)
	assert.Contains(t, string(calls), "restart api.service\n")
	onDisk, err := os.ReadFile(filepath.Join(certDir, "svid.pem"))
	require.NoError(t, err)
	assert.Equal(t, want, hexSerial(leafOf(t, onDisk)))

	r = curl(t, withSVID...)
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Equal(t, "ok caller=-\n", r.stdout)
}

// examples/uvicorn, the alternative: uvicorn on plaintext loopback, the
// agent's proxy in front authorizing callers by SPIFFE ID.
func TestUvicornExampleBehindProxy(t *testing.T) {
	needUvicorn(t)
	needBinary(t, "curl")
	dir := t.TempDir()
	srv, apiSock := startDevAPIWith(t, svidtest.Identity{ID: idAPI, DNSNames: []string{"localhost"}})
	published, plain := freePort(t), freePort(t)
	cfg := exampleConfig(t, dir, "uvicorn/agent-proxy.yaml",
		exSpireSocket, "unix://"+apiSock,
		exAdminSocket, filepath.Join(dir, "admin.sock"),
		"0.0.0.0:8443", fmt.Sprintf("127.0.0.1:%d", published),
		"127.0.0.1:8000", fmt.Sprintf("127.0.0.1:%d", plain))

	argv := execStart(t, readExample(t, "uvicorn/api-behind-proxy.service", "--port 8000", fmt.Sprintf("--port %d", plain)))
	appDir := filepath.Join(dir, "srv-api")
	require.NoError(t, os.Mkdir(appDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(appDir, "app.py"), []byte(readExample(t, "uvicorn/app.py")), 0o644))
	uv := exec.Command(argv[0], argv[1:]...)
	uv.Dir = appDir
	uvLogs := &syncBuffer{}
	uv.Stdout, uv.Stderr = uvLogs, uvLogs
	require.NoError(t, uv.Start())
	t.Cleanup(func() { _ = uv.Process.Signal(syscall.SIGTERM); _ = uv.Wait() })

	logs := startAgent(t, cfg)
	defer func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s\nuvicorn logs:\n%s", logs, uvLogs)
		}
	}()
	waitStatus(t, cfg, 0)

	bundlePEM, err := srv.CA().X509Bundle().Marshal()
	require.NoError(t, err)
	bundle := filepath.Join(dir, "bundle.pem")
	require.NoError(t, os.WriteFile(bundle, bundlePEM, 0o644))
	cert, key := clientSVID(t, srv, dir, idTraefik)
	var r result
	waitFor(t, 30*time.Second, "no answer through the proxy", func() (bool, string) {
		// A forged header naming someone else is removed by the proxy.
		r = curl(t, append([]string{"--cacert", bundle, "--cert", cert, "--key", key,
			"-H", "X-Forwarded-Client-Cert: URI=spiffe://example.org/admin"}, httpsLocalhost(published, "/")...)...)
		// Until uvicorn listens the proxy answers 502 with no body (curl
		// still exits 0): wait for the app's own answer.
		return r.code == 0 && strings.HasPrefix(r.stdout, "ok caller="), fmt.Sprintf("%+v", r)
	})
	assert.Equal(t, "ok caller=spiffe://example.org/traefik\n", r.stdout)

	// A valid SVID whose ID is not in allow: refused in the handshake.
	cert, key = clientSVID(t, srv, dir, idIntruder)
	r = curl(t, append([]string{"--cacert", bundle, "--cert", cert, "--key", key}, httpsLocalhost(published, "/")...)...)
	assert.NotEqual(t, 0, r.code, "%+v", r)
	assert.NotContains(t, r.stdout, "ok caller")
}

// ollamaAllowsHost is Ollama's guard against DNS rebinding when it listens
// on loopback (server/routes.go, allowedHostsMiddleware): only local names
// and addresses may appear in the Host header; anything else gets 403.
func ollamaAllowsHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.ToLower(host)
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified()
	}
	if host == "" || host == "localhost" {
		return true
	}
	for _, tld := range []string{".localhost", ".local", ".internal"} {
		if strings.HasSuffix(host, tld) {
			return true
		}
	}
	return false
}

// examples/ollama-macos: the server-mode proxy in front of a stand-in for
// Ollama (not installable here) on 127.0.0.1.
func TestOllamaExample(t *testing.T) {
	needBinary(t, "curl")
	dir := t.TempDir()
	srv, apiSock := startDevAPIWith(t, svidtest.Identity{ID: idModelServer, DNSNames: []string{"localhost"}})

	var mu sync.Mutex
	var seen []string // X-Forwarded-Client-Cert of each request Ollama got
	ollama := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Forwarded-Client-Cert"))
		mu.Unlock()
		if !ollamaAllowsHost(r.Host) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if r.URL.Path != "/api/tags" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"models":[{"name":"llama3.2:3b"}]}`))
	}))
	defer ollama.Close()
	requests := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}

	port := freePort(t)
	cfg := exampleConfig(t, dir, "ollama-macos/agent.yaml",
		exSpireSocketMac, "unix://"+apiSock,
		exAdminSocketMac, filepath.Join(dir, "admin.sock"),
		"0.0.0.0:6701", fmt.Sprintf("127.0.0.1:%d", port),
		"127.0.0.1:11434", strings.TrimPrefix(ollama.URL, "http://"))
	logs := startAgent(t, cfg)
	defer func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	}()
	waitStatus(t, cfg, 0)

	bundlePEM, err := srv.CA().X509Bundle().Marshal()
	require.NoError(t, err)
	bundle := filepath.Join(dir, "bundle.pem")
	require.NoError(t, os.WriteFile(bundle, bundlePEM, 0o644))

	// The reverse proxy's SVID gets through, and Ollama's side sees who called.
	cert, key := clientSVID(t, srv, dir, idTraefik)
	var r result
	waitFor(t, 30*time.Second, "no answer through the proxy", func() (bool, string) {
		r = curl(t, append([]string{"--fail", "--cacert", bundle, "--cert", cert, "--key", key}, httpsLocalhost(port, "/api/tags")...)...)
		return r.code == 0, fmt.Sprintf("%+v", r)
	})
	assert.JSONEq(t, `{"models":[{"name":"llama3.2:3b"}]}`, r.stdout)
	got := requests()
	require.Len(t, got, 1)
	assert.Contains(t, got[0], "By=spiffe://example.org/model-server;")
	assert.True(t, strings.HasSuffix(got[0], ";URI=spiffe://example.org/traefik"), got[0])

	// Traefik's route sends the public name as Host; Ollama's guard would
	// answer 403, but the example's rewrite_host sends the target address.
	require.False(t, ollamaAllowsHost("models.example.org"), "the stand-in applies Ollama's guard")
	r = curl(t, append([]string{"--fail", "--cacert", bundle, "--cert", cert, "--key", key,
		"-H", "Host: models.example.org"}, httpsLocalhost(port, "/api/tags")...)...)
	require.Equal(t, 0, r.code, "%+v", r)
	assert.Contains(t, r.stdout, "models")
	require.Len(t, requests(), 2)

	// Another workload of the same trust domain: refused in the handshake,
	// nothing reaches Ollama.
	cert, key = clientSVID(t, srv, dir, idIntruder)
	r = curl(t, append([]string{"--cacert", bundle, "--cert", cert, "--key", key}, httpsLocalhost(port, "/api/tags")...)...)
	assert.NotEqual(t, 0, r.code, "%+v", r)
	assert.NotContains(t, r.stdout, "models")
	t.Logf("SVID not in allow: curl exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	// No client certificate at all: refused too.
	r = curl(t, append([]string{"--cacert", bundle}, httpsLocalhost(port, "/api/tags")...)...)
	assert.NotEqual(t, 0, r.code, "%+v", r)
	t.Logf("no client certificate: curl exit %d: %s", r.code, strings.TrimSpace(r.stderr))
	assert.Len(t, requests(), 2, "refused callers never reach Ollama")

	// status --json counts the refusal with its cause.
	waitFor(t, 20*time.Second, "status never counted the refusals", func() (bool, string) {
		r := runCLI(t, "status", "--config", cfg, "--json")
		if r.code != 0 {
			return false, fmt.Sprintf("%+v", r)
		}
		var st struct {
			Proxies []struct {
				Name              string            `json:"name"`
				HandshakeFailures map[string]uint64 `json:"handshake_failures"`
			} `json:"proxies"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Proxies) != 1 || st.Proxies[0].Name != "ollama" {
			return false, fmt.Sprintf("%v: %s", err, r.stdout)
		}
		failures := st.Proxies[0].HandshakeFailures
		return failures["unauthorized_id"] >= 1 && failures["no_cert"] >= 1, fmt.Sprintf("handshake_failures %v", failures)
	})
}

// On macOS `identity-agent install` with the Ollama example at the default
// path renders exactly the reviewed reference plist: the example needs no
// plist of its own.
func TestOllamaExampleInstallsTheReferencePlist(t *testing.T) {
	cfg, err := config.Load(filepath.Join(examplesDir, "ollama-macos/agent.yaml"), func(string) string { return "" })
	require.NoError(t, err)
	// As `install --config /usr/local/etc/identity-agent/config.yaml` builds it
	// (no --user; the binary installed in /usr/local/bin).
	ic := service.LayoutFromConfig(cfg).InstallConfig(service.DefaultDarwinConfigPath, "")
	ic.BinaryPath = service.DefaultBinaryPath
	got, err := service.RenderLaunchdPlist(ic)
	require.NoError(t, err)
	want, err := os.ReadFile("../../packaging/launchd/io.identity-agent.plist")
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))
}

// traefikTransport is the part of a Traefik dynamic configuration the
// agent generates, with Traefik's own field names.
type traefikTransport struct {
	ServerName         string   `yaml:"serverName"`
	InsecureSkipVerify bool     `yaml:"insecureSkipVerify"`
	RootCAs            []string `yaml:"rootCAs"`
	Certificates       []struct {
		CertFile string `yaml:"certFile"`
		KeyFile  string `yaml:"keyFile"`
	} `yaml:"certificates"`
	PeerCertURI string `yaml:"peerCertURI"`
}

// examples/traefik: the agent's traefik reload generates the dynamic file
// Traefik watches, with the SVID inline, and rewrites it on rotation.
func TestTraefikExample(t *testing.T) {
	dir := t.TempDir()
	srv, apiSock := startDevAPIWith(t, svidtest.Identity{ID: idTraefik})
	group, gid := currentGroup(t)
	certDir := filepath.Join(dir, "certs", "traefik")
	dynDir := filepath.Join(dir, "traefik", "dynamic")
	dynFile := filepath.Join(dynDir, "identity-agent.yml")
	cfg := exampleConfig(t, dir, "traefik/agent.yaml",
		exSpireSocket, "unix://"+apiSock,
		exAdminSocket, filepath.Join(dir, "admin.sock"),
		"/etc/identity-agent/certs/traefik", certDir,
		"/etc/traefik/dynamic", dynDir,
		"group: traefik", "group: "+group)

	// The three Traefik files agree with each other and with the Ollama
	// example: watched directory, transport name, model server port.
	var static struct {
		Providers struct {
			File struct {
				Directory string `yaml:"directory"`
				Watch     bool   `yaml:"watch"`
			} `yaml:"file"`
		} `yaml:"providers"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readExample(t, "traefik/traefik.yml")), &static))
	assert.Equal(t, "/etc/traefik/dynamic", static.Providers.File.Directory)
	assert.True(t, static.Providers.File.Watch)
	var routes struct {
		HTTP struct {
			Services map[string]struct {
				LoadBalancer struct {
					ServersTransport string              `yaml:"serversTransport"`
					Servers          []map[string]string `yaml:"servers"`
				} `yaml:"loadBalancer"`
			} `yaml:"services"`
		} `yaml:"http"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readExample(t, "traefik/dynamic/models.yml")), &routes))
	lb := routes.HTTP.Services["models"].LoadBalancer
	assert.Equal(t, "model-server@file", lb.ServersTransport)
	require.Len(t, lb.Servers, 1)
	assert.True(t, strings.HasSuffix(lb.Servers[0]["url"], ":6701"), lb.Servers[0]["url"])
	assert.Contains(t, readExample(t, "ollama-macos/agent.yaml"), "listen: 0.0.0.0:6701")

	logs := startAgent(t, cfg)
	defer func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs)
		}
	}()
	waitStatus(t, cfg, 0)

	// check reads the dynamic file and the output's files and returns the
	// inline leaf, or an error while they do not (yet) agree.
	check := func() (*x509.Certificate, error) {
		data, err := os.ReadFile(dynFile)
		if err != nil {
			return nil, err
		}
		var doc struct {
			HTTP struct {
				ServersTransports map[string]traefikTransport `yaml:"serversTransports"`
			} `yaml:"http"`
		}
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("dynamic file is not YAML: %w", err)
		}
		st, ok := doc.HTTP.ServersTransports["model-server"]
		if !ok || len(st.Certificates) != 1 || len(st.RootCAs) != 1 {
			return nil, fmt.Errorf("no model-server transport with one certificate and one root set: %s", data)
		}
		files := map[string]string{}
		for _, n := range []string{"svid.pem", "key.pem", "bundle.pem"} {
			b, err := os.ReadFile(filepath.Join(certDir, n))
			if err != nil {
				return nil, err
			}
			files[n] = string(b)
		}
		switch {
		case st.Certificates[0].CertFile != files["svid.pem"]:
			return nil, fmt.Errorf("inline certificate differs from svid.pem")
		case st.Certificates[0].KeyFile != files["key.pem"]:
			return nil, fmt.Errorf("inline key differs from key.pem")
		case st.RootCAs[0] != files["bundle.pem"]:
			return nil, fmt.Errorf("inline roots differ from bundle.pem")
		case st.PeerCertURI != idModelServer.String() || !st.InsecureSkipVerify:
			return nil, fmt.Errorf("peerCertURI %q insecureSkipVerify %v", st.PeerCertURI, st.InsecureSkipVerify)
		}
		if _, err := tls.X509KeyPair([]byte(st.Certificates[0].CertFile), []byte(st.Certificates[0].KeyFile)); err != nil {
			return nil, fmt.Errorf("inline certificate and key: %w", err)
		}
		return leafOf(t, []byte(st.Certificates[0].CertFile)), nil
	}
	var leaf *x509.Certificate
	waitFor(t, 20*time.Second, "dynamic file never matched the output", func() (bool, string) {
		var err error
		leaf, err = check()
		return err == nil, fmt.Sprint(err)
	})
	require.Len(t, leaf.URIs, 1)
	assert.Equal(t, idTraefik.String(), leaf.URIs[0].String())
	assert.Equal(t, hexSerial(srv.CurrentSVIDs()[0].Certificates[0]), hexSerial(leaf))

	fi, err := os.Stat(dynFile)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode().Perm(), "mode from the example: it holds the key")
	assert.Equal(t, uint32(gid), fi.Sys().(*syscall.Stat_t).Gid, "group from the example's owner")
	entries, err := os.ReadDir(dynDir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the generated file, no temporary files left behind")

	// Rotation: the watched file is rewritten with the new SVID inline.
	before, err := os.ReadFile(dynFile)
	require.NoError(t, err)
	require.NoError(t, srv.RotateSVIDs())
	want := hexSerial(srv.CurrentSVIDs()[0].Certificates[0])
	require.NotEqual(t, want, hexSerial(leaf))
	waitFor(t, 20*time.Second, "dynamic file never carried the rotated SVID "+want, func() (bool, string) {
		var err error
		leaf, err = check()
		if err != nil {
			return false, err.Error()
		}
		return hexSerial(leaf) == want, "serial " + hexSerial(leaf)
	})
	after, err := os.ReadFile(dynFile)
	require.NoError(t, err)
	assert.NotEqual(t, string(before), string(after))
	fi, err = os.Stat(dynFile)
	require.NoError(t, err)
	assert.Equal(t, fs.FileMode(0o640), fi.Mode().Perm())
	entries, err = os.ReadDir(dynDir)
	require.NoError(t, err)
	assert.Len(t, entries, 1)
}

// The example agent configs that the tests above run with replacements are
// also valid as shipped, where that needs no local accounts.
func TestExampleConfigsValidate(t *testing.T) {
	for _, name := range []string{"ollama-macos/agent.yaml", "uvicorn/agent-proxy.yaml"} {
		r := runCLI(t, "config", "validate", filepath.Join(examplesDir, name))
		assert.Equal(t, 0, r.code, "%s: %s", name, r.stderr)
	}
	// The others name the service's group (api, traefik), which `config
	// validate` resolves: on this host only that lookup may fail.
	for name, group := range map[string]string{"uvicorn/agent.yaml": "api", "traefik/agent.yaml": "traefik"} {
		r := runCLI(t, "config", "validate", filepath.Join(examplesDir, name))
		if _, err := user.LookupGroup(group); err == nil {
			assert.Equal(t, 0, r.code, "%s: %s", name, r.stderr)
			continue
		}
		assert.Equal(t, 2, r.code, name)
		assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one error line: %s", r.stderr)
		assert.Contains(t, r.stderr, `group "`+group+`"`, name)
	}
}
