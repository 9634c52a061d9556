package redisclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"
)

// Options describe one Redis server and how to reach it in each Mode.
type Options struct {
	// Mode selects the path; see ModeFromEnv. Required.
	Mode Mode
	// TLSAddr is host:port of the server's tls-port (dual_auth, tls_only).
	TLSAddr string
	// PlainAddr is host:port of the server's plaintext port (disabled, dual_auth).
	PlainAddr string
	// PasswordFile holds the requirepass / ACL password; it is read on every
	// new connection, never kept in config. Required for disabled and
	// dual_auth. In tls_only it is optional: when set the password is sent
	// too (and ignored if the server has none), so a tls_only client
	// survives a rollback from phase D to C.
	PasswordFile string
	// Username is the ACL user for AUTH ("" = default user).
	Username string
	// DB is the database number selected on every connection.
	DB int
	// ServerID (exact SPIFFE ID) or ServerTrustDomain authorizes the server
	// on the TLS path. One is required unless Mode is disabled.
	ServerID          string
	ServerTrustDomain string
	// Name labels this client's metrics and is its CLIENT SETNAME.
	Name string
	// TLSDialTimeout bounds the TLS attempt in dual_auth before falling back
	// (default 1s): short, so a dead TLS port costs little per new connection.
	TLSDialTimeout time.Duration
	// RetryTLSInterval is how long dual_auth goes straight to plaintext after
	// a TLS failure, and how often it probes TLS meanwhile (default 5s).
	RetryTLSInterval time.Duration
	// DialTimeout bounds every other dial (default 5s).
	DialTimeout time.Duration
}

// Path is the way a connection reached Redis.
type Path string

// Paths a connection can take.
const (
	PathTLS       Path = "tls"
	PathPlaintext Path = "plaintext"
	PathUnknown   Path = "unknown"
)

// Client is a go-redis client whose connections follow Options.Mode. Use
// Redis() for commands; Close it when done (it owns the dual_auth prober).
type Client struct {
	rdb    *redis.Client
	d      *dialer
	cancel context.CancelFunc
	done   chan struct{}
}

func (o *Options) validate(hasSource bool) error {
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return fmt.Errorf("redis options: mode: %w", err)
	}
	for field, a := range map[string]string{"tls_addr": o.TLSAddr, "plain_addr": o.PlainAddr} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("redis options: %s %q: %w", field, a, err)
		}
	}
	needPlain := o.Mode == ModeDisabled || o.Mode == ModeDualAuth
	needTLS := o.Mode == ModeDualAuth || o.Mode == ModeTLSOnly
	if needPlain && o.PlainAddr == "" {
		return fmt.Errorf("redis options: plain_addr is required in mode %s", o.Mode)
	}
	if needPlain && o.PasswordFile == "" {
		return fmt.Errorf("redis options: password_file is required in mode %s", o.Mode)
	}
	if needTLS {
		if o.TLSAddr == "" {
			return fmt.Errorf("redis options: tls_addr is required in mode %s", o.Mode)
		}
		if !hasSource {
			return fmt.Errorf("redis options: mode %s needs an X.509 SVID source and bundle source", o.Mode)
		}
		if o.ServerID == "" && o.ServerTrustDomain == "" {
			return fmt.Errorf("redis options: server_id or server_trust_domain is required in mode %s", o.Mode)
		}
	}
	if o.TLSDialTimeout <= 0 {
		o.TLSDialTimeout = time.Second
	}
	if o.RetryTLSInterval <= 0 {
		o.RetryTLSInterval = 5 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Name == "" {
		o.Name = "default"
	}
	return nil
}

