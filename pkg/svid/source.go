package svid

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ConnStatus is a snapshot of the Source's connection to the Workload API.
type ConnStatus struct {
	// Addr is the Workload API address the Source talks to.
	Addr string `json:"addr"`
	// Connected is true while the X.509 stream is delivering; it turns false
	// on a stream/connection error and true again on the next update.
	Connected bool `json:"connected"`
	// LastUpdate is when the last X.509 context or JWT bundle set arrived.
	LastUpdate time.Time `json:"last_update"`
	// LastError is the most recent error, kept after recovery so a flapping
	// connection can still be diagnosed from the status alone.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time"`
	// Reconnects counts recoveries of the X.509 stream after it had failed
	// (the first connection is not a reconnect).
	Reconnects       uint64 `json:"reconnects"`
	X509Updates      uint64 `json:"x509_updates"`
	JWTBundleUpdates uint64 `json:"jwt_bundle_updates"`
}

// SourceOption configures a Source.
type SourceOption func(*sourceConfig)

type sourceConfig struct {
	addr       string
	log        *zap.Logger
	selector   Selector
	minBackoff time.Duration
	maxBackoff time.Duration
}

// WithAddr sets the Workload API address ("unix:///path" or "tcp://ip:port").
// The default is $SPIFFE_ENDPOINT_SOCKET.
func WithAddr(addr string) SourceOption {
	return func(c *sourceConfig) { c.addr = addr }
}

// WithLogger sets the logger. The default discards everything.
func WithLogger(l *zap.Logger) SourceOption {
	return func(c *sourceConfig) {
		if l != nil {
			c.log = l
		}
	}
}

// WithDefaultSelector sets the selector GetX509SVID uses. The default picks
// the first SVID, as the Workload API defines.
func WithDefaultSelector(sel Selector) SourceOption {
	return func(c *sourceConfig) { c.selector = sel }
}

// WithBackoff bounds the exponential backoff between reconnection attempts
// (client creation, stream re-establishment and gRPC reconnects). The
// default is 1s..30s, which keeps a restarting SPIRE agent from being
// hammered while still recovering within half a minute.
func WithBackoff(minDelay, maxDelay time.Duration) SourceOption {
	return func(c *sourceConfig) {
		if minDelay > 0 {
			c.minBackoff = minDelay
		}
		if maxDelay >= c.minBackoff {
			c.maxBackoff = maxDelay
		}
	}
}

// Source is one watcher on the Workload API. It keeps the latest X.509
// context (SVIDs + bundles, federated included) and JWT bundles, both
// pushed by the API on streams; nothing polls.
//
// Source implements x509svid.Source, x509bundle.Source and
// jwtbundle.Source, so it plugs into go-spiffe's tlsconfig and anything
// built on it.
type Source struct {
	cfg sourceConfig

	mu         sync.RWMutex
	x509ctx    *workloadapi.X509Context
	jwtBundles *jwtbundle.Set
	status     ConnStatus
	everUp     bool
	subs       map[uint64]chan struct{}
	nextSub    uint64
	started    bool
	closed     bool
	cancel     context.CancelFunc
	client     *workloadapi.Client

	ready       chan struct{} // closed on the first X.509 context
	clientReady chan struct{} // closed once client is set
	done        chan struct{} // closed by Close
	readyOnce   sync.Once
	wg          sync.WaitGroup
}

