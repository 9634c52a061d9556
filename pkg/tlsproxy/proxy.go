package tlsproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/unixsock"
)

// Option configures a Proxy.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	log        *zap.Logger
	reg        prometheus.Registerer
	noResume   bool
	curves     []tls.CurveID
	bulkBudget int
}

// WithLogger sets the logger (default: no-op). Rejected connections are
// logged at Warn, one line each.
func WithLogger(l *zap.Logger) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.log = l
		}
	})
}

// WithRegisterer registers the proxy's metrics, labelled proxy="<name>".
// Several proxies may share one registerer.
func WithRegisterer(r prometheus.Registerer) Option {
	return optionFunc(func(o *options) { o.reg = r })
}

// WithSessionResumption turns TLS session resumption on (the default) or
// off. Resumed sessions are verified and authorized like full handshakes
// and are bound to the SVID presented; turning it off costs a full
// handshake (two signatures and chain verifications) per connection.
func WithSessionResumption(enabled bool) Option {
	return optionFunc(func(o *options) { o.noResume = !enabled })
}

// WithCurvePreferences restricts the TLS key exchanges offered and
// accepted (tls.Config.CurvePreferences). The default is Go's: the
// post-quantum hybrid X25519MLKEM768 first, then classical curves. With
// resumption, the key exchange is most of a new connection's cost; a
// deployment that accepts classical-only forward secrecy between its own
// proxies can pass tls.X25519 to cut it by about a third.
func WithCurvePreferences(ids ...tls.CurveID) Option {
	return optionFunc(func(o *options) { o.curves = append([]tls.CurveID(nil), ids...) })
}

// WithBulkBufferBudget bounds the bytes of large (512 KiB) relay buffers
// the proxy's bulk streams may hold at once (default
// DefaultBulkBufferBudget). Streams beyond it use 64 KiB buffers; 0 turns
// large buffers off, for hosts where memory matters more than throughput.
func WithBulkBufferBudget(bytes int) Option {
	return optionFunc(func(o *options) { o.bulkBudget = max(bytes, 0) })
}

// Proxy is one server- or client-mode proxy. Create it with New, run it
// with Start and stop it with Shutdown.
type Proxy struct {
	cfg     Config
	listen  addr
	target  addr
	log     *zap.Logger
	svids   x509svid.Source
	tlsConf *tls.Config
	dialer  net.Dialer
	sem     chan struct{}
	stats   counters
	reg     prometheus.Registerer
	col     *collector
	http    *httpFront // nil unless cfg.HTTP
	bufs    *bufPool   // relay buffers, shared by all connections of this proxy

	// ctx is cancelled when Shutdown gives up waiting, to abort dials.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*tracked]struct{} // open connections, for force-close
	running  bool
	draining bool
	stopped  bool
	wg       sync.WaitGroup // accept loop and connection goroutines
	idle     chan struct{}  // closed when draining and the last connection ended
}

// New validates cfg and builds a proxy that takes its SVID from svids and
// its trust bundles from bundles on every handshake, so rotations apply to
// new connections without a restart. It does not listen yet.
func New(cfg Config, svids x509svid.Source, bundles x509bundle.Source, opts ...Option) (*Proxy, error) {
	cfg, listen, target, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	authz, err := ParseAllow(cfg.Allow)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: %w", cfg.Name, err)
	}
	if svids == nil || bundles == nil {
		return nil, fmt.Errorf("proxy %q: an X.509-SVID source and a bundle source are required", cfg.Name)
	}
	o := options{log: zap.NewNop(), bulkBudget: DefaultBulkBufferBudget}
	for _, opt := range opts {
		opt.apply(&o)
	}
	p := &Proxy{
		cfg:    cfg,
		listen: listen,
		target: target,
		log:    o.log.With(zap.String("proxy", cfg.Name), zap.String("mode", string(cfg.Mode))),
		svids:  svids,
		sem:    make(chan struct{}, cfg.MaxConns),
		conns:  map[*tracked]struct{}{},
		reg:    o.reg,
		dialer: net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: plainKeepAlive(cfg.Mode == ModeServer, target)},
		bufs:   newBufPool(o.bulkBudget),
	}
	v := &verifier{bundles: bundles, authz: authz}
	if cfg.Mode == ModeServer {
		p.tlsConf = serverTLSConfig(svids, bundles, authz, v)
		if cfg.HTTP {
			p.tlsConf.NextProtos = []string{"http/1.1"}
			p.http = newHTTPFront(p)
		}
	} else {
		p.tlsConf = clientTLSConfig(svids, bundles, authz, v, target)
	}
	if len(o.curves) > 0 {
		p.tlsConf.CurvePreferences = o.curves
	}
	if o.noResume {
		p.tlsConf.SessionTicketsDisabled = true
		p.tlsConf.ClientSessionCache = nil
	}
	if p.reg != nil {
		p.col = newCollector(cfg.Name, &p.stats, p.bufs)
		if err := p.reg.Register(p.col); err != nil {
			return nil, fmt.Errorf("proxy %q: register metrics: %w", cfg.Name, err)
		}
	}
	return p, nil
}

