package redisclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/identity-agent/identity-agent/internal/clientlist"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Path is the way a connection reached Redis.
type Path string

// Paths a connection can take.
const (
	PathTLS       Path = "tls"
	PathPlaintext Path = "plaintext"
	PathUnknown   Path = "unknown"
)

// Client is a go-redis client whose connections follow its Mode. Use
// Redis() for commands; Close it when done (it owns the dual_auth prober).
type Client struct {
	rdb *redis.Client
	d   *dialer
}

func (c *config) validate(mode Mode) error {
	if _, err := ParseMode(string(mode)); err != nil {
		return fmt.Errorf("redis client: mode: %w", err)
	}
	for field, a := range map[string]string{"tls_addr": c.tlsAddr, "plain_addr": c.plainAddr} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("redis client: %s %q: %w", field, a, err)
		}
	}
	needPlain := mode == ModeDisabled || mode == ModeDualAuth
	needTLS := mode == ModeDualAuth || mode == ModeTLSOnly
	if needPlain && c.plainAddr == "" {
		return fmt.Errorf("redis client: plain_addr (WithPlaintext) is required in mode %s", mode)
	}
	if needPlain && c.passwordFile == "" {
		return fmt.Errorf("redis client: password_file (WithPasswordFile) is required in mode %s", mode)
	}
	if needTLS {
		if c.tlsAddr == "" {
			return fmt.Errorf("redis client: tls_addr (WithTLS) is required in mode %s", mode)
		}
		if c.svids == nil || c.bundles == nil {
			return fmt.Errorf("redis client: mode %s needs an X.509 SVID source and bundle source (WithTLS)", mode)
		}
		if c.serverAuthz == nil {
			return fmt.Errorf("redis client: mode %s needs a server authorizer (WithTLS; see ServerAuthorizer for server_id or server_trust_domain)", mode)
		}
	}
	return nil
}

