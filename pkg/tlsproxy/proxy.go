package tlsproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/pkg/mtls"
	"github.com/identity-agent/identity-agent/pkg/xfcc"
)

// Proxy is one server- or client-mode proxy. Create it with New, run it
// with Start, change it with Update and stop it with Shutdown or Close.
type Proxy struct {
	name    string
	mode    Mode
	listen  addr
	log     *zap.Logger
	svids   x509svid.Source
	bundles x509bundle.Source
	opts    options
	stats   counters
	reg     prometheus.Registerer
	col     *collector
	http    *httpFront // nil unless cfg.HTTP
	bufs    *bufPool   // relay buffers, shared by all connections of this proxy
	adm     *admission
	shedLog rateLog

	// rt is what new connections use; each connection keeps the one it
	// was accepted under, so Update never disturbs established ones.
	rt    atomic.Pointer[runtimeConfig]
	updMu sync.Mutex // serializes Update and Start's limit fitting

	// ctx is cancelled when Shutdown gives up waiting, to abort dials.
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	ln       net.Listener
	reserved net.Listener          // opened by Listen, served by Start
	conns    map[*tracked]struct{} // open connections, for force-close
	running  bool
	draining bool
	stopped  bool
	wg       sync.WaitGroup // accept loop and connection goroutines
	idle     chan struct{}  // closed when draining and the last connection ended
	lnClosed chan struct{}  // closed once Shutdown has closed the listener (lifecycle.go)
}

// runtimeConfig is one generation of a proxy's settings.
type runtimeConfig struct {
	cfg     Config // normalized
	target  addr
	tlsConf *tls.Config
	authz   mtls.Authorizer // cfg's, re-run on established peers by Update
	policy  string          // authz's fingerprint: Update re-runs it when this changes
	dialer  *net.Dialer
	lim     limits // in force: cfg's, lowered to fit RLIMIT_NOFILE
}

// New validates cfg and builds a proxy that takes its SVID from svids and
// its trust bundles from bundles on every handshake, so rotations apply to
// new connections without a restart. It neither listens nor starts
// goroutines.
func New(cfg Config, svids x509svid.Source, bundles x509bundle.Source, opts ...Option) (*Proxy, error) {
	o := options{log: zap.NewNop(), bulkBudget: DefaultBulkBufferBudget, fdLimit: fdLimit}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if cfg.Listen == "" && o.ln != nil {
		cfg.Listen = addrString(o.ln.Addr())
	}
	if svids == nil || bundles == nil {
		return nil, fmt.Errorf("proxy %q: an X.509-SVID source and a bundle source are required", cfg.Name)
	}
	p := &Proxy{
		name:    cfg.Name,
		mode:    cfg.Mode,
		log:     o.log.With(zap.String("proxy", cfg.Name), zap.String("mode", string(cfg.Mode))),
		svids:   svids,
		bundles: bundles,
		opts:    o,
		conns:   map[*tracked]struct{}{},
		reg:     o.reg,
		bufs:    newBufPool(o.bulkBudget),
	}
	rt, listen, err := p.build(cfg)
	if err != nil {
		return nil, err
	}
	p.listen = listen
	p.rt.Store(rt)
	p.adm = newAdmission(rt.lim)
	if rt.cfg.HTTP {
		p.http = newHTTPFront(p, rt)
	}
	if p.reg != nil {
		p.col = newCollector(cfg.Name, p)
		if err := p.reg.Register(p.col); err != nil {
			return nil, fmt.Errorf("proxy %q: register metrics: %w", cfg.Name, err)
		}
	}
	return p, nil
}

// addrString renders a listener's address in Config.Listen's syntax.
func addrString(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix://" + a.String()
	}
	return a.String()
}

