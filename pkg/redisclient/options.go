package redisclient

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
)

// Defaults of the Client's timeouts.
const (
	// DefaultTLSDialTimeout bounds the TLS attempt of a dual_auth dial:
	// short, so a dead TLS port costs little per new connection.
	DefaultTLSDialTimeout = time.Second
	// DefaultRetryTLSInterval is how long dual_auth skips an unreachable
	// TLS port, and how often it probes it meanwhile.
	DefaultRetryTLSInterval = 5 * time.Second
	// DefaultDialTimeout bounds every other dial.
	DefaultDialTimeout = 5 * time.Second
	// DefaultName labels a client's metrics when WithName is not given.
	DefaultName = "default"
)

// Option configures New (go-spiffe style functional options).
type Option func(*config)

type config struct {
	tlsAddr, plainAddr string
	svids              x509svid.Source
	bundles            x509bundle.Source
	serverAuthz        tlsconfig.Authorizer
	passwordFile       string
	username           string
	db                 int
	name               string
	tlsDialTimeout     time.Duration
	retryTLSInterval   time.Duration
	dialTimeout        time.Duration

	logger    *zap.Logger
	reg       prometheus.Registerer
	redisOpts []func(*redis.Options)
	now       func() time.Time
}

func newConfig(opts []Option) *config {
	c := &config{
		name:             DefaultName,
		tlsDialTimeout:   DefaultTLSDialTimeout,
		retryTLSInterval: DefaultRetryTLSInterval,
		dialTimeout:      DefaultDialTimeout,
		logger:           zap.NewNop(),
		now:              time.Now,
	}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	return c
}

// WithTLS is the TLS path (dual_auth, tls_only): addr is host:port of the
// server's tls-port; the client certificate comes from svids on every
// handshake, the server chain is verified against bundles and the server
// is authorized with serverAuthz (see ServerAuthorizer). The Client never
// opens a Workload API connection of its own.
func WithTLS(addr string, svids x509svid.Source, bundles x509bundle.Source, serverAuthz tlsconfig.Authorizer) Option {
	return func(c *config) {
		c.tlsAddr, c.svids, c.bundles, c.serverAuthz = addr, svids, bundles, serverAuthz
	}
}

// WithPlaintext is host:port of the server's plaintext port (disabled,
// dual_auth).
func WithPlaintext(addr string) Option {
	return func(c *config) { c.plainAddr = addr }
}

// WithPasswordFile names the file that holds the requirepass / ACL
// password. It is read on every new connection, so a rotated password
// needs no restart; its trailing line breaks ("\n", "\r\n") are not part
// of the password, as with "$(cat FILE)" in a shell. Required in disabled and dual_auth. In tls_only it is
// optional: when set the password is sent too (and ignored if the server
// has none), so a tls_only client survives a rollback from phase D to C.
func WithPasswordFile(path string) Option {
	return func(c *config) { c.passwordFile = path }
}

// WithUsername is the ACL user for AUTH (default: the default user).
func WithUsername(u string) Option {
	return func(c *config) { c.username = u }
}

// WithDB selects database n on every connection.
func WithDB(n int) Option {
	return func(c *config) { c.db = n }
}

// WithName labels the client's metrics and is its CLIENT SETNAME
// (default DefaultName).
func WithName(name string) Option {
	return func(c *config) {
		if name != "" {
			c.name = name
		}
	}
}

// WithTLSDialTimeout bounds the TLS attempt of a dual_auth dial
// (default DefaultTLSDialTimeout).
func WithTLSDialTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.tlsDialTimeout = d
		}
	}
}

// WithRetryTLSInterval is how long dual_auth skips the TLS port after it
// was unreachable, and how often it probes it meanwhile (default
// DefaultRetryTLSInterval).
func WithRetryTLSInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.retryTLSInterval = d
		}
	}
}

// WithDialTimeout bounds every dial but the dual_auth TLS attempt
// (default DefaultDialTimeout).
func WithDialTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.dialTimeout = d
		}
	}
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.logger = l
		}
	}
}

// WithRegisterer registers the client's metrics on r. Without it no
// metric is registered anywhere (there is no global registry use).
func WithRegisterer(r prometheus.Registerer) Option {
	return func(c *config) { c.reg = r }
}

// WithRedisOptions lets the caller adjust the go-redis options (pool size,
// timeouts...) before the client is built. Addr, Dialer, TLSConfig,
// Username, Password and the credentials providers are owned by this
// package and reset after f runs.
func WithRedisOptions(f func(*redis.Options)) Option {
	return func(c *config) {
		if f != nil {
			c.redisOpts = append(c.redisOpts, f)
		}
	}
}