// New builds a Client. svids and bundles may be nil in ModeDisabled; the
// Client never opens a Workload API connection of its own. In dual_auth
// every new connection tries mTLS on TLSAddr first and falls back to the
// password on PlainAddr only when the TLS dial or handshake fails; each
// fallback is logged and counted, and plaintext connections are retired
// from the pool as soon as TLS answers again (an idle pooled connection is
// replaced at its next use; a PubSub connection keeps its path until it
// reconnects). Any TLS failure counts, including a server whose SPIFFE ID
// is not the expected one: the plaintext port is what phase A already
// trusted, and the log line carries the TLS error. An AUTH error is not a
// TLS failure and never falls back.
func New(opts Options, svids x509svid.Source, bundles x509bundle.Source, o ...Option) (*Client, error) {
	hasSource := svids != nil && bundles != nil
	if err := opts.validate(hasSource); err != nil {
		return nil, err
	}
	s := newSettings(o)
	d := &dialer{
		opts:   opts,
		log:    s.logger.With(zap.String("redis_client", opts.Name)),
		now:    s.now,
		m:      newClientMetrics(s.reg, opts.Name),
		plain:  map[*plainConn]struct{}{},
		downCh: make(chan struct{}, 1),
		tlsUp:  true,
	}
	if opts.PasswordFile != "" {
		d.password = func() (string, error) { return readPasswordFile(opts.PasswordFile) }
	}
	if opts.Mode != ModeDisabled {
		authz, err := ServerAuthorizer(opts.ServerID, opts.ServerTrustDomain)
		if err != nil {
			return nil, fmt.Errorf("redis options: %w", err)
		}
		d.tlsConf = NewTLSConfig(svids, bundles, authz)
	}
	if opts.Mode == ModeDisabled {
		d.tlsUp = false
	}
	d.m.tlsUp.Set(boolGauge(d.tlsUp))

	ro := &redis.Options{ClientName: opts.Name, DB: opts.DB, DialTimeout: opts.DialTimeout}
	for _, f := range s.redisOpts {
		f(ro)
	}
	// The dialer authenticates itself (the password depends on the path
	// taken), so go-redis must not send credentials of its own.
	ro.Network, ro.Addr = "tcp", d.primaryAddr()
	ro.Dialer, ro.TLSConfig = d.dial, nil
	ro.Username, ro.Password = "", ""
	ro.CredentialsProvider, ro.CredentialsProviderContext, ro.StreamingCredentialsProvider = nil, nil, nil
	if ro.DialTimeout < opts.TLSDialTimeout+opts.DialTimeout && opts.Mode == ModeDualAuth {
		ro.DialTimeout = opts.TLSDialTimeout + opts.DialTimeout
	}

	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{rdb: redis.NewClient(ro), d: d, cancel: cancel, done: make(chan struct{})}
	if opts.Mode == ModeDualAuth {
		go func() { defer close(c.done); d.probeLoop(ctx) }()
	} else {
		close(c.done)
	}
	return c, nil
}

// Redis returns the go-redis client for normal use. It stays valid across
// SVID rotations and TLS/plaintext switches.
func (c *Client) Redis() *redis.Client { return c.rdb }

// Mode returns the client's mode.
func (c *Client) Mode() Mode { return c.d.opts.Mode }

// Close stops the prober and closes the go-redis client.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return c.rdb.Close()
}

// HealthReport tells which path the client is on.
type HealthReport struct {
	Mode Mode `json:"mode"`
	// Path is the path of the pooled connection that served the check,
	// from the server's own view (CLIENT INFO laddr port).
	Path Path `json:"path"`
	// ServerAddr is the server-side address of that connection.
	ServerAddr string `json:"server_addr,omitempty"`
	// TLSUp is the dialer's belief: new connections go to TLS when true.
	TLSUp             bool          `json:"tls_up"`
	Fallbacks         uint64        `json:"fallbacks"`
	LastFallback      time.Time     `json:"last_fallback,omitzero"`
	LastFallbackError string        `json:"last_fallback_error,omitempty"`
	Latency           time.Duration `json:"latency_ns"`
}

// Health runs CLIENT INFO through the pool and reports the path of the
// connection that answered. It returns an error (and a partial report)
// when Redis does not answer.
func (c *Client) Health(ctx context.Context) (HealthReport, error) {
	d := c.d
	d.mu.Lock()
	r := HealthReport{Mode: d.opts.Mode, TLSUp: d.tlsUp, Fallbacks: d.fallbacks,
		LastFallback: d.lastFallback, LastFallbackError: d.lastFallbackErr, Path: PathUnknown}
	d.mu.Unlock()
	start := time.Now()
	info, err := c.rdb.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil {
		var rerr redis.Error
		if !errors.As(err, &rerr) {
			return r, fmt.Errorf("redis health (%s): %w", d.opts.Mode, err)
		}
		// Server answered but refused CLIENT INFO (ACL, old server): fall
		// back to PING and the dialer's belief.
		if err := c.rdb.Ping(ctx).Err(); err != nil {
			return r, fmt.Errorf("redis health (%s): %w", d.opts.Mode, err)
		}
		r.Latency = time.Since(start)
		if r.TLSUp {
			r.Path = PathTLS
		} else {
			r.Path = PathPlaintext
		}
		return r, nil
	}
	r.Latency = time.Since(start)
	fields := parseClientLine(strings.TrimSpace(info))
	r.ServerAddr = fields["laddr"]
	r.Path = d.pathForPort(portOf(r.ServerAddr))
	return r, nil
}