// build validates cfg and derives what connections need from it.
func (p *Proxy) build(cfg Config) (*runtimeConfig, addr, error) {
	cfg, listen, target, err := cfg.normalized()
	if err != nil {
		return nil, addr{}, err
	}
	authz, err := cfg.EffectiveAuthorizer()
	if err != nil {
		return nil, addr{}, fmt.Errorf("proxy %q: %w", cfg.Name, err)
	}
	rt := &runtimeConfig{
		cfg:    cfg,
		target: target,
		authz:  authz,
		policy: mtls.Fingerprint(authz),
		dialer: &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: plainKeepAlive(cfg.Mode == ModeServer, target)},
		lim:    limits{maxConns: cfg.MaxConns, maxHandshakes: cfg.MaxHandshakes, perSource: cfg.MaxHandshakesPerSource},
	}
	v := &verifier{bundles: p.bundles, authz: authz}
	if cfg.Mode == ModeServer {
		rt.tlsConf = serverTLSConfig(p.svids, p.bundles, authz, v)
		if cfg.HTTP {
			rt.tlsConf.NextProtos = []string{"http/1.1"}
		}
	} else {
		rt.tlsConf = clientTLSConfig(p.svids, p.bundles, authz, v, target)
	}
	if len(p.opts.curves) > 0 {
		rt.tlsConf.CurvePreferences = p.opts.curves
	}
	if p.opts.noResume {
		rt.tlsConf.SessionTicketsDisabled = true
		rt.tlsConf.ClientSessionCache = nil
	}
	return rt, listen, nil
}

// serverTLSConfig starts from mtls.ServerConfig (go-spiffe's mTLS server
// config: SVID per handshake from the source, TLS >= 1.2, verification in
// VerifyConnection) and verifies with the proxy's own verifier, which
// classifies rejections and caches chains.
func serverTLSConfig(svids x509svid.Source, bundles x509bundle.Source, authz mtls.Authorizer, v *verifier) *tls.Config {
	c := mtls.ServerConfig(svids, bundles, authz)
	// Request rather than require: a missing certificate then reaches
	// VerifyConnection and is reported as no_cert instead of a generic
	// handshake error. VerifyConnection still rejects it.
	c.ClientAuth = tls.RequestClientCert
	c.VerifyConnection = v.verifyConnection
	// Full-size records from the start: this is a bulk pipe, not a web
	// server optimising time to first byte.
	c.DynamicRecordSizingDisabled = true
	bindServerSessions(c, svids)
	return c
}

func clientTLSConfig(svids x509svid.Source, bundles x509bundle.Source, authz mtls.Authorizer, v *verifier, target addr) *tls.Config {
	c := mtls.ClientConfig(svids, bundles, authz)
	c.VerifyConnection = v.verifyConnection
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
func (p *Proxy) Name() string { return p.name }

// Start listens and serves in background goroutines; it returns once the
// listener is open. ctx only bounds the start itself; stop the proxy with
// Shutdown or Close.
func (p *Proxy) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.stopped {
		return fmt.Errorf("proxy %q: already started or shut down", p.name)
	}
	ln := p.reserved
	p.reserved = nil
	if ln == nil {
		var err error
		if ln, err = p.openListener(ctx); err != nil {
			return fmt.Errorf("proxy %q: listen: %w", p.name, err)
		}
	}
	p.updMu.Lock()
	rt := p.fitted(p.rt.Load())
	p.rt.Store(rt)
	p.adm.setLimits(rt.lim)
	p.updMu.Unlock()
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.ln = ln
	p.running = true
	if p.http != nil {
		p.http.start()
	}
	p.wg.Add(1)
	go p.acceptLoop(ln)
	p.log.Info("proxy listening", zap.String("listen", ln.Addr().String()), zap.String("target", rt.target.String()),
		zap.String("authorizer", rt.authz.String()),
		zap.Int("max_conns", rt.lim.maxConns), zap.Int("max_handshakes", rt.lim.maxHandshakes),
		zap.Int("max_handshakes_per_source", rt.lim.perSource))
	return nil
}

// Listen opens the listening socket now, for Start to serve later: a
// program that runs several parts can learn that an address is taken
// before it does anything else (writes files, starts other listeners).
// Until Start, connections wait in the socket's backlog. The error is the
// listener's own, without the proxy's name.
func (p *Proxy) Listen(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.stopped || p.reserved != nil {
		return fmt.Errorf("proxy %q: already listening, started or shut down", p.name)
	}
	ln, err := p.openListener(ctx)
	if err != nil {
		return err
	}
	p.reserved = ln
	return nil
}

