package redisclient

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/pkg/svid/svidtest"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	serverID = spiffeid.RequireFromString("spiffe://example.org/redis")
	clientID = spiffeid.RequireFromString("spiffe://example.org/worker")
)

const testPassword = "s3cret-pass"

// shortTempDir keeps unix socket paths under the 108-byte limit.
func shortTempDir(t testing.TB) string {
	t.Helper()
	return svidtest.ShortDir(t, "rc")
}

type env struct {
	srv    *svidtest.Server
	server *workloadapi.X509Source // the Redis server's identity (as the agent sees it)
	client *workloadapi.X509Source // a workload's identity
	dir    string
	pwFile string
	files  tlsFiles
}

// tlsFiles are the Redis server's certificate files.
type tlsFiles struct{ CertFile, KeyFile, CAFile string }

func pick(id spiffeid.ID) func([]*x509svid.SVID) *x509svid.SVID {
	return func(s []*x509svid.SVID) *x509svid.SVID {
		for _, v := range s {
			if v.ID == id {
				return v
			}
		}
		return nil
	}
}

func newEnv(t testing.TB) *env {
	t.Helper()
	dir := shortTempDir(t)
	srv := svidtest.Start(t, svidtest.Config{
		TrustDomain: td,
		Identities:  []svidtest.Identity{{ID: serverID, Hint: "redis"}, {ID: clientID, Hint: "worker"}},
		TTL:         time.Hour, // rotations in these tests are explicit
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mk := func(id spiffeid.ID) *workloadapi.X509Source {
		s, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(srv.Addr())),
			workloadapi.WithDefaultX509SVIDPicker(pick(id)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	e := &env{srv: srv, server: mk(serverID), client: mk(clientID), dir: dir}
	e.pwFile = filepath.Join(dir, "redis.pass")
	require.NoError(t, os.WriteFile(e.pwFile, []byte(testPassword+"\n"), 0o600))
	e.files = tlsFiles{CertFile: filepath.Join(dir, "svid.pem"), KeyFile: filepath.Join(dir, "key.pem"), CAFile: filepath.Join(dir, "bundle.pem")}
	e.writeServerFiles(t)
	return e
}

// writeServerFiles writes the Redis server's SVID the way an agent output
// does (PEM chain, PKCS#8 key, bundle), each file renamed into place.
func (e *env) writeServerFiles(t testing.TB) *x509svid.SVID {
	t.Helper()
	s, certs, key, bundle := svidPEM(t, e.server)
	for path, data := range map[string][]byte{e.files.CertFile: certs, e.files.KeyFile: key, e.files.CAFile: bundle} {
		require.NoError(t, writeFileRename(path, data))
	}
	return s
}

// svidPEM is src's current SVID and its PEM encodings: chain, PKCS#8 key
// and the bundle of the test trust domain.
func svidPEM(t testing.TB, src *workloadapi.X509Source) (s *x509svid.SVID, certs, key, bundle []byte) {
	t.Helper()
	s, err := src.GetX509SVID()
	require.NoError(t, err)
	certs, key, err = s.Marshal()
	require.NoError(t, err)
	b, err := src.GetX509BundleForTrustDomain(td)
	require.NoError(t, err)
	bundle, err = b.Marshal()
	require.NoError(t, err)
	return s, certs, key, bundle
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

type redisProc struct {
	port, tlsPort int
	sock, dir     string
	conf          string
	cmd           *exec.Cmd
}

func (r *redisProc) plainAddr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }
func (r *redisProc) tlsAddr() string   { return "127.0.0.1:" + strconv.Itoa(r.tlsPort) }

type redisSpec struct {
	tls        bool   // open tls-port with e.files
	port0      bool   // plaintext port off
	password   bool   // requirepass
	authClient string // tls-auth-clients (default yes)
	confFile   bool   // run from a config file (so CONFIG REWRITE works)
}

// startRedis runs a real redis-server on free loopback ports.
func startRedis(t testing.TB, e *env, spec redisSpec) *redisProc {
	t.Helper()
	needRedisServer(t)
	dir := shortTempDir(t)
	r := &redisProc{port: freePort(t), tlsPort: freePort(t), sock: filepath.Join(dir, "redis.sock"), dir: dir}
	lines := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(r.port),
		"unixsocket " + r.sock,
		"unixsocketperm 700",
		`save ""`,
		"appendonly no",
		"dir " + dir,
		"logfile " + filepath.Join(dir, "redis.log"),
	}
	if spec.port0 {
		lines[1] = "port 0"
	}
	if spec.password {
		lines = append(lines, "requirepass "+testPassword)
	}
	if spec.tls {
		ac := spec.authClient
		if ac == "" {
			ac = "yes"
		}
		lines = append(lines, "tls-port "+strconv.Itoa(r.tlsPort), "tls-cert-file "+e.files.CertFile,
			"tls-key-file "+e.files.KeyFile, "tls-ca-cert-file "+e.files.CAFile, "tls-auth-clients "+ac)
	}
	var args []string
	if spec.confFile {
		r.conf = filepath.Join(dir, "redis.conf")
		require.NoError(t, os.WriteFile(r.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
		args = []string{r.conf}
	} else {
		for _, l := range lines {
			k, v, _ := strings.Cut(l, " ")
			if v == `""` {
				v = ""
			}
			args = append(args, "--"+k, v)
		}
	}
	cmd := exec.Command("redis-server", args...)
	require.NoError(t, cmd.Start())
	r.cmd = cmd
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "redis.log")); err == nil {
				t.Logf("redis.log:\n%s", tail(string(b), 3000))
			}
		}
	})
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: r.sock, Password: pwIf(spec.password), MaxRetries: -1})
	defer func() { _ = rdb.Close() }()
	require.Eventually(t, func() bool { return rdb.Ping(context.Background()).Err() == nil }, 20*time.Second, 50*time.Millisecond,
		"redis-server did not answer on %s", r.sock)
	return r
}

func pwIf(b bool) string {
	if b {
		return testPassword
	}
	return ""
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// adminRedis is a plain go-redis client on the unix socket for assertions.
func adminRedis(t testing.TB, r *redisProc, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: r.sock, Password: password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// needRedisServer skips without redis-server, except in CI (CI=true), where
// a missing server must fail rather than silently pass.
func needRedisServer(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not installed (CI): %v", err)
		}
		t.Skip("redis-server not installed")
	}
}

// writeFileRename replaces path atomically (temp file + rename), as the
// agent's writer does, so redis-server never reads half a file.
func writeFileRename(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
