package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/internal/redistransition"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// Options are the parts of a run that do not come from the config file.
type Options struct {
	Logger  *zap.Logger
	Version string
	// OnReady is called once the first SVIDs are written and the proxies
	// listen (systemd's READY=1).
	OnReady func()
	// OnStopping is called when shutdown begins.
	OnStopping func()
	// LogLevel, when set, is the level Logger filters at; a reload that
	// changes log.level sets it.
	LogLevel *zap.AtomicLevel
	// ConfigHash is the SHA-256 of the file cfg was read from (Plan.Hash),
	// shown by status.
	ConfigHash string
	// ConfigPath, when set, is the config file as status reports it
	// (default cfg.Path); run passes it absolute, so that clients can tell
	// whether the agent runs the file they were given.
	ConfigPath string
}

// Agent is one configured agent.
type Agent struct {
	opts     Options
	log      *zap.Logger
	registry *prometheus.Registry
	source   *svid.Source
	manager  *rotation.Manager
	started  time.Time

	// mu guards what a reload swaps while Report reads it.
	mu          sync.Mutex
	cfg         *config.Config
	proxies     []*tlsproxy.Proxy
	configState admin.ConfigState
	// proxyMetrics is each proxy's Registerer (proxymetrics.go).
	proxyMetrics map[*tlsproxy.Proxy]*proxyMetrics
	// reloadCh hands Reload's requests to Run; drains are proxies a
	// reload removed, draining in the background.
	reloadCh chan reloadRequest
	drains   sync.WaitGroup
	// drainsCtx ends the background drains at shutdown's deadline.
	drainsCtx  context.Context
	stopDrains context.CancelFunc
	// stopped is closed once Run no longer serves reloads, so Reload
	// refuses at once instead of waiting for a loop that is gone.
	stopped  chan struct{}
	stopOnce sync.Once

	// sampler watches the Redis plaintext port during a transition.
	sampler    *redistransition.Sampler
	redisAdmin *redistransition.Admin

	// fd splits RLIMIT_NOFILE between the reserve, the admin endpoint
	// and the proxies (fdbudget.go).
	fd fdBudget
}

// New builds every part from cfg without starting anything.
func New(cfg *config.Config, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	a := &Agent{cfg: cfg, opts: opts, log: opts.Logger, registry: prometheus.NewRegistry(),
		reloadCh: make(chan reloadRequest), stopped: make(chan struct{}), proxyMetrics: map[*tlsproxy.Proxy]*proxyMetrics{},
		configState: admin.ConfigState{Path: cmp.Or(opts.ConfigPath, cfg.Path), Hash: opts.ConfigHash}}
	a.drainsCtx, a.stopDrains = context.WithCancel(context.Background())
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	retryMax := cfg.WorkloadAPI.RetryMax.D(svid.DefaultRetryMax)
	a.source = svid.NewSource(svid.WithAddr(cfg.WorkloadAPI.Socket), svid.WithLogger(a.log.Named("workloadapi")),
		svid.WithBackoff(min(svid.DefaultRetryMin, retryMax), retryMax))
	a.registerSourceMetrics()
	a.registerReloadMetrics()

	outs, err := Outputs(cfg, a.reloadEnv())
	if err != nil {
		return nil, err
	}
	a.manager, err = rotation.NewManager(a.source, outs,
		rotation.WithLogger(a.log.Named("rotation")),
		rotation.WithRegisterer(a.registry),
		// config.Load filled the defaults (the packages' constants).
		rotation.WithDebounce(time.Duration(cfg.Rotation.Debounce)),
		rotation.WithRetryBackoff(time.Duration(cfg.Rotation.RetryMin), time.Duration(cfg.Rotation.RetryMax)),
		rotation.WithExpiryWindow(time.Duration(cfg.Rotation.ExpiryWindow)),
		rotation.WithGuard(cfg.Rotation.Guard == nil || *cfg.Rotation.Guard),
	)
	if err != nil {
		return nil, fmt.Errorf("%s: outputs: %w", cfg.Path, err)
	}
	a.fd = newFDBudget(cfg)
	shares := a.fd.shares(cfg.Proxies)
	for i, pc := range cfg.Proxies {
		pm := newProxyMetrics(a.registry, false)
		p, err := NewProxy(pc, a.source,
			tlsproxy.WithLogger(a.log.Named("proxy")),
			tlsproxy.WithRegisterer(pm), tlsproxy.WithFDBudget(shareOf(shares, i)))
		if err != nil {
			return nil, fmt.Errorf("%s: proxies[%d]: %w", cfg.Path, i, err)
		}
		a.proxies = append(a.proxies, p)
		a.proxyMetrics[p] = pm
	}
	if cfg.Redis != nil && cfg.Redis.Transition != nil {
		t := cfg.Redis.Transition
		ropts := []redistransition.Option{redistransition.WithLogger(a.log.Named("redis")), redistransition.WithRegisterer(a.registry)}
		tr, adm, err := RedisTransition(cfg, a.source, ropts...)
		if err != nil {
			return nil, err
		}
		a.redisAdmin = adm
		a.sampler, err = redistransition.NewSampler(adm, redistransition.SamplerConfig{
			StateFile: t.StateFile, Interval: time.Duration(t.SampleInterval), MaxGap: time.Duration(t.MaxSampleGap),
			PlainPort: t.PlainPort, TLSPort: t.TLSPort, Transition: tr,
		}, ropts...)
		if err != nil {
			_ = adm.Close()
			return nil, fmt.Errorf("%s: redis.transition: %w", cfg.Path, err)
		}
	}
	return a, nil
}