func (p *Proxy) openListener(ctx context.Context) (net.Listener, error) {
	switch {
	case p.opts.ln != nil:
		return p.opts.ln, nil
	case p.listen.network == "unix":
		if p.opts.listenUnix == nil {
			return nil, fmt.Errorf("%s: unix sockets need WithUnixListener or WithListener (the proxy does not create socket files itself)", p.listen)
		}
		return p.opts.listenUnix(p.listen.address)
	default:
		lc := net.ListenConfig{KeepAlive: plainKeepAlive(p.mode == ModeClient, p.listen)}
		return lc.Listen(ctx, p.listen.network, p.listen.address)
	}
}

// fitted returns rt with its limits lowered, if needed, to what the
// proxy's file descriptors allow (its WithFDBudget share, else
// RLIMIT_NOFILE less fdReserve), logging the change once per generation.
func (p *Proxy) fitted(rt *runtimeConfig) *runtimeConfig {
	perAuthed := 2
	if rt.cfg.HTTP {
		perAuthed = 3
	}
	want := limits{maxConns: rt.cfg.MaxConns, maxHandshakes: rt.cfg.MaxHandshakes, perSource: rt.cfg.MaxHandshakesPerSource}
	var got limits
	var lowered bool
	var why string
	var field zap.Field
	if b := p.opts.fdBudget; b > 0 {
		got, lowered = fitInto(want, uint64(max(b-1, 0)), perAuthed) // the listener is one of them
		why = "this proxy's share of the file descriptor limit (ulimit -n) is too low for its limits; lowered them to fit: raise LimitNOFILE (systemd) or NumberOfFiles (launchd), or lower max_conns/max_handshakes, to restore them"
		field = zap.Int("fd_budget", b)
	} else {
		nofile, ok := p.opts.fdLimit()
		if !ok {
			return rt
		}
		got, lowered = fitLimits(want, nofile, perAuthed)
		why = "file descriptor limit (ulimit -n) too low for this proxy's limits; lowered them to fit: raise LimitNOFILE (systemd) or NumberOfFiles (launchd) to restore them"
		field = zap.Uint64("rlimit_nofile", nofile)
	}
	if !lowered {
		return rt
	}
	p.log.Warn(why, field,
		zap.Int("max_conns", got.maxConns), zap.Int("configured_max_conns", want.maxConns),
		zap.Int("max_handshakes", got.maxHandshakes), zap.Int("configured_max_handshakes", want.maxHandshakes))
	out := *rt
	out.lim = got
	return &out
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
		rt := p.rt.Load()
		t := &tracked{raw: c, rt: rt}
		var src netip.Addr // client mode: every caller is local, no per-source cap
		if p.mode == ModeServer {
			src = sourceKey(c.RemoteAddr())
		}
		// Shed nothing younger than shedGrace: hold the newcomer meanwhile.
		for {
			d := p.adm.admitWait(src, time.Now())
			if d <= 0 {
				break
			}
			time.Sleep(d)
		}
		pc, victims := p.adm.admit(t, src)
		if pc == nil {
			p.refuse(c, rt)
			continue
		}
		t.pc = pc
		for _, v := range victims {
			p.shed(v)
		}
		if !p.track(t) {
			p.adm.leave(pc)
			_ = c.Close()
			continue
		}
		p.stats.total.Add(1)
		p.stats.open.Add(1)
		p.wg.Add(1)
		go p.serve(t)
	}
}

// refuse resets a connection while the authenticated pool is full:
// queuing it would let a flood of peers hold memory and file descriptors.
func (p *Proxy) refuse(c net.Conn, rt *runtimeConfig) {
	p.stats.refused.Add(1)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	p.log.Warn("connection refused", zap.String("peer_addr", c.RemoteAddr().String()),
		zap.String("cause", "max_conns"), zap.Int("max_conns", rt.lim.maxConns))
	_ = c.Close()
}

// shed closes a handshaking connection to make room for a newer one. Under
// attack this happens thousands of times a second, so it is logged at most
// once a second, with the count since the last line.
func (p *Proxy) shed(v *pending) {
	p.stats.shed[v.reason].Add(1)
	if tc, ok := v.t.raw.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	v.t.forceClose()
	if n, ok := p.shedLog.allow(time.Now()); ok {
		hs, _, lim := p.adm.counts()
		p.log.Warn("handshaking connections shed to admit new ones", zap.String("reason", v.reason.String()),
			zap.String("peer_addr", v.t.raw.RemoteAddr().String()), zap.Uint64("shed_since_last_line", n),
			zap.Int("handshaking", hs), zap.Int("max_handshakes", lim.maxHandshakes),
			zap.Int("max_handshakes_per_source", lim.perSource))
	}
}

