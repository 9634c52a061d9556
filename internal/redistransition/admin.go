package redistransition

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

// AdminConfig is how the agent reaches Redis for CONFIG SET / CONFIG GET /
// CLIENT LIST. The password is only ever read from PasswordFile.
type AdminConfig struct {
	// Addr is one of:
	//   unix:///run/redis/redis.sock    unix socket (preferred: file permissions guard it)
	//   tls://host:6380 or rediss://...  mTLS with the agent's SVID
	//   tcp://host:6379, redis://... or host:port   plaintext (password required;
	//                                    stops working when phase D closes the port)
	Addr string
	// Username is the ACL user for AUTH ("" = default user).
	Username string
	// PasswordFile, when set, is read on every connection and sent with
	// AUTH. A server without a password (phase D) is accepted.
	PasswordFile string
	// SVIDs, Bundles and ServerAuthorizer are required for tls:// addresses.
	SVIDs            x509svid.Source
	Bundles          x509bundle.Source
	ServerAuthorizer tlsconfig.Authorizer
	// DialTimeout defaults to 5s.
	DialTimeout time.Duration
}

type adminTarget struct {
	network, addr string
	tls           bool
}

func (c AdminConfig) target() (adminTarget, error) {
	a := strings.TrimSpace(c.Addr)
	if a == "" {
		return adminTarget{}, fmt.Errorf("redis admin: addr is required")
	}
	if !strings.Contains(a, "://") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return adminTarget{}, fmt.Errorf("redis admin: addr %q: %w", a, err)
		}
		return adminTarget{network: "tcp", addr: a}, nil
	}
	u, err := url.Parse(a)
	if err != nil {
		return adminTarget{}, fmt.Errorf("redis admin: addr %q: %w", a, err)
	}
	if u.User != nil {
		return adminTarget{}, fmt.Errorf("redis admin: addr %q: credentials in the address are not allowed; use password_file", redactURL(u))
	}
	switch u.Scheme {
	case "unix":
		p := u.Path
		if p == "" {
			p = u.Opaque
		}
		if p == "" {
			return adminTarget{}, fmt.Errorf("redis admin: addr %q: empty socket path", a)
		}
		return adminTarget{network: "unix", addr: p}, nil
	case "tcp", "redis", "tls", "rediss":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return adminTarget{}, fmt.Errorf("redis admin: addr %q: %w", a, err)
		}
		t := adminTarget{network: "tcp", addr: u.Host, tls: u.Scheme == "tls" || u.Scheme == "rediss"}
		if t.tls && (c.SVIDs == nil || c.Bundles == nil || c.ServerAuthorizer == nil) {
			return adminTarget{}, fmt.Errorf("redis admin: addr %q: TLS needs the agent's SVID source, bundle source and a server authorizer", a)
		}
		return t, nil
	}
	return adminTarget{}, fmt.Errorf("redis admin: addr %q: scheme must be unix, tls, rediss, tcp or redis", a)
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = url.User("REDACTED")
	return c.String()
}

// Admin is an administrative connection pool to one Redis server.
type Admin struct {
	cfg AdminConfig
	t   adminTarget
	rdb *redis.Client
}

