//go:build conformance

package spire

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/identity-agent/identity-agent/internal/fleettest"
	"github.com/identity-agent/identity-agent/internal/redistest"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

// backend is a plaintext HTTP server on loopback answering "hello from
// backend"; it returns its address.
func backend(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "hello from backend")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// get does one request with Connection: close through addr.
func get(addr string) (string, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

// scenarioProxies: a client-mode proxy (plaintext in, mTLS out) and a
// server-mode proxy (mTLS in, plaintext out) in one agent, each presenting
// its own SVID picked by hint and authorizing the other's SPIFFE ID: a
// request crosses both, before and after a rotation; a third client-mode
// proxy whose SVID the server's allow does not name is refused.
func scenarioProxies(t *testing.T, api workloadAPI) {
	srvID := api.AddEntry(t, entry{Path: "/proxy/server", Hint: "proxy-server"})
	cliID := api.AddEntry(t, entry{Path: "/proxy/client", Hint: "proxy-client"})
	api.AddEntry(t, entry{Path: "/proxy/intruder", Hint: "proxy-intruder"})
	pSrv, pCli, pBad := fleettest.FreePort(t), fleettest.FreePort(t), fleettest.FreePort(t)
	a := writeAgentConfig(t, api, "  - name: rot\n    hint: proxy-server\n    dir: $DIR/out\n    cert_file: svid.pem\n    key_file: key.pem\n", fmt.Sprintf(`proxies:
  - name: srv
    mode: server
    hint: proxy-server
    listen: 127.0.0.1:%[1]d
    target: %[4]s
    allow: [%[5]s]
  - name: cli
    mode: client
    hint: proxy-client
    listen: 127.0.0.1:%[2]d
    target: 127.0.0.1:%[1]d
    allow: [%[6]s]
  - name: bad
    mode: client
    hint: proxy-intruder
    listen: 127.0.0.1:%[3]d
    target: 127.0.0.1:%[1]d
    allow: [%[6]s]
`, pSrv, pCli, pBad, backend(t), cliID, srvID))
	a.start(t)
	through := func() {
		t.Helper()
		fleettest.WaitFor(t, 20*time.Second, "a request through both proxies", func() (bool, string) {
			body, err := get(fmt.Sprintf("127.0.0.1:%d", pCli))
			return err == nil && body == "hello from backend", fmt.Sprint(body, err)
		})
	}
	through()
	if body, err := get(fmt.Sprintf("127.0.0.1:%d", pBad)); err == nil {
		t.Fatalf("a client whose SPIFFE ID allow does not name got through: %q", body)
	}
	before := a.status(t).Outputs[0].Serial
	fleettest.WaitFor(t, api.TTL(), "a rotation", func() (bool, string) {
		return a.status(t).Outputs[0].Serial != before, before
	})
	through()
}

// scenarioRedis: pkg/redisclient against a real redis-server with TLS,
// both on SVIDs of this Workload API: the agent writes Redis's files and
// reloads it with CONFIG SET; the client presents its own SVID (from the
// Workload API directly) and authorizes the server by SPIFFE ID; after a
// rotation Redis serves the new certificate and new connections work.
func scenarioRedis(t *testing.T, api workloadAPI) {
	redistest.Need(t)
	srvID := api.AddEntry(t, entry{Path: "/redis/server", Hint: "redis-server"})
	cliID := api.AddEntry(t, entry{Path: "/redis/client", Hint: "redis-client"})
	dir := redistest.ShortDir(t)
	sock := filepath.Join(dir, "redis.sock")
	a := writeAgentConfig(t, api, `  - name: redis
    hint: redis-server
    dir: $DIR/redis
    cert_file: svid.pem
    key_file: key.pem
    bundle_file: bundle.pem
    reload:
      - redis: {addr: unix://`+sock+`}
`, "")
	// Redis needs its files to start: `fetch` them once first, with the
	// same output but no reload (there is no Redis to reload yet).
	b, err := os.ReadFile(a.cfg)
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := filepath.Join(a.dir, "bootstrap.yaml")
	noReload, _, _ := strings.Cut(string(b), "    reload:\n")
	if err := os.WriteFile(bootstrap, []byte(noReload), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := fleettest.Run(t, time.Minute, a.dir, nil, agentBin, "fetch", "--config", bootstrap); r.Code != 0 {
		t.Fatalf("fetch: %s", r)
	}
	files := filepath.Join(a.dir, "redis")
	tlsPort := fleettest.FreePort(t)
	redis := exec.Command("redis-server", "--port", "0", "--bind", "127.0.0.1", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir, "--tls-port", strconv.Itoa(tlsPort),
		"--tls-cert-file", filepath.Join(files, "svid.pem"), "--tls-key-file", filepath.Join(files, "key.pem"),
		"--tls-ca-cert-file", filepath.Join(files, "bundle.pem"), "--tls-auth-clients", "yes")
	logs := &fleettest.Buffer{}
	redis.Stdout, redis.Stderr = logs, logs
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = redis.Process.Kill()
		_ = redis.Wait()
		if t.Failed() {
			t.Logf("redis-server:\n%s", tail(logs.String(), 3000))
		}
	})
	a.start(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+api.Socket())),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, sv := range svids {
				if sv.ID == cliID {
					return sv
				}
			}
			return svids[0]
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	client, err := redisclient.New(redisclient.ModeTLSOnly, redisclient.WithTLS(addr, src, src, tlsconfig.AuthorizeID(srvID)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Close() }()
	roundTrip := func(v string) {
		t.Helper()
		fleettest.WaitFor(t, 20*time.Second, "SET/GET over mTLS", func() (bool, string) {
			rdb := client.Redis()
			if err := rdb.Set(ctx, "k", v, 0).Err(); err != nil {
				return false, err.Error()
			}
			got, err := rdb.Get(ctx, "k").Result()
			return err == nil && got == v, fmt.Sprint(got, err)
		})
	}
	roundTrip("one")
	served := func() string {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, //nolint:gosec // reads the served certificate only
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				sv, err := src.GetX509SVID()
				if err != nil {
					return nil, err
				}
				raw := [][]byte{}
				for _, c := range sv.Certificates {
					raw = append(raw, c.Raw)
				}
				return &tls.Certificate{Certificate: raw, PrivateKey: sv.PrivateKey}, nil
			}})
		if err != nil {
			return err.Error()
		}
		defer func() { _ = c.Close() }()
		return strings.ToUpper(c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16))
	}
	first := served()
	fleettest.WaitFor(t, api.TTL()+30*time.Second, "Redis serving a rotated SVID", func() (bool, string) {
		s := served()
		return s != first && !strings.Contains(s, " "), s
	})
	roundTrip("two")
	a.waitStatus(t, 0, 30*time.Second)
}
