package main_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

// echoServer is the plaintext service behind a server-mode proxy: it
// answers every line with "echo: " + line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, "echo: "+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// mtlsConn is a client of the server-mode proxy presenting id's SVID and
// checking the proxy presents spiffe://example.org/svc.
type mtlsConn struct {
	conn *tls.Conn
	r    *bufio.Reader
}

func dialProxy(srv *svidtest.Server, addr string, id spiffeid.ID) (*mtlsConn, error) {
	s, err := srv.CA().IssueX509SVID(id, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		return nil, err
	}
	cfg := tlsconfig.MTLSClientConfig(x509svid.Source(staticSVID{s}), srv.CA().X509Bundle(),
		tlsconfig.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/svc")))
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	return &mtlsConn{conn: c, r: bufio.NewReader(c)}, nil
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// roundTrip sends a line and reads the echo. TLS 1.3 lets a refused
// client finish its handshake before the server's alert arrives, so a
// refusal shows up here as a read error.
func (m *mtlsConn) roundTrip(msg string) (string, error) {
	_ = m.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(m.conn, msg+"\n"); err != nil {
		return "", err
	}
	line, err := m.r.ReadString('\n')
	return strings.TrimSpace(line), err
}

const reloadBase = `workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s/admin.sock
log: {level: info}
outputs:
  - name: svc
    dir: %[2]s/out
    cert_file: svid.pem
    key_file: key.pem
    reload:
      - exec: {command: [%[3]s]}
%[4]s
proxies:
%[5]s
`

func proxyYAML(name, listen, target, allow string) string {
	return fmt.Sprintf("  - {name: %s, mode: server, spiffe_id: spiffe://example.org/svc, listen: %q, target: %q, allow: [%s], drain_timeout: 3s}\n",
		name, listen, target, allow)
}

func statusJSON(t *testing.T, cfg string) map[string]any {
	t.Helper()
	res := runCLI(t, "status", "--json", "--config", cfg)
	var doc map[string]any
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &doc), "status --json: %+v", res)
	return doc
}

// TestReloadAppliesConfigLive is issue 13's "done when", against the real
// binary: a reload that drops a peer from the proxy's allow list closes
// its long-lived connection (issue 18) and refuses its new ones; an added
// output appears; a removed proxy drains; an output
// whose files did not change fires no reload; an invalid file changes
// nothing and turns status WARNING until a good file is reloaded.
func TestReloadAppliesConfigLive(t *testing.T) {
	dir := svidtest.ShortDir(t, "rl")
	srv, apiSock := startDevAPI(t, time.Hour)
	reloads := filepath.Join(dir, "svc.reloads")
	script := filepath.Join(dir, "reload.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho reload >> "+reloads+"\n"), 0o755))
	echo := echoServer(t)
	pAddr, qAddr := freeAddr(t), freeAddr(t)
	client := spiffeid.RequireFromString("spiffe://example.org/client")
	cfg := filepath.Join(dir, "agent.yaml")
	write := func(extraOutputs, proxies string) {
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(reloadBase, apiSock, dir, script, extraOutputs, proxies)), 0o600))
	}
	write("", proxyYAML("p", pAddr, echo, client.String())+proxyYAML("q", qAddr, echo, client.String()))
	startAgent(t, cfg)
	waitStatus(t, cfg, 0)
	require.Eventually(t, func() bool { return len(readLines(reloads)) == 1 }, 20*time.Second, 50*time.Millisecond)
	before := statusJSON(t, cfg)["config"].(map[string]any)
	require.NotEmpty(t, before["hash"], "status shows the config's hash")

	long, err := dialProxy(srv, pAddr, client)
	require.NoError(t, err)
	defer func() { _ = long.conn.Close() }()
	got, err := long.roundTrip("one")
	require.NoError(t, err)
	require.Equal(t, "echo: one", got)
	viaQ, err := dialProxy(srv, qAddr, client)
	require.NoError(t, err)
	defer func() { _ = viaQ.conn.Close() }()
	_, err = viaQ.roundTrip("q")
	require.NoError(t, err)

	// Reload: p allows someone else, q is removed, an output is added.
	write(`  - {name: extra, dir: `+dir+`/extra, cert_file: svid.pem, key_file: key.pem}`,
		proxyYAML("p", pAddr, echo, "spiffe://example.org/someone-else"))
	res := runCLI(t, "reload", "--config", cfg)
	require.Equal(t, 0, res.code, "%+v", res)
	require.Contains(t, res.stdout, "output extra: added")
	require.Contains(t, res.stdout, "proxy p: updated in place")
	require.Contains(t, res.stdout, "proxy q: removed (draining)")
	require.NotContains(t, res.stdout, "output svc", "svc did not change")

	require.Eventually(t, func() bool { _, err := long.roundTrip("two"); return err != nil }, 10*time.Second, 100*time.Millisecond,
		"an established connection of a peer no longer allowed must be closed")
	if fresh, err := dialProxy(srv, pAddr, client); err == nil {
		_, err = fresh.roundTrip("three")
		_ = fresh.conn.Close()
		require.Error(t, err, "a new connection from a peer no longer allowed must be refused")
	}
	viaP, err := dialProxy(srv, pAddr, spiffeid.RequireFromString("spiffe://example.org/someone-else"))
	require.NoError(t, err)
	defer func() { _ = viaP.conn.Close() }()
	got, err = viaP.roundTrip("allowed now")
	require.NoError(t, err)
	require.Equal(t, "echo: allowed now", got)
	require.FileExists(t, filepath.Join(dir, "extra", "svid.pem"))
	// The removed proxy: no new connections; the open one is cut when its
	// 3 s drain ends.
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", qAddr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, 10*time.Second, 50*time.Millisecond, "the removed proxy's listener must close")
	require.Eventually(t, func() bool { _, err := viaQ.roundTrip("q"); return err != nil }, 15*time.Second, 200*time.Millisecond,
		"the removed proxy's connections end with its drain")
	require.Len(t, readLines(reloads), 1, "no reload may fire for an output whose files did not change")
	waitStatus(t, cfg, 0)

	// An invalid file: nothing changes, reload exits 2 with the line,
	// status turns WARNING and says why.
	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	bad := strings.Replace(string(good), "    key_file: key.pem\n", "    key_file: key.pem\n    no_such_field: 1\n", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(bad), 0o600))
	res = runCLI(t, "reload", "--config", cfg)
	require.Equal(t, 2, res.code, "%+v", res)
	require.Contains(t, res.stdout, filepath.Base(cfg)+":11: outputs[0].no_such_field", "%+v", res)
	// status --config refuses a file run would refuse (UNKNOWN); the
	// running agent is asked on its socket.
	st := runCLI(t, "status", "--admin", filepath.Join(dir, "admin.sock"))
	require.Equal(t, 1, st.code, "%+v", st)
	require.Contains(t, st.stdout, "config reload failed")
	got, err = viaP.roundTrip("four")
	require.NoError(t, err, "a refused reload must not touch running proxies")
	require.Equal(t, "echo: four", got)

	// Back to a good file: OK again, and the status keeps the failure on record.
	require.NoError(t, os.WriteFile(cfg, good, 0o600))
	res = runCLI(t, "reload", "--config", cfg)
	require.Equal(t, 0, res.code, "%+v", res)
	require.Contains(t, res.stdout, "nothing changed")
	waitStatus(t, cfg, 0)
	conf := statusJSON(t, cfg)["config"].(map[string]any)
	require.NotNil(t, conf["last_failed_reload"])
	require.NotEqual(t, before["hash"], conf["hash"])
	require.Len(t, readLines(reloads), 1)
}

