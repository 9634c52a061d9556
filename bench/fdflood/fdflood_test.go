package fdflood

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var agentBin string

func TestMain(m *testing.M) { fleettest.MainWithAgent(m, "ia-fdflood-", &agentBin) }

const (
	nofile    = 1024
	attackers = 1040 // per listener, as in issue 18
)

var (
	serverID = spiffeid.RequireFromString("spiffe://example.org/svc")
	clientID = spiffeid.RequireFromString("spiffe://example.org/client")
)

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// BenchmarkFDFlood: each op is one authorized request through the agent's
// server-mode proxy on a new mTLS connection, and every tenth op also a
// status request on the admin socket. proxy-ok-% and status-ok-% are the
// shares answered; baseline is unattacked, flood has attackers idle
// connections each on metrics_listen and on the admin socket, replacing
// every one closed at once.
func BenchmarkFDFlood(b *testing.B) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		b.Skip("prlimit (util-linux) not installed")
	}
	dir := svidtest.ShortDir(b, "fdflood")
	api := svidtest.Start(b, svidtest.Config{TrustDomain: serverID.TrustDomain(), TTL: time.Hour,
		Identities: []svidtest.Identity{{ID: serverID}}})
	metrics, proxyAddr := freeAddr(b), freeAddr(b)
	sock := filepath.Join(dir, "admin.sock")
	cfg := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`workload_api:
  socket: unix://%[1]s
admin:
  socket: %[2]s
  metrics_listen: %[3]s
log: {level: warn}
outputs:
  - {name: svc, dir: %[4]s/out, cert_file: svid.pem, key_file: key.pem, bundle_file: bundle.pem}
proxies:
  - {name: echo, mode: server, spiffe_id: %[5]s, listen: %[6]q, target: %[7]q, allow: [%[8]s]}
`, api.SocketPath(), sock, metrics, dir, serverID, proxyAddr, echoServer(b), clientID)), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(prlimit, fmt.Sprintf("--nofile=%d:%d", nofile, nofile), agentBin, "run", "--config", cfg)
	logs := &syncLog{}
	cmd.Stdout, cmd.Stderr = io.Discard, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() })
	svid, err := api.CA().IssueX509SVID(clientID, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	tlsCfg := tlsconfig.MTLSClientConfig(x509svid.Source(staticSVID{svid}), api.CA().X509Bundle(), tlsconfig.AuthorizeID(serverID))
	request := func(i int) bool {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", proxyAddr, tlsCfg)
		if err != nil {
			return false
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := io.WriteString(c, msg); err != nil {
			return false
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && line == "echo: "+msg
	}
	status := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := admin.Fetch(ctx, sock)
		return err == nil && r.Ready
	}
	deadline := time.Now().Add(30 * time.Second)
	for !status() || !request(0) {
		if time.Now().After(deadline) {
			b.Fatalf("agent not serving after 30s; logs:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	run := func(b *testing.B) {
		var ok, statusOK, statusN int
		var statusTime, proxyTime time.Duration
		for i := 0; b.Loop(); i++ {
			t0 := time.Now()
			if request(i) {
				ok++
			}
			proxyTime += time.Since(t0)
			if i%10 == 0 {
				t0 := time.Now()
				if status() {
					statusOK++
				}
				statusTime += time.Since(t0)
				statusN++
			}
		}
		b.ReportMetric(100*float64(ok)/float64(b.N), "proxy-ok-%")
		b.ReportMetric(float64(proxyTime.Microseconds())/1000/float64(b.N), "proxy-ms")
		b.ReportMetric(100*float64(statusOK)/float64(statusN), "status-ok-%")
		b.ReportMetric(float64(statusTime.Microseconds())/1000/float64(statusN), "status-ms")
	}
	b.Run("baseline", run)

	d := net.Dialer{Timeout: 5 * time.Second}
	floods := []*fleettest.IdleFlood{
		fleettest.StartIdleFlood(attackers, func() (net.Conn, error) { return d.Dial("tcp", metrics) }),
		fleettest.StartIdleFlood(attackers, func() (net.Conn, error) { return d.Dial("unix", sock) }),
	}
	defer func() {
		for _, f := range floods {
			f.Stop()
		}
	}()
	for floods[0].Dials() < attackers || floods[1].Dials() < attackers {
		time.Sleep(10 * time.Millisecond)
	}
	b.Run(fmt.Sprintf("flood=%dx2", attackers), run)
	if strings.Contains(logs.String(), "too many open files") {
		b.Errorf("the agent ran out of file descriptors:\n%s", logs.String())
	}
}

func freeAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// echoServer answers every line with "echo: " + line.
func echoServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ln.Close() })
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
