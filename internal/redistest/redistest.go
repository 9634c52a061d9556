package redistest

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

// The test trust domain and the two identities the Workload API serves.
var (
	TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")
	ServerID    = spiffeid.RequireFromString("spiffe://example.org/redis")
	ClientID    = spiffeid.RequireFromString("spiffe://example.org/worker")
)

// Password is requirepass of a Server started with Spec.Password, and the
// content of Env.PasswordFile.
const Password = "s3cret-pass"

// ShortDir is a temporary directory short enough for unix socket paths
// (108 bytes).
func ShortDir(t testing.TB) string {
	t.Helper()
	return svidtest.ShortDir(t, "rc")
}

// Files are the Redis server's certificate files.
type Files struct{ CertFile, KeyFile, CAFile string }

// Env is a Workload API serving ServerID (hint "redis") and ClientID
// (hint "worker"), an X.509 source for each, a password file and the
// server's TLS files written from ServerID's SVID.
type Env struct {
	Srv          *svidtest.Server
	Server       *workloadapi.X509Source // the Redis server's identity (as the agent sees it)
	Client       *workloadapi.X509Source // a workload's identity
	Dir          string
	PasswordFile string
	Files        Files
}

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

// NewEnv starts the Workload API and writes the server's files; the test's
// cleanup stops everything.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	dir := ShortDir(t)
	srv := svidtest.Start(t, svidtest.Config{
		TrustDomain: TrustDomain,
		Identities:  []svidtest.Identity{{ID: ServerID, Hint: "redis"}, {ID: ClientID, Hint: "worker"}},
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
	e := &Env{Srv: srv, Server: mk(ServerID), Client: mk(ClientID), Dir: dir}
	e.PasswordFile = filepath.Join(dir, "redis.pass")
	require.NoError(t, os.WriteFile(e.PasswordFile, []byte(Password+"\n"), 0o600))
	e.Files = Files{CertFile: filepath.Join(dir, "svid.pem"), KeyFile: filepath.Join(dir, "key.pem"), CAFile: filepath.Join(dir, "bundle.pem")}
	e.WriteServerFiles(t)
	return e
}

// WriteServerFiles writes the Redis server's current SVID the way an agent
// output does (PEM chain, PKCS#8 key, bundle), each file renamed into
// place so redis-server never reads half a file.
func (e *Env) WriteServerFiles(t testing.TB) *x509svid.SVID {
	t.Helper()
	s, certs, key, bundle := SVIDPEM(t, e.Server)
	for path, data := range map[string][]byte{e.Files.CertFile: certs, e.Files.KeyFile: key, e.Files.CAFile: bundle} {
		tmp := path + ".tmp"
		require.NoError(t, os.WriteFile(tmp, data, 0o600))
		require.NoError(t, os.Rename(tmp, path))
	}
	return s
}

// SVIDPEM is src's current SVID and its PEM encodings: chain, PKCS#8 key
// and the bundle of the test trust domain.
func SVIDPEM(t testing.TB, src *workloadapi.X509Source) (s *x509svid.SVID, certs, key, bundle []byte) {
	t.Helper()
	s, err := src.GetX509SVID()
	require.NoError(t, err)
	certs, key, err = s.Marshal()
	require.NoError(t, err)
	b, err := src.GetX509BundleForTrustDomain(TrustDomain)
	require.NoError(t, err)
	bundle, err = b.Marshal()
	require.NoError(t, err)
	return s, certs, key, bundle
}

// FreePort is a loopback TCP port free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is a running redis-server.
type Proc struct {
	Port, TLSPort int
	Sock, Dir     string
	Conf          string // the config file, with Spec.ConfFile
	Cmd           *exec.Cmd
}

// PlainAddr is the plaintext port's address.
func (r *Proc) PlainAddr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// TLSAddr is the TLS port's address.
func (r *Proc) TLSAddr() string { return "127.0.0.1:" + strconv.Itoa(r.TLSPort) }

// Spec says how to run redis-server.
type Spec struct {
	TLS        bool   // open tls-port with Env.Files
	Port0      bool   // plaintext port off
	Password   bool   // requirepass Password
	AuthClient string // tls-auth-clients (default yes)
	ConfFile   bool   // run from a config file (so CONFIG REWRITE works)
}

// Start runs a real redis-server on free loopback ports and a unix socket
// and returns once it answers PING; the test's cleanup kills it (and logs
// the end of redis.log when the test failed).
func Start(t testing.TB, e *Env, spec Spec) *Proc {
	t.Helper()
	Need(t)
	dir := ShortDir(t)
	r := &Proc{Port: FreePort(t), TLSPort: FreePort(t), Sock: filepath.Join(dir, "redis.sock"), Dir: dir}
	lines := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(r.Port),
		"unixsocket " + r.Sock,
		"unixsocketperm 700",
		`save ""`,
		"appendonly no",
		"dir " + dir,
		"logfile " + filepath.Join(dir, "redis.log"),
	}
	if spec.Port0 {
		lines[1] = "port 0"
	}
	if spec.Password {
		lines = append(lines, "requirepass "+Password)
	}
	if spec.TLS {
		ac := spec.AuthClient
		if ac == "" {
			ac = "yes"
		}
		lines = append(lines, "tls-port "+strconv.Itoa(r.TLSPort), "tls-cert-file "+e.Files.CertFile,
			"tls-key-file "+e.Files.KeyFile, "tls-ca-cert-file "+e.Files.CAFile, "tls-auth-clients "+ac)
	}
	var args []string
	if spec.ConfFile {
		r.Conf = filepath.Join(dir, "redis.conf")
		require.NoError(t, os.WriteFile(r.Conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600))
		args = []string{r.Conf}
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
	r.Cmd = cmd
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "redis.log")); err == nil {
				t.Logf("redis.log:\n%s", Tail(string(b), 3000))
			}
		}
	})
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: r.Sock, Password: PasswordIf(spec.Password), MaxRetries: -1})
	defer func() { _ = rdb.Close() }()
	require.Eventually(t, func() bool { return rdb.Ping(context.Background()).Err() == nil }, 20*time.Second, 50*time.Millisecond,
		"redis-server did not answer on %s", r.Sock)
	return r
}

// Exec runs redis-server with the config file conf as it is, without
// waiting for it; the test's cleanup kills it (and logs its output when
// the test failed).
func Exec(t testing.TB, conf string) *exec.Cmd {
	t.Helper()
	Need(t)
	cmd := exec.Command("redis-server", conf)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			t.Logf("redis-server output:\n%s", Tail(out.String(), 3000))
		}
	})
	return cmd
}

// PasswordIf is Password when b, else "".
func PasswordIf(b bool) string {
	if b {
		return Password
	}
	return ""
}

// Tail is the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Admin is a plain go-redis client on r's unix socket, for assertions.
func Admin(t testing.TB, r *Proc, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: r.Sock, Password: password})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Context is a 30s context cancelled at the test's end.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Need skips without redis-server, except in CI (CI=true), where a
// missing server must fail rather than silently pass.
func Need(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-server not installed (CI): %v", err)
		}
		t.Skip("redis-server not installed")
	}
}
