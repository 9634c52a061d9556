package rotation

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Defaults for the Manager options.
const (
	// DefaultDebounce is the quiet period after a write during which
	// further pushes are coalesced into one trailing write (X.509 contexts
	// and JWT bundles arrive on separate streams). The first push of a
	// burst is written at once, so the debounce adds no latency to a
	// rotation.
	DefaultDebounce = 100 * time.Millisecond
	// DefaultRetryMin and DefaultRetryMax bound the backoff between retries
	// of a failed write or reload.
	DefaultRetryMin = time.Second
	DefaultRetryMax = time.Minute
	// DefaultExpiryWindow (0, no fixed window) means an SVID is overdue
	// for rotation once less than a third of its lifetime is left. SPIRE
	// rotates at half-life, so a healthy agent never gets there, whatever
	// the TTL (8s in a test, 1h by default); one that does has missed its
	// rotation by a sixth of the lifetime (10m of a 1h SVID): long enough
	// to ride out an agent restart, short enough to act before services
	// fail. WithExpiryWindow sets a fixed window instead.
	DefaultExpiryWindow time.Duration = 0
	// jwtFetchTimeout bounds one JWT-SVID request.
	jwtFetchTimeout = 30 * time.Second
	// minJWTRefresh stops a token with a tiny lifetime from refetching in a
	// tight loop (withMinJWTRefresh overrides it in tests).
	minJWTRefresh = time.Second
)

// Option configures a Manager.
type Option func(*config)

type config struct {
	log                *zap.Logger
	reg                prometheus.Registerer
	debounce           time.Duration
	retryMin, retryMax time.Duration
	expiryWindow       time.Duration
	guard              bool
	writeHook          func(writeEvent)
	watchdogCheck      time.Duration
	stepSlack          time.Duration
	minJWTRefresh      time.Duration
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithRegisterer registers the Manager's metrics on reg. Without it (or with
// nil) no metric is registered anywhere.
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) { c.reg = reg }
}

// WithDebounce sets how long the Manager waits for a burst of pushes to end
// before writing (default 100ms; 0 writes on every push).
func WithDebounce(d time.Duration) Option {
	return func(c *config) {
		if d >= 0 {
			c.debounce = d
		}
	}
}

// WithRetryBackoff sets the exponential backoff between retries of a failed
// write or reload (default 1s doubling up to 1m).
func WithRetryBackoff(minDelay, maxDelay time.Duration) Option {
	return func(c *config) {
		if minDelay > 0 {
			c.retryMin = minDelay
		}
		if maxDelay > 0 {
			c.retryMax = maxDelay
		}
	}
}

// WithExpiryWindow sets how close to NotAfter an SVID must be to count as
// overdue for rotation (see ExpiryOf): the watchdog warns then while the
// Workload API is unreachable, and status turns WARNING. 0 (the default)
// means "less than a third of its lifetime left"; negative values are
// ignored.
func WithExpiryWindow(d time.Duration) Option {
	return func(c *config) {
		if d >= 0 {
			c.expiryWindow = d
		}
	}
}

// WithGuard turns the fsnotify guard on or off (default on). The guard
// restores an output's files when something else deletes, replaces or
// alters them.
func WithGuard(enabled bool) Option {
	return func(c *config) { c.guard = enabled }
}

// writeEvent is reported to the test hook after every atomicdir.Writer.Write.
type writeEvent struct {
	Output  string
	Changed bool
	Serial  string
	Err     error
	At      time.Time
}

// withWriteHook lets tests and benchmarks observe writes as they happen.
func withWriteHook(f func(writeEvent)) Option {
	return func(c *config) { c.writeHook = f }
}

// withWatchdogCheck overrides how often the watchdog looks at the
// connection once inside the expiry window.
func withWatchdogCheck(d time.Duration) Option {
	return func(c *config) { c.watchdogCheck = d }
}

// withStepSlack overrides the minute Stalled allows a pass beyond its
// steps' own deadlines.
func withStepSlack(d time.Duration) Option {
	return func(c *config) { c.stepSlack = d }
}

// withMinJWTRefresh overrides the second a JWT-SVID refetch waits at
// least, so tests can scale a token's lifetime down.
func withMinJWTRefresh(d time.Duration) Option {
	return func(c *config) { c.minJWTRefresh = d }
}

// Manager keeps every Output's files in step with the Workload API.
type Manager struct {
	src     Source
	cfg     config
	log     *zap.Logger
	metrics *metrics
	// outsMu guards outs: Apply swaps it while Snapshot and WriteAll read.
	outsMu sync.RWMutex
	outs   []*outputRunner
	// loops owns the outputs' goroutines once started (update.go).
	loops *loops

	// Lifecycle (loop.go): mu guards started, closed and cancel; wg
	// holds every goroutine Start began; running is set between Start
	// and Close (WriteAll leaves timers armed for the loops then).
	mu              sync.Mutex
	started, closed bool
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	running         atomic.Bool
	// held: reloads wait for ReleaseReloads (see HoldReloads).
	held atomic.Bool

	guardMu sync.Mutex
	guard   *guard
}