// serverTLSConfig starts from go-spiffe's mTLS server config (SVID per
// handshake from the source, TLS >= 1.2) and moves peer verification to
// VerifyConnection; see verifier.
func serverTLSConfig(svids x509svid.Source, bundles x509bundle.Source, authz tlsconfig.Authorizer, v *verifier) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svids, bundles, authz)
	c.VerifyPeerCertificate = nil // replaced by VerifyConnection below
	// Request rather than require: a missing certificate then reaches
	// VerifyConnection and is reported as no_cert instead of a generic
	// handshake error. VerifyConnection still rejects it.
	c.ClientAuth = tls.RequestClientCert
	c.VerifyConnection = v.verifyConnection
	c.MinVersion = tls.VersionTLS12
	// Full-size records from the start: this is a bulk pipe, not a web
	// server optimising time to first byte.
	c.DynamicRecordSizingDisabled = true
	bindServerSessions(c, svids)
	return c
}

func clientTLSConfig(svids x509svid.Source, bundles x509bundle.Source, authz tlsconfig.Authorizer, v *verifier, target addr) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svids, bundles, authz)
	c.VerifyPeerCertificate = nil // replaced by VerifyConnection below
	c.VerifyConnection = v.verifyConnection
	c.MinVersion = tls.VersionTLS12
	c.DynamicRecordSizingDisabled = true
	c.ClientSessionCache = boundSessionCache{inner: tls.NewLRUClientSessionCache(64), svids: svids}
	if target.network == "tcp" {
		// Used for SNI and as the session cache key; the server's identity
		// is checked by SPIFFE ID, not by host name.
		if host, _, err := net.SplitHostPort(target.address); err == nil && net.ParseIP(host) == nil {
			c.ServerName = host
		}
	}
	return c
}

// Name returns the proxy's configured name.
func (p *Proxy) Name() string { return p.cfg.Name }

// Start listens and serves in background goroutines; it returns once the
// listener is open. ctx only bounds the start itself; stop the proxy with
// Shutdown.
func (p *Proxy) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.stopped {
		return fmt.Errorf("proxy %q: already started or shut down", p.cfg.Name)
	}
	var (
		ln  net.Listener
		err error
	)
	if p.listen.network == "unix" {
		// Never reachable at the umask's mode: whoever connects to a
		// client-mode socket borrows this agent's identity.
		ln, err = unixsock.Listen(p.listen.address, p.cfg.SocketMode)
	} else {
		lc := net.ListenConfig{KeepAlive: plainKeepAlive(p.cfg.Mode == ModeClient, p.listen)}
		ln, err = lc.Listen(ctx, p.listen.network, p.listen.address)
	}
	if err != nil {
		return fmt.Errorf("proxy %q: listen: %w", p.cfg.Name, err)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.ln = ln
	p.running = true
	if p.http != nil {
		p.http.start()
	}
	p.wg.Add(1)
	go p.acceptLoop(ln)
	p.log.Info("proxy listening", zap.String("listen", ln.Addr().String()), zap.String("target", p.target.String()))
	return nil
}

// plainKeepAlive turns TCP keep-alive probes off (-1) for the plaintext
// side when it is on loopback: no peer there can vanish without a reset,
// and the probes' four setsockopt(2) calls are a tenth of the syscalls of
// a short connection. The TLS side, which crosses the network, keeps Go's
// default (0: 15 s probes), as does an unsafe non-loopback plaintext side.
func plainKeepAlive(plaintext bool, a addr) time.Duration {
	if plaintext && a.isLoopback() {
		return -1
	}
	return 0
}