// TestReloadRefusesRestartOnlySettings: a new Workload API socket cannot be
// applied live; the reload says so with its line and nothing changes.
func TestReloadRefusesRestartOnlySettings(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "1s")
	proc, _ := startAgentProcess(t, cfg)
	waitStatus(t, cfg, 0)
	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	moved := strings.Replace(string(good), "socket: unix://"+apiSock, "socket: unix://"+apiSock+".new", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(moved), 0o600))
	res := runCLI(t, "reload", "--config", cfg, "--pid", fmt.Sprint(proc.Pid))
	require.Equal(t, 2, res.code, "%+v", res)
	require.Contains(t, res.stdout, filepath.Base(cfg)+":2: workload_api.socket: cannot change while the agent runs")
	st := runCLI(t, "status", "--admin", filepath.Join(dir, "admin.sock"))
	require.Equal(t, 1, st.code, "%+v", st)
	require.Contains(t, st.stdout, "config reload failed")
}

func readLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(data)) == "" {
		return nil
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// TestReloadThroughTheServiceManager: where systemd runs the agent,
// `identity-agent reload` asks `systemctl reload`, and systemd fails that
// job when the agent refuses the file (the unit's ExecReload waits for the
// outcome). The command must then print the agent's own refusal and exit 2,
// not just "systemctl failed". A systemctl stand-in on PATH plays systemd:
// it signals the agent and fails the job as systemd would.
func TestReloadThroughTheServiceManager(t *testing.T) {
	dir := t.TempDir()
	_, apiSock := startDevAPI(t, time.Hour)
	cfg := writeConfig(t, dir, apiSock, "1s")
	proc, _ := startAgentProcess(t, cfg)
	waitStatus(t, cfg, 0)
	bin := filepath.Join(dir, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	calls := filepath.Join(dir, "systemctl.calls")
	stub := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[1]s
case "$1" in
  is-active) exit 0 ;;
  show) echo %[2]d; exit 0 ;;
  reload) kill -HUP %[2]d; sleep 1; echo "Job for identity-agent.service failed." >&2; exit 1 ;;
esac
exit 3
`, calls, proc.Pid)
	require.NoError(t, os.WriteFile(filepath.Join(bin, "systemctl"), []byte(stub), 0o755))

	good, err := os.ReadFile(cfg)
	require.NoError(t, err)
	bad := strings.Replace(string(good), "cert_file: svid.pem", "cert_file: svid.pem\n    no_such_field: 1", 1)
	require.NoError(t, os.WriteFile(cfg, []byte(bad), 0o600))
	cmd := exec.Command(agentBin, "reload", "--config", cfg)
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "stdout %s stderr %s", out.String(), errb.String())
	require.Equal(t, 2, ee.ExitCode(), "stdout %s stderr %s", out.String(), errb.String())
	require.Contains(t, out.String(), filepath.Base(cfg)+":14: outputs[0].no_such_field")
	require.Equal(t, []string{"is-active --quiet identity-agent.service", "show --property=MainPID --value identity-agent.service", "reload identity-agent.service"}, readLines(calls))
}