// rateLog lets one line through per interval and counts the rest.
type rateLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed uint64
}

func (r *rateLog) allow(now time.Time) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.suppressed++
	if now.Sub(r.last) < time.Second {
		return 0, false
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	return n, true
}

// tracked is one accepted connection and, once dialed, its upstream.
type tracked struct {
	raw    net.Conn
	rt     *runtimeConfig // the settings it was accepted under
	pc     *pending       // its place in the handshake pool
	authed bool           // holds an authenticated slot

	// Set under Proxy.mu once authenticated: what Update re-authorizes.
	peer      spiffeid.ID
	peerCerts []*x509.Certificate // as presented in the handshake
	peerAddr  string              // the TLS side's remote address
	since     time.Time

	mu         sync.Mutex
	up         net.Conn
	cut        bool
	released   bool
	hc         *httpConn      // HTTP mode, once handed to the HTTP server
	hstate     http.ConnState // the HTTP server's view of hc
	ending     endReason      // why the proxy is closing it (see endConn)
	lifeTimer  *time.Timer    // MaxConnLifetime
	drainTimer *time.Timer    // an HTTP request in flight when it had to end
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
	t.stopTimers()
	_ = t.raw.Close()
	if t.authed {
		p.adm.release()
	} else {
		p.adm.leave(t.pc)
	}
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
	p.wg.Done()
}

func (p *Proxy) serve(t *tracked) {
	if p.mode == ModeServer {
		p.serveServer(t)
	} else {
		p.serveClient(t)
	}
}

// handshake runs the TLS handshake under HandshakeTimeout. On failure it
// counts and logs the rejection once, unless the connection was shed
// meanwhile, and returns the cause; retry says that the caller will try
// once more.
func (p *Proxy) handshake(t *tracked, tc *tls.Conn, raw net.Conn, retry bool) (Cause, error) {
	_ = raw.SetDeadline(time.Now().Add(t.rt.cfg.HandshakeTimeout))
	err := tc.Handshake()
	if err == nil {
		_ = raw.SetDeadline(time.Time{})
		return "", nil
	}
	if p.adm.isShed(t.pc) {
		return "", err
	}
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
	if retry && retryable(cause) {
		fields = append(fields, zap.Duration("retry_in", handshakeRetryDelay))
	}
	p.log.Warn("connection rejected", fields...)
	return cause, err
}

// rejectedAfterHandshake logs and counts a server's refusal of our
// certificate that arrived after our side of the handshake was done (TLS
// 1.3): the caller's connection is already relayed, so it is not retried.
func (p *Proxy) rejectedAfterHandshake(up net.Conn, server spiffeid.ID, err error) {
	p.stats.handshake[causeIndex(CausePeerRejected)].Add(1)
	p.log.Warn("connection rejected", zap.String("peer_addr", up.RemoteAddr().String()),
		zap.String("cause", string(CausePeerRejected)), zap.String("peer_id", server.String()), zap.Error(err))
}

// authenticated moves a handshaken connection to the authenticated pool
// and returns the peer's ID; false if it was shed meanwhile or max_conns
// filled up during its handshake (then refused and counted).
func (p *Proxy) authenticated(t *tracked, tc *tls.Conn, raw net.Conn) (spiffeid.ID, bool) {
	if !p.adm.authenticate(t.pc) {
		if !p.adm.isShed(t.pc) {
			p.stats.refused.Add(1)
			p.log.Warn("connection refused", zap.String("peer_addr", raw.RemoteAddr().String()),
				zap.String("cause", "max_conns"), zap.Int("max_conns", t.rt.lim.maxConns))
		}
		return spiffeid.ID{}, false
	}
	t.authed = true
	cs := tc.ConnectionState()
	if cs.DidResume {
		p.stats.resumed.Add(1)
	}
	id, _ := x509svid.IDFromCert(cs.PeerCertificates[0]) // verified in VerifyConnection
	p.mu.Lock()
	t.peer, t.peerCerts, t.peerAddr, t.since = id, cs.PeerCertificates, raw.RemoteAddr().String(), time.Now()
	p.mu.Unlock()
	// An Update during the handshake: it was verified against the allow
	// list it was accepted under, and Update's sweep may have run before
	// the peer was recorded above.
	if cur := p.rt.Load(); cur != t.rt && !authorizedNow(cur, t) {
		p.stats.handshake[causeIndex(CauseUnauthorizedID)].Add(1)
		p.log.Warn("connection rejected", zap.String("peer_addr", t.peerAddr), zap.String("cause", string(CauseUnauthorizedID)),
			zap.String("peer_id", id.String()), zap.String("reason", "allow list changed during its handshake"))
		return spiffeid.ID{}, false
	}
	p.armLifetime(t)
	return id, true
}