// Addr returns the listening address, or nil before Start.
func (p *Proxy) Addr() net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		return nil
	}
	return p.ln.Addr()
}

func (p *Proxy) acceptLoop(ln net.Listener) {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as net/http does
			// instead of spinning or giving up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", zap.Error(err), zap.Duration("retry_in", backoff))
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		select {
		case p.sem <- struct{}{}:
		default:
			p.refuse(c)
			continue
		}
		t := &tracked{raw: c}
		if !p.track(t) {
			_ = c.Close()
			<-p.sem
			continue
		}
		p.stats.total.Add(1)
		p.stats.open.Add(1)
		p.wg.Add(1)
		go p.serve(t)
	}
}

// refuse resets a connection over the limit immediately: queuing it would
// let a flood of idle peers hold memory and file descriptors.
func (p *Proxy) refuse(c net.Conn) {
	p.stats.refused.Add(1)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	p.log.Warn("connection refused", zap.String("peer_addr", c.RemoteAddr().String()),
		zap.String("cause", "max_conns"), zap.Int("max_conns", p.cfg.MaxConns))
	_ = c.Close()
}

// tracked is one accepted connection and, once dialed, its upstream.
type tracked struct {
	raw net.Conn
	mu  sync.Mutex
	up  net.Conn
	cut bool
}

// setUp records the upstream connection; false if the connection was
// force-closed meanwhile (the caller then closes up itself).
func (t *tracked) setUp(up net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return false
	}
	t.up = up
	return true
}

func (t *tracked) forceClose() {
	t.mu.Lock()
	t.cut = true
	up := t.up
	t.mu.Unlock()
	_ = t.raw.Close()
	if up != nil {
		_ = up.Close()
	}
}

func (p *Proxy) track(t *tracked) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		return false
	}
	p.conns[t] = struct{}{}
	return true
}

// release ends the bookkeeping of one accepted connection; called exactly once per connection.
func (p *Proxy) release(t *tracked) {
	_ = t.raw.Close()
	p.mu.Lock()
	delete(p.conns, t)
	last := p.draining && len(p.conns) == 0 && p.idle != nil
	p.mu.Unlock()
	if last {
		select {
		case <-p.idle:
		default:
			close(p.idle)
		}
	}
	p.stats.open.Add(-1)
	<-p.sem
	p.wg.Done()
}

func (p *Proxy) serve(t *tracked) {
	setNoDelay(t.raw)
	if p.cfg.Mode == ModeServer {
		p.serveServer(t)
	} else {
		p.serveClient(t)
	}
}

// setNoDelay documents intent only: Go enables TCP_NODELAY on every TCP
// connection it creates, so small writes (request/response traffic) are
// never held back by Nagle. Calling SetNoDelay again would cost a syscall
// per connection.
func setNoDelay(net.Conn) {}

// handshake runs the TLS handshake under HandshakeTimeout and, on failure,
// counts and logs the rejection once.
func (p *Proxy) handshake(tc *tls.Conn, raw net.Conn) (spiffeid.ID, bool) {
	_ = raw.SetDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
	err := tc.Handshake()
	if err != nil {
		cause, id := classifyHandshakeError(err)
		p.stats.handshake[causeIndex(cause)].Add(1)
		fields := []zap.Field{
			zap.String("peer_addr", raw.RemoteAddr().String()),
			zap.String("cause", string(cause)),
			zap.Error(err),
		}
		if !id.IsZero() {
			fields = append(fields, zap.String("peer_id", id.String()))
		}
		p.log.Warn("connection rejected", fields...)
		return spiffeid.ID{}, false
	}
	_ = raw.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	if cs.DidResume {
		p.stats.resumed.Add(1)
	}
	id, _ := x509svid.IDFromCert(cs.PeerCertificates[0]) // verified in VerifyConnection
	return id, true
}

func (p *Proxy) serveServer(t *tracked) {
	raw := t.raw
	bc := newBatchConn(raw, p.bufs)
	tc := tls.Server(bc, p.tlsConf)
	peer, ok := p.handshake(tc, raw)
	if !ok {
		p.release(t)
		return
	}
	if p.http != nil {
		// The HTTP server owns the connection from here and releases it on Close.
		p.http.hand(&httpConn{Conn: tc, p: p, t: t, peer: peer, leaf: tc.ConnectionState().PeerCertificates[0]})
		return
	}
	defer p.release(t)
	up, err := p.dialTarget(t)
	if err != nil {
		p.log.Warn("target dial failed", zap.String("peer_addr", raw.RemoteAddr().String()),
			zap.String("peer_id", peer.String()), zap.Error(err))
		_ = tc.Close()
		return
	}
	defer func() { _ = up.Close() }()
	p.pipe(tc, up, bc)
	_ = tc.Close()
}