// NewManager validates the outputs and builds a Manager. It creates missing
// output directories (atomicdir.NewWriter does) but starts no goroutine,
// writes no file and does not talk to the Workload API until Start or
// WriteAll. Close it when done.
func NewManager(src Source, outputs []Output, opts ...Option) (*Manager, error) {
	if src == nil {
		return nil, errors.New("rotation: source is nil")
	}
	cfg := config{
		log:           zap.NewNop(),
		debounce:      DefaultDebounce,
		retryMin:      DefaultRetryMin,
		retryMax:      DefaultRetryMax,
		expiryWindow:  DefaultExpiryWindow,
		guard:         true,
		stepSlack:     time.Minute,
		minJWTRefresh: minJWTRefresh,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.retryMax < cfg.retryMin {
		cfg.retryMax = cfg.retryMin
	}
	m := &Manager{src: src, cfg: cfg, log: cfg.log}
	outs, err := m.newRunners(outputs, nil)
	if err != nil {
		return nil, err
	}
	m.outs = outs
	met, err := newMetrics(cfg.reg)
	if err != nil {
		return nil, fmt.Errorf("rotation: %w", err)
	}
	m.metrics = met
	return m, nil
}

// WriteAll makes one pass over every output: build, validate, write and,
// where the files changed, reload. It is what `identity-agent fetch` runs;
// waiting for the Source to be ready is the caller's job. The error joins
// one error per failed output, each naming the output and the cause.
//
// JWT bundles arrive on their own stream, usually just after the X.509
// context: when an output needs them, WriteAll waits for them until ctx
// is done.
func (m *Manager) WriteAll(ctx context.Context) error {
	var errs []error
	for _, r := range m.runners() {
		if r.out.JWTBundleFile != "" {
			m.waitJWTBundles(ctx)
		}
		if err := r.sync(ctx, "write-all"); err != nil {
			errs = append(errs, fmt.Errorf("output %q: %w", r.out.Name, err))
		}
	}
	if !m.running.Load() {
		// Nobody will serve the JWT refresh or watchdog timers.
		for _, r := range m.runners() {
			r.stopTimers()
		}
	}
	return errors.Join(errs...)
}

// HoldReloads makes the outputs write their files but hold every reload
// until ReleaseReloads. An agent under a service manager calls it before
// Start and WriteAll, and releases once it has reported ready: a reload
// such as `systemctl restart api.service`, for a unit ordered after the
// agent, waits for the agent's own start to finish, so running it before
// READY=1 deadlocks the start (and the boot).
func (m *Manager) HoldReloads() {
	m.held.Store(true)
	for _, r := range m.runners() {
		r.syncMu.Lock()
		r.atStart = true
		r.syncMu.Unlock()
	}
}

// ReleaseReloads ends HoldReloads: each output's loop runs the reloads it
// held, in the background (ReleaseReloads does not wait for them). Those
// first reloads leave alone a service that is not running (StartReloader):
// it reads the new files when it starts. Without Start, the next WriteAll
// runs them.
func (m *Manager) ReleaseReloads() {
	if !m.held.Swap(false) {
		return
	}
	for _, r := range m.runners() {
		r.poke(r.releaseCh)
	}
}

// Stalled names the outputs whose loop has been in one pass longer than
// that pass's own deadlines allow (each reload's timeout, the verify
// timeout, the JWT fetches, plus a minute): such a loop is wedged and will
// not rotate again. A service manager's watchdog asks this; a slow but
// bounded reload is not a stall.
func (m *Manager) Stalled() []string {
	now := time.Now().UnixNano()
	var names []string
	for _, r := range m.runners() {
		if until := r.busyUntil.Load(); until != 0 && now > until {
			names = append(names, r.out.Name)
		}
	}
	return names
}

// waitJWTBundles returns once the Source has JWT bundles or ctx is done;
// the write that follows reports the latter.
func (m *Manager) waitJWTBundles(ctx context.Context) {
	updates, cancel := m.src.Subscribe()
	defer cancel()
	for {
		if set := m.src.JWTBundles(); set != nil && set.Len() > 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-updates:
		}
	}
}

// Snapshot returns the current state of the Source and every output.
func (m *Manager) Snapshot() State {
	now := time.Now()
	st := m.src.Status()
	s := State{
		WorkloadAPI: st,
		ExpiryRule:  expiryRule(m.cfg.expiryWindow),
		Outputs:     make([]OutputState, 0, 4),
		SVIDs:       []SVIDState{},
	}
	for _, r := range m.runners() {
		s.Outputs = append(s.Outputs, r.snapshot(now))
	}
	if x := m.src.X509Context(); x != nil {
		for _, sv := range x.SVIDs {
			if sv == nil || len(sv.Certificates) == 0 {
				continue
			}
			leaf := sv.Certificates[0]
			s.SVIDs = append(s.SVIDs, SVIDState{
				SpiffeID:  sv.ID.String(),
				Hint:      sv.Hint,
				Serial:    serialString(leaf.SerialNumber),
				NotBefore: leaf.NotBefore,
				NotAfter:  leaf.NotAfter,
				Expiry:    ExpiryOf(leaf.NotBefore, leaf.NotAfter, m.cfg.expiryWindow, now),
			})
		}
	}
	return s
}

func (m *Manager) setGuard(g *guard) {
	m.guardMu.Lock()
	m.guard = g
	m.guardMu.Unlock()
}

func (m *Manager) currentGuard() *guard {
	m.guardMu.Lock()
	defer m.guardMu.Unlock()
	return m.guard
}

// backoff returns the delay before retry number n (n >= 1).
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.retryMin
	for i := 1; i < n && d < m.cfg.retryMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.retryMax)
}