func (p *Proxy) serveServer(t *tracked) {
	raw := t.raw
	bc := newBatchConn(raw, p.bufs)
	pc := t.pc
	bc.onFirstRead = func() { p.adm.progressed(pc, progSent) }
	bc.onFirstWrite = func() { p.adm.progressed(pc, progAnswered) }
	tc := tls.Server(bc, t.rt.tlsConf)
	if _, err := p.handshake(t, tc, raw, false); err != nil {
		p.release(t)
		return
	}
	peer, ok := p.authenticated(t, tc, raw)
	if !ok {
		p.release(t)
		return
	}
	if p.http != nil {
		// The HTTP server owns the connection from here and releases it on Close.
		leaf := tc.ConnectionState().PeerCertificates[0]
		hc := &httpConn{Conn: tc, p: p, t: t, peer: peer, client: xfcc.New(spiffeid.ID{}, leaf, peer)}
		t.mu.Lock()
		t.hc = hc
		t.mu.Unlock()
		p.http.hand(hc)
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
	p.pipe(tc, up, bc, t.rt.cfg.IdleTimeout, nil)
	_ = tc.Close()
}

// handshakeRetryDelay is how long a client-mode proxy waits before its one
// retry of a handshake that failed on trust: long enough for a Workload
// API push to reach both peers, short enough for a caller to wait.
const handshakeRetryDelay = 250 * time.Millisecond

// retryable causes are the ones a trust bundle update on either side can
// cure: the server's SVID chains to a root we do not have yet, or the
// server refused ours.
func retryable(c Cause) bool { return c == CauseUnknownCA || c == CausePeerRejected }

func (p *Proxy) serveClient(t *tracked) {
	defer p.release(t)
	for attempt := 0; ; attempt++ {
		up, err := p.dialTarget(t)
		if err != nil {
			p.log.Warn("target dial failed", zap.String("peer_addr", t.raw.RemoteAddr().String()), zap.Error(err))
			return
		}
		bc := newBatchConn(up, p.bufs)
		tc := tls.Client(bc, t.rt.tlsConf)
		// Failures here are the remote server's: they are logged with its
		// address. Nothing has been relayed yet, so one retry is invisible
		// to the caller: a CA that switched before its root reached one
		// of the peers costs a quarter second instead of a request.
		cause, err := p.handshake(t, tc, up, attempt == 0)
		if err == nil {
			if server, ok := p.authenticated(t, tc, up); ok {
				p.pipe(t.raw, tc, bc, t.rt.cfg.IdleTimeout, func(err error) {
					p.rejectedAfterHandshake(up, server, err)
				})
			}
			_ = tc.Close()
			return
		}
		_ = tc.Close()
		if attempt > 0 || !retryable(cause) || p.adm.isShed(t.pc) {
			return
		}
		p.stats.retries.Add(1)
		select {
		case <-time.After(handshakeRetryDelay):
		case <-p.ctx.Done():
			return
		}
		if p.adm.isShed(t.pc) {
			return
		}
	}
}

func (p *Proxy) dialTarget(t *tracked) (net.Conn, error) {
	target := t.rt.target
	c, err := t.rt.dialer.DialContext(p.ctx, target.network, target.address)
	if err != nil {
		p.stats.dialFail.Add(1)
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	if !t.setUp(c) {
		_ = c.Close()
		return nil, fmt.Errorf("dial %s: %w", target, net.ErrClosed)
	}
	return c, nil
}