// reloadEnv is what the reloaders are built with (config.ReloadEnv).
func (a *Agent) reloadEnv() config.ReloadEnv {
	return config.ReloadEnv{Source: a.source, Logger: a.log, Registerer: a.registry}
}

// Stalled names the outputs whose rotation loop is wedged (see
// rotation.Manager.Stalled); the systemd watchdog stops on them.
func (a *Agent) Stalled() []string { return a.manager.Stalled() }

// Registry is the agent's private metrics registry; other parts (the redis
// sampler) register on it too.
func (a *Agent) Registry() *prometheus.Registry { return a.registry }

// Source is the agent's Workload API source.
func (a *Agent) Source() *svid.Source { return a.source }

func (a *Agent) registerSourceMetrics() {
	src := a.source
	a.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_agent_workload_api_connected",
			Help: "1 while the Workload API stream is delivering, 0 otherwise.",
		}, func() float64 {
			if src.Status().Connected {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "identity_agent_workload_api_reconnects_total",
			Help: "Times the Workload API stream recovered after failing.",
		}, func() float64 { return float64(src.Status().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "identity_agent_workload_api_x509_updates_total",
			Help: "X.509 context updates pushed by the Workload API.",
		}, func() float64 { return float64(src.Status().X509Updates) }),
	)
}