type dialer struct {
	opts     Options
	tlsConf  *tls.Config
	password func() (string, error)
	log      *zap.Logger
	now      func() time.Time
	m        *clientMetrics
	downCh   chan struct{}

	mu              sync.Mutex
	tlsUp           bool
	tlsDownUntil    time.Time
	fallbacks       uint64
	lastFallback    time.Time
	lastFallbackErr string
	plain           map[*plainConn]struct{}
}

func (d *dialer) primaryAddr() string {
	if d.opts.Mode == ModeDisabled {
		return d.opts.PlainAddr
	}
	return d.opts.TLSAddr
}

func (d *dialer) pathForPort(p string) Path {
	switch {
	case p == "":
		return PathUnknown
	case d.opts.TLSAddr != "" && p == portOf(d.opts.TLSAddr):
		return PathTLS
	case d.opts.PlainAddr != "" && p == portOf(d.opts.PlainAddr):
		return PathPlaintext
	}
	return PathUnknown
}

// dial is the go-redis Dialer. network/addr from go-redis are ignored: the
// mode decides where to go.
func (d *dialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	switch d.opts.Mode {
	case ModeDisabled:
		return d.dialPlain(ctx)
	case ModeTLSOnly:
		c, err := d.dialTLS(ctx, d.opts.DialTimeout)
		if err == nil {
			d.m.dials.WithLabelValues(string(PathTLS)).Inc()
		}
		return c, err
	}
	d.mu.Lock()
	skipTLS := !d.tlsUp && d.now().Before(d.tlsDownUntil)
	d.mu.Unlock()
	var tlsErr error
	if !skipTLS {
		c, err := d.dialTLS(ctx, d.opts.TLSDialTimeout)
		if err == nil {
			d.m.dials.WithLabelValues(string(PathTLS)).Inc()
			d.markUp()
			return c, nil
		}
		var se *ServerError
		if errors.As(err, &se) || ctx.Err() != nil {
			// Wrong password or cancelled: plaintext would not do better.
			return nil, err
		}
		tlsErr = err
		d.markDown(err)
	} else {
		d.mu.Lock()
		tlsErr = errors.New(d.lastFallbackErr)
		d.mu.Unlock()
	}
	c, err := d.dialPlain(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis dual_auth: TLS %s failed (%v) and plaintext %s failed: %w",
			d.opts.TLSAddr, tlsErr, d.opts.PlainAddr, err)
	}
	pc := &plainConn{Conn: c, d: d}
	d.mu.Lock()
	d.plain[pc] = struct{}{}
	d.fallbacks++
	d.lastFallback = d.now()
	d.mu.Unlock()
	d.m.fallbacks.Inc()
	d.log.Warn("redis dual_auth: new connection fell back to password on the plaintext port",
		zap.String("tls_addr", d.opts.TLSAddr), zap.String("plain_addr", d.opts.PlainAddr), zap.NamedError("tls_error", tlsErr))
	return pc, nil
}

// dialTLS dials, completes the handshake and makes one round trip, because
// with TLS 1.3 a server that rejects our certificate only says so after
// the client considers the handshake done.
func (d *dialer) dialTLS(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	td := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: d.tlsConf}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := td.DialContext(dctx, "tcp", d.opts.TLSAddr)
	if err != nil {
		return nil, fmt.Errorf("redis TLS %s: %w", d.opts.TLSAddr, err)
	}
	if err := d.setup(ctx, c, timeout, true); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis TLS %s: %w", d.opts.TLSAddr, err)
	}
	return c, nil
}

func (d *dialer) dialPlain(ctx context.Context) (net.Conn, error) {
	nd := &net.Dialer{Timeout: d.opts.DialTimeout, KeepAlive: 30 * time.Second}
	c, err := nd.DialContext(ctx, "tcp", d.opts.PlainAddr)
	if err != nil {
		return nil, fmt.Errorf("redis plaintext %s: %w", d.opts.PlainAddr, err)
	}
	if err := d.setup(ctx, c, d.opts.DialTimeout, false); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis plaintext %s: %w", d.opts.PlainAddr, err)
	}
	d.m.dials.WithLabelValues(string(PathPlaintext)).Inc()
	return c, nil
}