// NewAdmin validates cfg and returns an Admin; it connects lazily. It
// takes the package's Options like its other constructors; none of them
// changes the admin connection today.
func NewAdmin(cfg AdminConfig, o ...Option) (*Admin, error) {
	t, err := cfg.target()
	if err != nil {
		return nil, err
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	a := &Admin{cfg: cfg, t: t}
	// CountClients relies on the ClientName.
	ro := &redis.Options{Network: t.network, Addr: t.addr, Dialer: a.dial,
		PoolSize: 2, MaxRetries: 1, DialTimeout: cfg.DialTimeout, ClientName: AdminClientName}
	if cfg.PasswordFile != "" {
		// Read on every connection; ACL-style AUTH with an explicit user
		// also succeeds when the default user has no password (phase D).
		user := cfg.Username
		if user == "" {
			user = "default"
		}
		pf := cfg.PasswordFile
		ro.CredentialsProviderContext = func(context.Context) (string, string, error) {
			pw, err := readPasswordFile(pf)
			if err != nil {
				return "", "", fmt.Errorf("redis admin %s: %w", cfg.Addr, err)
			}
			return user, pw, nil
		}
	}
	a.rdb = redis.NewClient(ro)
	return a, nil
}

// Addr is the configured address (for messages).
func (a *Admin) Addr() string { return a.cfg.Addr }

// Redis returns the underlying go-redis client.
func (a *Admin) Redis() *redis.Client { return a.rdb }

// Close closes the pool.
func (a *Admin) Close() error { return a.rdb.Close() }

func (a *Admin) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: a.cfg.DialTimeout}
	var c net.Conn
	var err error
	if a.t.tls {
		td := &tls.Dialer{NetDialer: nd, Config: redisclient.NewTLSConfig(a.cfg.SVIDs, a.cfg.Bundles, a.cfg.ServerAuthorizer)}
		c, err = td.DialContext(ctx, a.t.network, a.t.addr)
	} else {
		c, err = nd.DialContext(ctx, a.t.network, a.t.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("redis admin %s: %w", a.cfg.Addr, err)
	}
	return c, nil
}

// ConfigGet returns the values of the named settings.
func (a *Admin) ConfigGet(ctx context.Context, keys ...string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		m, err := a.rdb.ConfigGet(ctx, k).Result()
		if err != nil {
			return nil, fmt.Errorf("redis admin %s: CONFIG GET %s: %w", a.cfg.Addr, k, err)
		}
		out[k] = m[k]
	}
	return out, nil
}

// ConfigSet sets several settings in one CONFIG SET (atomic on Redis 7:
// all apply or none). Values are never logged (requirepass).
func (a *Admin) ConfigSet(ctx context.Context, kv [][2]string) error {
	if len(kv) == 0 {
		return nil
	}
	args := []any{"CONFIG", "SET"}
	names := make([]string, 0, len(kv))
	for _, p := range kv {
		args = append(args, p[0], p[1])
		names = append(names, p[0])
	}
	if err := a.rdb.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("redis admin %s: CONFIG SET %s: %w", a.cfg.Addr, strings.Join(names, " "), err)
	}
	return nil
}

// ConfigFile returns the server's config file path ("" when it runs
// without one, in which case CONFIG REWRITE is impossible).
func (a *Admin) ConfigFile(ctx context.Context) (string, error) {
	info, err := a.rdb.Info(ctx, "server").Result()
	if err != nil {
		return "", fmt.Errorf("redis admin %s: INFO server: %w", a.cfg.Addr, err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "config_file:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", nil
}

// Rewrite runs CONFIG REWRITE when the server has a config file and
// reports whether it did.
func (a *Admin) Rewrite(ctx context.Context) (bool, error) {
	f, err := a.ConfigFile(ctx)
	if err != nil || f == "" {
		return false, err
	}
	if err := a.rdb.ConfigRewrite(ctx).Err(); err != nil {
		return false, fmt.Errorf("redis admin %s: CONFIG REWRITE (%s): %w", a.cfg.Addr, f, err)
	}
	return true, nil
}

// Clients returns CLIENT LIST split by laddr port, without the admin's own
// connection.
func (a *Admin) Clients(ctx context.Context, plainPort, tlsPort string) (ConnCounts, error) {
	conn := a.rdb.Conn()
	defer func() { _ = conn.Close() }()
	id, err := conn.ClientID(ctx).Result()
	if err != nil {
		return ConnCounts{}, fmt.Errorf("redis admin %s: CLIENT ID: %w", a.cfg.Addr, err)
	}
	list, err := conn.ClientList(ctx).Result()
	if err != nil {
		return ConnCounts{}, fmt.Errorf("redis admin %s: CLIENT LIST: %w", a.cfg.Addr, err)
	}
	return CountClients(list, plainPort, tlsPort, fmt.Sprint(id)), nil
}
