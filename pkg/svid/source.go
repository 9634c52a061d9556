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
)

// ConnStatus is a snapshot of the Source's connection to the Workload API.
type ConnStatus struct {
	// Addr is the Workload API address the Source talks to.
	Addr string `json:"addr"`
	// Connected is true while the X.509 stream is delivering; it turns false
	// on a stream/connection error and true again on the next update.
	Connected bool `json:"connected"`
	// NoIdentity is set while the Workload API answers the X.509 stream
	// PermissionDenied: it is reachable but issues this workload no
	// identity (SPIRE: every registration entry matching it was deleted,
	// or none has reached its agent yet). Connected is false meanwhile;
	// the last X.509 context is kept, so files already written stay and
	// the proxies serve on until it expires. Cleared by the next update.
	NoIdentity bool `json:"no_identity,omitempty"`
	// Reason says what NoIdentity means, in the operator's words.
	Reason string `json:"reason,omitempty"`
	// LastUpdate is when the last X.509 context or JWT bundle set arrived.
	LastUpdate time.Time `json:"last_update"`
	// LastError is the most recent error, kept after recovery so a flapping
	// connection can still be diagnosed from the status alone. While the
	// X.509 stream is down it is that stream's error: the JWT bundle
	// stream's, which fails with it, is only logged.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time"`
	// Reconnects counts recoveries of the X.509 stream after it had failed
	// (the first connection is not a reconnect).
	Reconnects uint64 `json:"reconnects"`
	// SocketEvents counts reconnections made at once because the unix
	// socket was created anew (a restarted Workload API).
	SocketEvents     uint64 `json:"socket_events"`
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
// default is DefaultRetryMin..DefaultRetryMax, which keeps a restarting
// SPIRE agent from being hammered. A unix socket is also watched: when its
// path is created again, the Source reconnects at once, whatever the
// backoff has grown to.
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
		minBackoff: DefaultRetryMin,
		maxBackoff: DefaultRetryMax,
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
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.client, nil
	case <-s.done:
		return nil, errors.New("svid source is closed")
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for the Workload API client: %w", ctx.Err())
	}
}

func (s *Source) run(ctx context.Context) {
	defer s.wg.Done()
	appeared := make(chan struct{}, 1)
	if path := unixSocketPath(s.cfg.addr); path != "" {
		if sw, err := newSocketWatcher(path, s.cfg.log); err != nil {
			s.cfg.log.Warn("cannot watch for the Workload API socket; reconnects wait for the backoff", zap.Error(err))
		} else {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				sw.run(ctx, appeared)
			}()
		}
	}
	for {
		client := s.newClient(ctx, appeared)
		if client == nil {
			return
		}
		s.mu.Lock()
		first := s.client == nil
		s.client = client
		if first {
			close(s.clientReady)
		}
		s.mu.Unlock()
		again := s.serve(ctx, client, appeared)
		if err := client.Close(); err != nil {
			s.cfg.log.Debug("closing Workload API client", zap.Error(err))
		}
		if !again {
			return
		}
	}
}

// newClient creates the Workload API client, retrying with backoff (cut
// short when the socket appears); nil when ctx ends.
func (s *Source) newClient(ctx context.Context, appeared <-chan struct{}) *workloadapi.Client {
	bo := newExpBackoff(s.cfg.minBackoff, s.cfg.maxBackoff)
	for {
		c, err := workloadapi.New(ctx,
			workloadapi.WithAddr(s.cfg.addr),
			workloadapi.WithLogger(spiffeLogger{s.cfg.log.Named("workloadapi").Sugar()}),
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
			return c
		}
		s.recordError(fmt.Errorf("create Workload API client for %s: %w", s.cfg.addr, err), true)
		select {
		case <-time.After(bo.Next()):
		case <-appeared:
		case <-ctx.Done():
			return nil
		}
	}
}

// serve runs the X.509 and JWT bundle watches on client until ctx ends
// (false) or the socket is created anew (true: reconnect now). A new socket
// means a restarted Workload API; the old connection is dead or about to
// be, and go-spiffe's and gRPC's own retries may be sleeping for up to the
// backoff cap, so a fresh client is quicker than waiting for them.
func (s *Source) serve(ctx context.Context, client *workloadapi.Client, appeared <-chan struct{}) bool {
	connCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.watchLoop(connCtx, "X.509 context", func() error { return client.WatchX509Context(connCtx, x509Watcher{s}) })
	}()
	go func() {
		defer wg.Done()
		s.watchLoop(connCtx, "JWT bundles", func() error { return client.WatchJWTBundles(connCtx, jwtWatcher{s}) })
	}()
	defer wg.Wait() // runs after cancel, below
	defer cancel()
	select {
	case <-ctx.Done():
		return false
	case <-appeared:
		s.cfg.log.Info("workload API socket appeared; reconnecting now", zap.String("addr", s.cfg.addr))
		s.mu.Lock()
		s.status.SocketEvents++
		s.mu.Unlock()
		return true
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

// recordError keeps err as LastError and logs it. disconnect is set for
// the errors of the X.509 stream (and the client), which Connected
// describes: while that stream is down, a JWT bundle stream error (it
// fails at the same moment and retries on its own) is logged but does not
// replace the X.509 error, so the reason status gives for "unreachable"
// is about the stream that matters to every output.
func (s *Source) recordError(err error, disconnect bool) {
	s.mu.Lock()
	if disconnect || s.status.Connected || s.status.LastError == "" {
		s.status.LastError = err.Error()
		s.status.LastErrorTime = time.Now()
	}
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