// NewSource returns a Source; it does not connect until Start.
func NewSource(opts ...SourceOption) *Source {
	cfg := sourceConfig{
		log:        zap.NewNop(),
		minBackoff: time.Second,
		maxBackoff: 30 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.addr == "" {
		cfg.addr, _ = workloadapi.GetDefaultAddress()
	}
	return &Source{
		cfg:         cfg,
		status:      ConnStatus{Addr: cfg.addr},
		subs:        make(map[uint64]chan struct{}),
		ready:       make(chan struct{}),
		clientReady: make(chan struct{}),
		done:        make(chan struct{}),
	}
}

// Start starts the watcher goroutines and returns at once. They run until
// Close (or until ctx is cancelled), retrying forever with capped backoff,
// so a Workload API that is down at start is picked up when it appears.
// Only a malformed address is reported here, because no retry can fix it.
func (s *Source) Start(ctx context.Context) error {
	if s.cfg.addr == "" {
		return fmt.Errorf("workload API address: not set (use WithAddr or %s)", workloadapi.SocketEnv)
	}
	if _, err := workloadapi.TargetFromAddress(s.cfg.addr); err != nil {
		return fmt.Errorf("workload API address %q: %w", s.cfg.addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("svid source: Start after Close")
	case s.started:
		return errors.New("svid source: already started")
	}
	s.started = true
	runCtx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.wg.Add(1)
	go s.run(runCtx)
	return nil
}

// WaitReady blocks until the first X.509 context arrived, ctx ends or the
// Source is closed.
func (s *Source) WaitReady(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	default:
	}
	select {
	case <-s.ready:
		return nil
	case <-s.done:
		return errors.New("svid source closed before the first X.509 context arrived")
	case <-ctx.Done():
		st := s.Status()
		if st.LastError != "" {
			return fmt.Errorf("waiting for the first X.509 context from %s: %w (last error: %s)", st.Addr, ctx.Err(), st.LastError)
		}
		return fmt.Errorf("waiting for the first X.509 context from %s: %w", st.Addr, ctx.Err())
	}
}

// Close stops the watchers and waits for them. It is safe to call twice.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	cancel := s.cancel
	close(s.done)
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
	return nil
}

// X509Context returns the latest X.509 context, nil before ready. The
// value is shared: callers must not mutate it.
func (s *Source) X509Context() *workloadapi.X509Context {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.x509ctx
}

// JWTBundles returns the latest JWT bundle set, nil before the first one.
// The value is shared: callers must not mutate it.
func (s *Source) JWTBundles() *jwtbundle.Set {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.jwtBundles
}

// Subscribe returns a channel that receives a value after every X.509
// context or JWT bundle update. It has a buffer of one and sends never
// block, so a slow reader sees one notification for a burst of updates and
// must read the current state from the Source. The channel is never closed
// (a closed channel would spin a select loop); call cancel to unregister.
func (s *Source) Subscribe() (updates <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = ch
	s.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, id)
			s.mu.Unlock()
		})
	}
}

// Status returns a snapshot of the connection state.
func (s *Source) Status() ConnStatus {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.status
}

// FetchJWTSVID asks the Workload API for a JWT-SVID for the audience
// (first element is the primary audience). JWT-SVIDs are minted per call,
// not streamed, so this is a request; it waits for the client to exist.
func (s *Source) FetchJWTSVID(ctx context.Context, sel Selector, audience []string) (*jwtsvid.SVID, error) {
	if len(audience) == 0 {
		return nil, fmt.Errorf("fetch JWT-SVID %s: audience is empty", sel)
	}
	client, err := s.waitClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch JWT-SVID %s: %w", sel, err)
	}
	params := jwtsvid.Params{Audience: audience[0], ExtraAudiences: audience[1:]}
	if sel.SpiffeID != "" {
		id, err := spiffeid.FromString(sel.SpiffeID)
		if err != nil {
			return nil, fmt.Errorf("fetch JWT-SVID: spiffe_id %q: %w", sel.SpiffeID, err)
		}
		params.Subject = id
	}
	svids, err := client.FetchJWTSVIDs(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("fetch JWT-SVID %s for audience %v from %s: %w", sel, audience, s.cfg.addr, err)
	}
	var offered []string
	for _, sv := range svids {
		if (sel.SpiffeID == "" || sv.ID.String() == sel.SpiffeID) && (sel.Hint == "" || sv.Hint == sel.Hint) {
			return sv, nil
		}
		d := sv.ID.String()
		if sv.Hint != "" {
			d += " (hint " + strconv.Quote(sv.Hint) + ")"
		}
		offered = append(offered, d)
	}
	return nil, fmt.Errorf("fetch JWT-SVID %s: no match among offered %v", sel, offered)
}

// GetX509SVID returns the SVID chosen by the default selector from the
// current X.509 context (x509svid.Source).
func (s *Source) GetX509SVID() (*x509svid.SVID, error) {
	return s.pick(s.cfg.selector)
}

// GetX509BundleForTrustDomain returns the X.509 bundle of td, own or
// federated (x509bundle.Source).
func (s *Source) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	c := s.X509Context()
	if c == nil {
		return nil, fmt.Errorf("X.509 bundle for trust domain %q: %w", td, ErrNotReady)
	}
	b, ok := c.Bundles.Get(td)
	if !ok {
		return nil, fmt.Errorf("no X.509 bundle for trust domain %q (have %v)", td, bundleTDs(c.Bundles))
	}
	return b, nil
}