// Run serves until ctx is done: admin endpoint first (so `status` can tell
// "waiting for the Workload API" from "agent down"), then the source, the
// first write, the proxies, and the rotation loop. Every way out goes
// through the same shutdown: proxies drain under one deadline, then the
// rotation loop and the Redis sampler stop and are waited for.
func (a *Agent) Run(parent context.Context) (err error) {
	defer a.refuseReloads()
	a.started = time.Now()
	a.mu.Lock()
	a.configState.AppliedAt = a.started
	a.mu.Unlock()
	a.fd.log(a.log, a.cfg.Proxies)
	// A taken address stops the agent before it has done anything else:
	// no admin socket, no files written, no reloads run.
	if err := a.listenProxies(parent); err != nil {
		a.closeRedisAdmin()
		return err
	}
	// Until shutdown owns them, a way out closes the listeners opened.
	proxiesOwned := false
	defer func() {
		if !proxiesOwned {
			for _, p := range a.proxies {
				_ = p.Close()
			}
		}
	}()
	adm := admin.NewServer(a.cfg.Admin.Socket, a.Report, admin.WithMetricsListen(a.cfg.Admin.MetricsListen),
		admin.WithGatherer(a.registry), admin.WithLogger(a.log.Named("admin")))
	if err := adm.Start(parent); err != nil {
		a.closeRedisAdmin()
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := adm.Shutdown(sctx); err != nil {
			a.log.Warn("admin shutdown", zap.Error(err))
		}
	}()

	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if err := a.source.Start(ctx); err != nil {
		a.closeRedisAdmin()
		return fmt.Errorf("workload API %s: %w", a.cfg.WorkloadAPI.Socket, err)
	}
	defer func() { _ = a.source.Close() }()

	var workers sync.WaitGroup
	// The first write's reloads wait for READY=1 (released below): a
	// `systemctl restart api.service` whose unit is ordered After= the
	// agent waits for the agent's start job, which waits for READY=1.
	a.manager.HoldReloads()
	if err := a.manager.Start(ctx); err != nil {
		a.closeRedisAdmin()
		return fmt.Errorf("rotation: %w", err)
	}
	proxiesOwned = true
	defer func() {
		err = errors.Join(err, a.shutdown(cancel, &workers))
	}()

	a.log.Info("waiting for the first SVIDs", zap.String("workload_api", a.cfg.WorkloadAPI.Socket))
	if err := a.source.WaitReady(ctx); err != nil {
		return nil // stopped before the first SVID
	}
	a.warnUnknownAllowTrustDomains()
	// One synchronous pass so READY means "files are on disk"; the rotation
	// loop finds them identical and does not write again. Their reloads
	// run once READY=1 is out.
	if err := a.manager.WriteAll(ctx); err != nil {
		a.log.Warn("first write incomplete; retrying in the background", zap.Error(err))
	}
	for _, p := range a.proxies {
		if err := p.Start(ctx); err != nil {
			return fmt.Errorf("proxy %s: %w", p.Name(), err)
		}
	}
	if a.sampler != nil {
		workers.Go(func() {
			if err := a.sampler.Run(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("redis transition sampler stopped", zap.Error(err))
			}
		})
	}
	a.log.Info("agent ready", zap.Int("outputs", len(a.cfg.Outputs)), zap.Int("proxies", len(a.proxies)))
	if a.opts.OnReady != nil {
		a.opts.OnReady()
	}
	// In the outputs' loops, not here: a slow restart must not hold up
	// config reloads; a unit that is not active is left alone.
	a.manager.ReleaseReloads()
	for {
		select {
		case <-ctx.Done():
			a.refuseReloads()
			return nil
		case req := <-a.reloadCh:
			if ctx.Err() != nil {
				// Both were ready and select picked the reload: shutdown
				// wins, nothing is half applied on the way out.
				a.refuseReloads()
				req.done <- ReloadResult{Err: fmt.Errorf("reload %s: %w", req.path, errStopped)}
				return nil
			}
			req.done <- a.reload(ctx, req.path)
		}
	}
}

var errStopped = errors.New("agent stopped")

// warnUnknownAllowTrustDomains logs each proxy allow entry whose trust
// domain is neither ours nor federated, once the bundles are known: no
// peer of it can ever connect, and `spiffe://exmaple.org/x` would
// otherwise pass silently. `status` reports the same (Report).
func (a *Agent) warnUnknownAllowTrustDomains() {
	for _, u := range unknownAllowTrustDomains(a.cfg, a.source.X509Context()) {
		a.log.Warn("proxy allow entry names a trust domain the agent has no bundle for: no peer of it can connect (a typo, or a federation not set up?)",
			zap.String("proxy", u.Proxy), zap.String("allow", u.Allow), zap.String("trust_domain", u.TrustDomain), zap.Strings("bundles", u.Bundles))
	}
}

// unknownAllowTrustDomains lists the allow entries of cfg's proxies whose
// trust domain has no bundle in x; nil before the first X.509 context.
func unknownAllowTrustDomains(cfg *config.Config, x *workloadapi.X509Context) []admin.UnknownTrustDomain {
	if cfg == nil || x == nil || x.Bundles == nil {
		return nil
	}
	var known []string
	for _, b := range x.Bundles.Bundles() {
		known = append(known, b.TrustDomain().String())
	}
	var out []admin.UnknownTrustDomain
	for _, pc := range cfg.Proxies {
		for _, e := range pc.Allow {
			td, err := spiffeid.TrustDomainFromString(config.TrustDomainOf(e))
			if err != nil || x.Bundles.Has(td) {
				continue
			}
			out = append(out, admin.UnknownTrustDomain{Proxy: pc.Name, Allow: e, TrustDomain: td.String(), Bundles: known})
		}
	}
	return out
}