// New builds a Client for mode; see the With... options for what each
// mode requires. It starts no goroutine and dials nothing: connections are
// made by the go-redis pool on first use.
//
// In dual_auth every new connection tries mTLS on the TLS address first
// and falls back to the password on the plaintext address only when the
// TLS port is unreachable (below); each fallback is logged and counted, and
// plaintext connections are retired from the pool as soon as TLS answers
// again (an idle pooled connection is replaced at its next use; a PubSub
// connection keeps its path until it reconnects). While TLS is down a
// prober goroutine, started by the first fallback and stopped by Close,
// dials the TLS port every retry interval.
//
// dual_auth falls back only when the TLS port is unreachable (connection
// refused, a timeout, a reset before the server sent anything). When the
// port answers and authentication fails — a server SPIFFE ID that is not
// the authorized one, a chain that does not verify, a broken handshake,
// the server refusing our certificate — the dial returns a *TLSError, the
// failure is counted by cause and logged as an error, and the password is
// never sent to the plaintext port: an attacker who can interfere with
// the TLS port must not be able to turn that into a cleartext password.
// An AUTH error is not a TLS failure and never falls back either.
func New(mode Mode, opts ...Option) (*Client, error) {
	cfg := newConfig(opts)
	if err := cfg.validate(mode); err != nil {
		return nil, err
	}
	d := &dialer{
		mode:  mode,
		cfg:   cfg,
		log:   cfg.logger.With(zap.String("redis_client", cfg.name)),
		now:   cfg.now,
		m:     newClientMetrics(cfg.reg, cfg.name),
		plain: map[*plainConn]struct{}{},
		tlsUp: mode != ModeDisabled,
	}
	if cfg.passwordFile != "" {
		pf := cfg.passwordFile
		d.password = func() (string, error) { return readPasswordFile(pf) }
	}
	if mode != ModeDisabled {
		d.tlsConf = NewTLSConfig(cfg.svids, cfg.bundles, cfg.serverAuthz)
		// SNI, as tls.Dialer would send it; the identity check is the SPIFFE ID.
		d.tlsConf.ServerName, _, _ = net.SplitHostPort(cfg.tlsAddr)
	}
	d.m.tlsUp.Set(boolGauge(d.tlsUp))
	for _, c := range []string{CauseUnreachable, CauseServerID, CauseUntrustedChain, CauseHandshake} {
		d.m.tlsFailures.WithLabelValues(c) // export zeros, so rate() alerts see the series
	}

	ro := &redis.Options{ClientName: cfg.name, DB: cfg.db, DialTimeout: cfg.dialTimeout}
	for _, f := range cfg.redisOpts {
		f(ro)
	}
	// The dialer authenticates itself (the password depends on the path
	// taken), so go-redis must not send credentials of its own.
	ro.Network, ro.Addr = "tcp", d.primaryAddr()
	ro.Dialer, ro.TLSConfig = d.dial, nil
	ro.Username, ro.Password = "", ""
	ro.CredentialsProvider, ro.CredentialsProviderContext, ro.StreamingCredentialsProvider = nil, nil, nil
	if ro.DialTimeout < cfg.tlsDialTimeout+cfg.dialTimeout && mode == ModeDualAuth {
		ro.DialTimeout = cfg.tlsDialTimeout + cfg.dialTimeout
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return &Client{rdb: redis.NewClient(ro), d: d}, nil
}

// Redis returns the go-redis client for normal use. It stays valid across
// SVID rotations and TLS/plaintext switches.
func (c *Client) Redis() *redis.Client { return c.rdb }

// Mode returns the client's mode.
func (c *Client) Mode() Mode { return c.d.mode }

// Close stops the prober, waits for it and closes the go-redis client.
func (c *Client) Close() error {
	c.d.stop()
	return c.rdb.Close()
}

type dialer struct {
	mode     Mode
	cfg      *config
	tlsConf  *tls.Config
	password func() (string, error)
	log      *zap.Logger
	now      func() time.Time
	m        *clientMetrics

	// ctx ends with Close; it bounds the prober and its dials.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu              sync.Mutex
	closed          bool
	probing         bool
	tlsUp           bool
	tlsDownUntil    time.Time
	fallbacks       uint64
	lastFallback    time.Time
	lastFallbackErr string
	authFailures    uint64
	lastAuthFailure time.Time
	lastAuthErr     string
	plain           map[*plainConn]struct{}
}

func (d *dialer) primaryAddr() string {
	if d.mode == ModeDisabled {
		return d.cfg.plainAddr
	}
	return d.cfg.tlsAddr
}

func (d *dialer) pathForPort(p string) Path {
	switch {
	case p == "":
		return PathUnknown
	case d.cfg.tlsAddr != "" && p == clientlist.Port(d.cfg.tlsAddr):
		return PathTLS
	case d.cfg.plainAddr != "" && p == clientlist.Port(d.cfg.plainAddr):
		return PathPlaintext
	}
	return PathUnknown
}

// dial is the go-redis Dialer. network/addr from go-redis are ignored: the
// mode decides where to go.
func (d *dialer) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	switch d.mode {
	case ModeDisabled:
		return d.dialPlain(ctx)
	case ModeTLSOnly:
		c, err := d.dialTLS(ctx, d.cfg.dialTimeout)
		if err != nil {
			d.tlsFailed(ctx, err)
			return nil, err
		}
		d.m.dials.WithLabelValues(string(PathTLS)).Inc()
		return c, nil
	}
	d.mu.Lock()
	skipTLS := !d.tlsUp && d.now().Before(d.tlsDownUntil)
	d.mu.Unlock()
	var tlsErr error
	if !skipTLS {
		c, err := d.dialTLS(ctx, d.cfg.tlsDialTimeout)
		if err == nil {
			d.m.dials.WithLabelValues(string(PathTLS)).Inc()
			d.markUp()
			return c, nil
		}
		d.tlsFailed(ctx, err)
		var te *TLSError
		if !errors.As(err, &te) || !te.Unreachable() || ctx.Err() != nil {
			// The TLS port answered and authentication failed (or the
			// password was refused, or we were cancelled): the plaintext
			// port would not do better, and sending the password there
			// is exactly what an attacker on the TLS path wants.
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
			d.cfg.tlsAddr, tlsErr, d.cfg.plainAddr, err)
	}
	pc := &plainConn{Conn: c, d: d}
	d.mu.Lock()
	d.plain[pc] = struct{}{}
	d.fallbacks++
	d.lastFallback = d.now()
	d.mu.Unlock()
	d.m.fallbacks.Inc()
	d.log.Warn("redis dual_auth: new connection fell back to password on the plaintext port",
		zap.String("tls_addr", d.cfg.tlsAddr), zap.String("plain_addr", d.cfg.plainAddr), zap.NamedError("tls_error", tlsErr))
	return pc, nil
}

// tlsFailed counts a failed TLS attempt by cause and logs an
// authentication failure as what it is. An error reply from Redis (wrong
// password), a password file problem or a cancelled context is not a TLS
// failure and is not counted.
func (d *dialer) tlsFailed(ctx context.Context, err error) {
	var te *TLSError
	if !errors.As(err, &te) || ctx.Err() != nil {
		return
	}
	d.m.tlsFailures.WithLabelValues(te.Cause).Inc()
	if te.Unreachable() {
		return // markDown logs the transition; each refused dial is no news
	}
	d.mu.Lock()
	d.authFailures++
	d.lastAuthFailure = d.now()
	d.lastAuthErr = err.Error()
	d.mu.Unlock()
	msg := "redis: TLS authentication of the server failed; not connecting"
	if d.mode == ModeDualAuth {
		msg = "redis dual_auth: TLS authentication failed; refusing to fall back to the password on the plaintext port"
	}
	d.log.Error(msg, zap.String("tls_addr", d.cfg.tlsAddr), zap.String("cause", te.Cause), zap.Error(te.Err))
}