// GetJWTBundleForTrustDomain returns the JWT bundle of td (jwtbundle.Source).
func (s *Source) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	set := s.JWTBundles()
	if set == nil {
		return nil, fmt.Errorf("JWT bundle for trust domain %q: no JWT bundles received from the Workload API yet", td)
	}
	b, ok := set.Get(td)
	if !ok {
		return nil, fmt.Errorf("no JWT bundle for trust domain %q", td)
	}
	return b, nil
}

// X509SVIDSource returns a view that picks by sel on every call, so a TLS
// config built on it presents the SVID current at each handshake.
func (s *Source) X509SVIDSource(sel Selector) x509svid.Source {
	return selectedSource{s: s, sel: sel}
}

type selectedSource struct {
	s   *Source
	sel Selector
}

func (v selectedSource) GetX509SVID() (*x509svid.SVID, error) { return v.s.pick(v.sel) }

func (s *Source) pick(sel Selector) (*x509svid.SVID, error) {
	c := s.X509Context()
	if c == nil {
		return nil, fmt.Errorf("X.509-SVID %s: %w", sel, ErrNotReady)
	}
	return sel.Pick(c.SVIDs)
}

func bundleTDs(set *x509bundle.Set) []string {
	var out []string
	for _, b := range set.Bundles() { // Bundles() is sorted by trust domain
		out = append(out, b.TrustDomain().Name())
	}
	return out
}

func (s *Source) waitClient(ctx context.Context) (*workloadapi.Client, error) {
	select {
	case <-s.done:
		return nil, errors.New("svid source is closed")
	default:
	}
	select {
	case <-s.clientReady:
		return s.client, nil
	case <-s.done:
		return nil, errors.New("svid source is closed")
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the Workload API client: %w", ctx.Err())
	}
}

func (s *Source) run(ctx context.Context) {
	defer s.wg.Done()
	log := s.cfg.log
	bo := newExpBackoff(s.cfg.minBackoff, s.cfg.maxBackoff)
	var client *workloadapi.Client
	for {
		c, err := workloadapi.New(ctx,
			workloadapi.WithAddr(s.cfg.addr),
			workloadapi.WithLogger(spiffeLogger{log.Named("workloadapi").Sugar()}),
			workloadapi.WithBackoffStrategy(expBackoffStrategy{s.cfg.minBackoff, s.cfg.maxBackoff}),
			workloadapi.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: grpcbackoff.Config{
					BaseDelay:  s.cfg.minBackoff,
					Multiplier: 1.6,
					Jitter:     0.2,
					MaxDelay:   s.cfg.maxBackoff,
				},
				MinConnectTimeout: 20 * time.Second,
			})),
		)
		if err == nil {
			client = c
			break
		}
		s.recordError(fmt.Errorf("create Workload API client for %s: %w", s.cfg.addr, err), true)
		if !sleepCtx(ctx, bo.Next()) {
			return
		}
	}
	s.mu.Lock()
	s.client = client
	close(s.clientReady)
	s.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.watchLoop(ctx, "X.509 context", func() error { return client.WatchX509Context(ctx, x509Watcher{s}) })
	}()
	go func() {
		defer wg.Done()
		s.watchLoop(ctx, "JWT bundles", func() error { return client.WatchJWTBundles(ctx, jwtWatcher{s}) })
	}()
	wg.Wait()
	if err := client.Close(); err != nil {
		log.Debug("closing Workload API client", zap.Error(err))
	}
}

// watchLoop keeps a go-spiffe watch alive. go-spiffe already retries
// transient errors itself; it only returns on ctx end or on errors it
// deems final (InvalidArgument), which we still retry, slowly, because the
// agent on the other side may be fixed or replaced without restarting us.
func (s *Source) watchLoop(ctx context.Context, what string, watch func() error) {
	bo := newExpBackoff(s.cfg.minBackoff, s.cfg.maxBackoff)
	for {
		err := watch()
		if ctx.Err() != nil {
			return
		}
		s.recordError(fmt.Errorf("watch %s on %s ended: %w", what, s.cfg.addr, err), what == "X.509 context")
		if !sleepCtx(ctx, bo.Next()) {
			return
		}
	}
}

func (s *Source) recordError(err error, disconnect bool) {
	s.mu.Lock()
	s.status.LastError = err.Error()
	s.status.LastErrorTime = time.Now()
	if disconnect {
		s.status.Connected = false
	}
	s.mu.Unlock()
	s.cfg.log.Warn("workload API", zap.Error(err))
}