// listenProxies opens every proxy's listener (served once the first SVIDs
// are there); a failure names the file's line of that proxy's listen and
// closes the listeners already opened.
func (a *Agent) listenProxies(ctx context.Context) error {
	for i, p := range a.proxies {
		if err := p.Listen(ctx); err != nil {
			for _, q := range a.proxies[:i] {
				_ = q.Close()
			}
			return a.cfg.At(fmt.Sprintf("proxies[%d].listen", i), fmt.Errorf("%q: %w", a.cfg.Proxies[i].Listen, err))
		}
	}
	return nil
}

// refuseReloads makes every Reload from now on return errStopped.
func (a *Agent) refuseReloads() { a.stopOnce.Do(func() { close(a.stopped) }) }

// shutdown drains the proxies, then stops and waits for the background
// work. The proxies share one drain deadline, so several of them take no
// longer than the longest drain_timeout.
func (a *Agent) shutdown(cancel context.CancelFunc, workers *sync.WaitGroup) error {
	if a.opts.OnStopping != nil {
		a.opts.OnStopping()
	}
	a.log.Info("shutting down")
	var errs []error
	dctx, dcancel := context.WithTimeout(context.Background(), a.drainTimeout())
	defer dcancel()
	for _, p := range a.currentProxies() {
		if err := p.Shutdown(dctx); err != nil {
			errs = append(errs, fmt.Errorf("proxy %s: %w", p.Name(), err))
		}
	}
	// Proxies a reload removed drain under the same deadline.
	stop := context.AfterFunc(dctx, a.stopDrains)
	defer stop()
	a.drains.Wait()
	a.stopDrains()
	cancel()
	if err := a.manager.Close(); err != nil {
		errs = append(errs, fmt.Errorf("rotation: %w", err))
	}
	workers.Wait()
	a.closeRedisAdmin()
	return errors.Join(errs...)
}

func (a *Agent) closeRedisAdmin() {
	if a.redisAdmin != nil {
		_ = a.redisAdmin.Close()
	}
}

func (a *Agent) drainTimeout() time.Duration {
	d := tlsproxy.DefaultDrainTimeout
	for _, p := range a.currentConfig().Proxies {
		if p.DrainTimeout.D(0) > d {
			d = p.DrainTimeout.D(0)
		}
	}
	return d
}

// Fetch writes every output once and returns; for init containers and scripts.
func (a *Agent) Fetch(ctx context.Context) error {
	if err := a.source.Start(ctx); err != nil {
		return fmt.Errorf("workload API %s: %w", a.cfg.WorkloadAPI.Socket, err)
	}
	defer func() { _ = a.source.Close() }()
	if err := a.source.WaitReady(ctx); err != nil {
		st := a.source.Status()
		msg := "no X.509-SVID from the Workload API at " + a.cfg.WorkloadAPI.Socket
		if st.LastError != "" {
			msg += ": " + st.LastError
		}
		return errors.New(msg)
	}
	defer func() { _ = a.manager.Close() }()
	return a.manager.WriteAll(ctx)
}

// Report is the admin endpoint's status document: the parts' typed
// state, as they report it.
func (a *Agent) Report() admin.Report {
	r := admin.Report{
		Version:   a.opts.Version,
		PID:       os.Getpid(),
		Now:       time.Now(),
		StartedAt: a.started,
		Ready:     a.source.X509Context() != nil,
		State:     a.manager.Snapshot(),
	}
	r.UnknownAllowTrustDomains = unknownAllowTrustDomains(a.currentConfig(), a.source.X509Context())
	a.mu.Lock()
	r.Config = a.configState
	proxies := slices.Clone(a.proxies)
	a.mu.Unlock()
	for _, p := range proxies {
		r.Proxies = append(r.Proxies, p.Stats())
	}
	if a.sampler != nil {
		// The sampler keeps its state in the file that `redis transition`
		// reads too; written atomically, so a plain read is consistent.
		st, err := redistransition.LoadState(a.currentConfig().Redis.Transition.StateFile)
		r.Redis = &admin.Redis{Phase: st.CurrentPhase(), Sample: st.Sample}
		if err != nil {
			r.Redis.Error = err.Error()
		}
	}
	return r
}