// localError is a failure on our side while setting up a connection (the
// password file): not something the server did.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// dialTLS dials, completes the handshake and makes one round trip, because
// with TLS 1.3 a server that rejects our certificate only says so after
// the client considers the handshake done. Its failures on the wire are
// *TLSError with a cause; only CauseUnreachable allows a fallback.
func (d *dialer) dialTLS(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	addr := d.cfg.tlsAddr
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := (&net.Dialer{Timeout: timeout}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, &TLSError{Addr: addr, Cause: CauseUnreachable, Err: err}
	}
	rc := &readCounter{Conn: raw}
	c := tls.Client(rc, d.tlsConf)
	if err := c.HandshakeContext(dctx); err != nil {
		_ = raw.Close()
		return nil, &TLSError{Addr: addr, Cause: handshakeCause(err, rc.n.Load() > 0), Err: err}
	}
	if err := d.setup(ctx, c, timeout, true); err != nil {
		_ = c.Close()
		var se *ServerError
		var le *localError
		if errors.As(err, &se) || errors.As(err, &le) || ctx.Err() != nil {
			return nil, fmt.Errorf("redis TLS %s: %w", addr, err)
		}
		return nil, &TLSError{Addr: addr, Cause: CauseHandshake, Err: fmt.Errorf("after the handshake: %w", err)}
	}
	return c, nil
}

func (d *dialer) dialPlain(ctx context.Context) (net.Conn, error) {
	nd := &net.Dialer{Timeout: d.cfg.dialTimeout, KeepAlive: 30 * time.Second}
	c, err := nd.DialContext(ctx, "tcp", d.cfg.plainAddr)
	if err != nil {
		return nil, fmt.Errorf("redis plaintext %s: %w", d.cfg.plainAddr, err)
	}
	if err := d.setup(ctx, c, d.cfg.dialTimeout, false); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis plaintext %s: %w", d.cfg.plainAddr, err)
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
		return &localError{err: err}
	}
	_, err = roundTrip(ctx, c, timeout, "AUTH", authUser(d.cfg.username), pw)
	if err != nil && onTLS && noPasswordConfigured(err) {
		return nil
	}
	return err
}

func (d *dialer) markDown(err error) {
	d.mu.Lock()
	was := d.tlsUp
	d.tlsUp = false
	d.tlsDownUntil = d.now().Add(d.cfg.retryTLSInterval)
	d.lastFallbackErr = err.Error()
	if !d.closed && !d.probing {
		d.probing = true
		d.wg.Add(1)
		go d.probe()
	}
	d.mu.Unlock()
	d.m.tlsUp.Set(0)
	if was {
		d.log.Warn("redis dual_auth: TLS path failed; using password on the plaintext port until it answers again",
			zap.String("tls_addr", d.cfg.tlsAddr), zap.Error(err))
	}
}

// stop ends the prober (if one runs) and waits for it. The closed flag is
// set under mu, where markDown starts probers, so none starts after.
func (d *dialer) stop() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
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
			zap.String("tls_addr", d.cfg.tlsAddr), zap.Int("plaintext_conns", retired))
	}
}

// probe runs while the TLS path is down: it dials the TLS port every
// retry interval until it answers, then exits. markDown starts it, Close
// stops it; no timer runs while TLS is up.
func (d *dialer) probe() {
	defer d.wg.Done()
	t := time.NewTimer(d.cfg.retryTLSInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			d.endProbe()
			return
		case <-t.C:
		}
		d.mu.Lock()
		up := d.tlsUp
		d.mu.Unlock()
		if !up {
			c, err := d.dialTLS(d.ctx, d.cfg.tlsDialTimeout)
			var te *TLSError
			switch {
			case err == nil:
				_ = c.Close()
				d.markUp()
			case errors.As(err, &te) && te.Unreachable():
				d.log.Debug("redis dual_auth: TLS probe failed", zap.Error(err))
			default:
				// The TLS port answers again but fails authentication:
				// stop skipping it, so that new connections report this
				// error instead of quietly using the password.
				d.tlsFailed(d.ctx, err)
				d.mu.Lock()
				d.tlsDownUntil = time.Time{}
				d.probing = false
				d.mu.Unlock()
				return
			}
		}
		// Exit only while up, under the lock markDown takes, so a failure
		// racing with this check either sees probing or is seen here.
		d.mu.Lock()
		if d.tlsUp {
			d.probing = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		t.Reset(d.cfg.retryTLSInterval)
	}
}

func (d *dialer) endProbe() {
	d.mu.Lock()
	d.probing = false
	d.mu.Unlock()
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

func (d *dialer) fallbackCount() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fallbacks
}