// setup authenticates (or PINGs when there is no password) on a new
// connection. On TLS a server without a password is fine: phase D clears
// requirepass and the certificate is the credential.
func (d *dialer) setup(ctx context.Context, c net.Conn, timeout time.Duration, onTLS bool) error {
	if d.password == nil {
		_, err := roundTrip(ctx, c, timeout, "PING")
		return err
	}
	pw, err := d.password()
	if err != nil {
		return err
	}
	_, err = roundTrip(ctx, c, timeout, "AUTH", authUser(d.opts.Username), pw)
	if err != nil && onTLS && noPasswordConfigured(err) {
		return nil
	}
	return err
}

func (d *dialer) markDown(err error) {
	d.mu.Lock()
	was := d.tlsUp
	d.tlsUp = false
	d.tlsDownUntil = d.now().Add(d.opts.RetryTLSInterval)
	d.lastFallbackErr = err.Error()
	d.mu.Unlock()
	d.m.tlsUp.Set(0)
	if was {
		d.log.Warn("redis dual_auth: TLS path failed; using password on the plaintext port until it answers again",
			zap.String("tls_addr", d.opts.TLSAddr), zap.Error(err))
	}
	select {
	case d.downCh <- struct{}{}:
	default:
	}
}

func (d *dialer) markUp() {
	d.mu.Lock()
	was := d.tlsUp
	d.tlsUp = true
	d.tlsDownUntil = time.Time{}
	retired := 0
	for pc := range d.plain {
		pc.retire()
		retired++
	}
	d.mu.Unlock()
	d.m.tlsUp.Set(1)
	if !was {
		d.log.Info("redis dual_auth: TLS path is back; retiring plaintext connections",
			zap.String("tls_addr", d.opts.TLSAddr), zap.Int("plaintext_conns", retired))
	}
}

// probeLoop sleeps until the TLS path goes down, then probes it every
// RetryTLSInterval until it answers. No timer runs while TLS is up.
func (d *dialer) probeLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.downCh:
		}
		t := time.NewTimer(d.opts.RetryTLSInterval)
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			d.mu.Lock()
			up := d.tlsUp
			d.mu.Unlock()
			if up {
				break
			}
			c, err := d.dialTLS(ctx, d.opts.TLSDialTimeout)
			if err == nil {
				_ = c.Close()
				d.markUp()
				break
			}
			d.log.Debug("redis dual_auth: TLS probe failed", zap.Error(err))
			t.Reset(d.opts.RetryTLSInterval)
		}
		// Drain a stale signal from the failures that led here.
		select {
		case <-d.downCh:
		default:
		}
	}
}

var errRetired = errors.New("redis dual_auth: plaintext connection retired, TLS is back")

// plainConn marks fallback connections so they can be retired when TLS
// returns. go-redis health-checks an idle pooled connection through
// syscall.Conn before reusing it; a retired connection fails that check and
// is closed and replaced by a fresh (TLS) dial, never mid-command.
type plainConn struct {
	net.Conn
	d       *dialer
	mu      sync.Mutex
	retired bool
}

func (c *plainConn) retire() {
	c.mu.Lock()
	c.retired = true
	c.mu.Unlock()
}

func (c *plainConn) SyscallConn() (syscall.RawConn, error) {
	c.mu.Lock()
	retired := c.retired
	c.mu.Unlock()
	if retired {
		return nil, errRetired
	}
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a syscall.Conn")
	}
	return sc.SyscallConn()
}

func (c *plainConn) Close() error {
	c.d.mu.Lock()
	delete(c.d.plain, c)
	c.d.mu.Unlock()
	return c.Conn.Close()
}

type clientMetrics struct {
	dials     *prometheus.CounterVec
	fallbacks prometheus.Counter
	tlsUp     prometheus.Gauge
}

func newClientMetrics(r prometheus.Registerer, name string) *clientMetrics {
	l := prometheus.Labels{"client": name}
	return &clientMetrics{
		dials: register(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_redis_client_dials_total", Help: "New Redis connections by path (tls, plaintext).",
			ConstLabels: l}, []string{"path"})),
		fallbacks: register(r, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "identity_agent_redis_client_fallbacks_total", Help: "dual_auth connections that fell back from mTLS to password on the plaintext port.",
			ConstLabels: l})),
		tlsUp: register(r, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "identity_agent_redis_client_tls_up", Help: "1 when new connections use the TLS path.",
			ConstLabels: l})),
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (d *dialer) fallbackCount() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fallbacks
}