func (p *Proxy) serveClient(t *tracked) {
	defer p.release(t)
	up, err := p.dialTarget(t)
	if err != nil {
		p.log.Warn("target dial failed", zap.String("peer_addr", t.raw.RemoteAddr().String()), zap.Error(err))
		return
	}
	bc := newBatchConn(up, p.bufs)
	tc := tls.Client(bc, p.tlsConf)
	defer func() { _ = tc.Close() }()
	// Failures here are the remote server's: they are logged with its address.
	if _, ok := p.handshake(tc, up); !ok {
		return
	}
	p.pipe(t.raw, tc, bc)
}

func (p *Proxy) dialTarget(t *tracked) (net.Conn, error) {
	c, err := p.dialer.DialContext(p.ctx, p.target.network, p.target.address)
	if err != nil {
		p.stats.dialFail.Add(1)
		return nil, fmt.Errorf("dial %s: %w", p.target, err)
	}
	if !t.setUp(c) {
		_ = c.Close()
		return nil, fmt.Errorf("dial %s: %w", p.target, net.ErrClosed)
	}
	setNoDelay(c)
	return c, nil
}

// Shutdown stops accepting, waits for open connections to finish until ctx
// is done or DrainTimeout passes, then closes the rest and waits for every
// goroutine. It returns ctx's error if connections had to be cut.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.draining || p.stopped {
		p.mu.Unlock()
		return nil
	}
	if !p.running {
		// Never started: nothing to drain, but free the metric names.
		p.stopped = true
		p.mu.Unlock()
		if p.col != nil {
			p.reg.Unregister(p.col)
		}
		return nil
	}
	// Stop accepting before anyone can see Draining: a caller that waits
	// for it (status, tests, an orchestrator) must find the port closed.
	_ = p.ln.Close()
	p.draining = true
	p.idle = make(chan struct{})
	if len(p.conns) == 0 {
		close(p.idle)
	}
	p.mu.Unlock()

	p.log.Info("proxy draining", zap.Int64("open", p.stats.open.Load()))
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DrainTimeout)
	defer cancel()
	if p.http != nil {
		p.http.shutdown(ctx)
	}
	var err error
	select {
	case <-p.idle:
	case <-ctx.Done():
		err = ctx.Err()
		p.mu.Lock()
		n := len(p.conns)
		for t := range p.conns {
			t.forceClose()
		}
		p.mu.Unlock()
		p.log.Warn("drain deadline reached, closing connections", zap.Int("closed", n))
	}
	p.cancel()
	if p.http != nil {
		p.http.close()
	}
	p.wg.Wait()
	if p.col != nil {
		p.reg.Unregister(p.col)
	}
	p.mu.Lock()
	p.running, p.stopped = false, true
	p.mu.Unlock()
	p.log.Info("proxy stopped")
	if err != nil {
		return fmt.Errorf("proxy %q: drain: %w", p.cfg.Name, err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	running, draining := p.running, p.draining
	listen := p.listen.String()
	if p.ln != nil {
		if p.listen.network == "tcp" {
			listen = p.ln.Addr().String()
		}
	}
	p.mu.Unlock()
	s := Stats{
		Name:               p.cfg.Name,
		Mode:               p.cfg.Mode,
		Listen:             listen,
		Target:             p.target.String(),
		Running:            running,
		Draining:           draining,
		ConnectionsOpen:    p.stats.open.Load(),
		ConnectionsTotal:   p.stats.total.Load(),
		ConnectionsRefused: p.stats.refused.Load(),
		HandshakeFailures:  make(map[Cause]uint64, len(allCauses)),
		HandshakesResumed:  p.stats.resumed.Load(),
		TargetDialFailures: p.stats.dialFail.Load(),
		BytesToTarget:      p.stats.toTarget.Load(),
		BytesFromTarget:    p.stats.fromTarget.Load(),
		BulkBufferBytes:    p.bufs.largeBytesInUse(),
	}
	for i, c := range allCauses {
		s.HandshakeFailures[c] = p.stats.handshake[i].Load()
	}
	return s
}