func (s *Source) notifyLocked() {
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

type x509Watcher struct{ s *Source }

func (w x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s := w.s
	s.mu.Lock()
	s.x509ctx = c
	s.status.X509Updates++
	s.status.LastUpdate = time.Now()
	reconnected := false
	if !s.status.Connected {
		if s.everUp {
			s.status.Reconnects++
			reconnected = true
		}
		s.status.Connected = true
		s.everUp = true
	}
	s.notifyLocked()
	s.mu.Unlock()
	s.readyOnce.Do(func() { close(s.ready) })
	if reconnected {
		s.cfg.log.Info("workload API stream re-established", zap.String("addr", s.cfg.addr))
	}
	if s.cfg.log.Core().Enabled(zap.DebugLevel) {
		fields := []zap.Field{zap.Int("svids", len(c.SVIDs)), zap.Int("bundles", c.Bundles.Len())}
		if len(c.SVIDs) > 0 && len(c.SVIDs[0].Certificates) > 0 {
			leaf := c.SVIDs[0].Certificates[0]
			fields = append(fields, zap.Stringer("spiffe_id", c.SVIDs[0].ID),
				zap.String("serial", leaf.SerialNumber.Text(16)), zap.Time("not_after", leaf.NotAfter))
		}
		s.cfg.log.Debug("X.509 context update", fields...)
	}
}

func (w x509Watcher) OnX509ContextWatchError(err error) {
	if isCanceled(err) {
		return
	}
	// A gRPC status means the stream or connection failed; anything else is
	// a response that did not parse while the stream itself is still up.
	_, isStatus := status.FromError(err)
	w.s.recordError(fmt.Errorf("X.509 context stream from %s: %w", w.s.cfg.addr, err), isStatus)
}

type jwtWatcher struct{ s *Source }

func (w jwtWatcher) OnJWTBundlesUpdate(set *jwtbundle.Set) {
	s := w.s
	s.mu.Lock()
	// A stream that (re)sends identical bundles, as on every reconnect,
	// must not wake subscribers: they would rewrite and debounce for
	// nothing, delaying the X.509 update that matters.
	changed := !jwtSetsEqual(s.jwtBundles, set)
	s.jwtBundles = set
	s.status.JWTBundleUpdates++
	s.status.LastUpdate = time.Now()
	if changed {
		s.notifyLocked()
	}
	s.mu.Unlock()
	s.cfg.log.Debug("JWT bundles update", zap.Int("bundles", set.Len()))
}

func (w jwtWatcher) OnJWTBundlesWatchError(err error) {
	if isCanceled(err) {
		return
	}
	w.s.recordError(fmt.Errorf("JWT bundle stream from %s: %w", w.s.cfg.addr, err), false)
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// expBackoff doubles from min to max. go-spiffe's default is linear
// 1s,2s,3s..30s; doubling reaches the cap sooner, and the bounds are ours.
type expBackoff struct {
	min, max, cur time.Duration
}

func newExpBackoff(minDelay, maxDelay time.Duration) *expBackoff {
	return &expBackoff{min: minDelay, max: maxDelay}
}

func (b *expBackoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur *= 2
	}
	if b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *expBackoff) Reset() { b.cur = 0 }

type expBackoffStrategy struct{ min, max time.Duration }

func (s expBackoffStrategy) NewBackoff() workloadapi.Backoff { return newExpBackoff(s.min, s.max) }

// spiffeLogger adapts zap to go-spiffe's logger. go-spiffe logs every
// failed watch attempt at error level although it retries them, and every
// such error also reaches our watcher, which logs it once as a warning;
// go-spiffe's own lines are therefore debug detail.
type spiffeLogger struct{ l *zap.SugaredLogger }

func (l spiffeLogger) Debugf(format string, args ...any) { l.l.Debugf(format, args...) }
func (l spiffeLogger) Infof(format string, args ...any)  { l.l.Infof(format, args...) }
func (l spiffeLogger) Warnf(format string, args ...any)  { l.l.Debugf(format, args...) }
func (l spiffeLogger) Errorf(format string, args ...any) { l.l.Debugf(format, args...) }

func jwtSetsEqual(a, b *jwtbundle.Set) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Len() != b.Len() {
		return false
	}
	for _, ab := range a.Bundles() {
		bb, ok := b.Get(ab.TrustDomain())
		if !ok || !ab.Equal(bb) {
			return false
		}
	}
	return true
}
