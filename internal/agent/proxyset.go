package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// proxySet owns the agent's running proxies: it builds them from a plan,
// opens and serves their listeners, changes them on a reload (in place,
// or a new proxy with a handover of the address and a drain of the old
// one), drains those a reload removed, and exports their metrics through
// one collector over the proxies in force (tlsproxy.StatsCollector): a
// proxy and its replacement share a name, so the set, not each proxy,
// decides whose series are shown.
type proxySet struct {
	log    *zap.Logger
	source *svid.Source
	fd     fdBudget

	mu      sync.Mutex
	running []runningProxy // in the plan's order

	// drains are proxies a reload removed, draining in the background;
	// drainsCtx ends them at shutdown's deadline.
	drains     sync.WaitGroup
	drainsCtx  context.Context
	stopDrains context.CancelFunc
}

// runningProxy is a proxy in force with the plan it was built from.
type runningProxy struct {
	proxy *tlsproxy.Proxy
	plan  ProxyPlan
}

// newProxySet builds (does not start) plan's proxies.
func newProxySet(plan *Plan, log *zap.Logger, src *svid.Source, fd fdBudget) (*proxySet, error) {
	s := &proxySet{log: log, source: src, fd: fd}
	s.drainsCtx, s.stopDrains = context.WithCancel(context.Background())
	shares := fd.shares(plan.Proxies)
	for i, pp := range plan.Proxies {
		p, err := s.build(pp, shareOf(shares, i))
		if err != nil {
			s.stopDrains()
			return nil, fmt.Errorf("%s: proxies[%d]: %w", plan.Config.Path, i, err)
		}
		s.running = append(s.running, runningProxy{p, pp})
	}
	return s, nil
}

// build makes (does not start) one proxy. Its metrics are the set's
// collector's, not registered by the proxy.
func (s *proxySet) build(pp ProxyPlan, fdShare int) (*tlsproxy.Proxy, error) {
	return newProxy(pp, s.source, tlsproxy.WithLogger(s.log.Named("proxy")), tlsproxy.WithFDBudget(fdShare))
}

// proxies are the proxies in force.
func (s *proxySet) proxies() []*tlsproxy.Proxy {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*tlsproxy.Proxy, len(s.running))
	for i, r := range s.running {
		out[i] = r.proxy
	}
	return out
}

// stats is each proxy in force's Stats, for status and the collector.
func (s *proxySet) stats() []tlsproxy.Stats {
	ps := s.proxies()
	out := make([]tlsproxy.Stats, len(ps))
	for i, p := range ps {
		out[i] = p.Stats()
	}
	return out
}

// listen opens every proxy's listener (served by start); a failure names
// the file's line of that proxy's listen and closes those already opened.
func (s *proxySet) listen(ctx context.Context, cfg *config.Config) error {
	ps := s.proxies()
	for i, p := range ps {
		if err := p.Listen(ctx); err != nil {
			closeAll(ps[:i])
			return cfg.At(fmt.Sprintf("proxies[%d].listen", i), fmt.Errorf("%q: %w", cfg.Proxies[i].Listen, err))
		}
	}
	return nil
}

func (s *proxySet) start(ctx context.Context) error {
	for _, p := range s.proxies() {
		if err := p.Start(ctx); err != nil {
			return fmt.Errorf("proxy %s: %w", p.Name(), err)
		}
	}
	return nil
}

func (s *proxySet) closeAll() { closeAll(s.proxies()) }

func closeAll(ps []*tlsproxy.Proxy) {
	for _, p := range ps {
		_ = p.Close()
	}
}

// drainTimeout is the longest drain_timeout in force (at least the
// default): shutdown's one deadline for every proxy.
func (s *proxySet) drainTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := tlsproxy.DefaultDrainTimeout
	for _, r := range s.running {
		d = max(d, r.plan.Config.DrainTimeout)
	}
	return d
}

// shutdown drains the proxies in force under ctx, and cuts the drains of
// removed ones at ctx's deadline.
func (s *proxySet) shutdown(ctx context.Context) error {
	var errs []error
	for _, p := range s.proxies() {
		if err := p.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("proxy %s: %w", p.Name(), err))
		}
	}
	stop := context.AfterFunc(ctx, s.stopDrains)
	defer stop()
	s.drains.Wait()
	s.stopDrains()
	return errors.Join(errs...)
}

// proxyChange is what a reload does to the proxies: start the new ones
// (or hand them their predecessor's address), update those that keep
// their listener, drain the ones going away, and the list in force
// afterwards.
type proxyChange struct {
	start    []*tlsproxy.Proxy
	handover []handover
	drain    []draining
	update   []proxyUpdate
	running  []runningProxy
	field    map[*tlsproxy.Proxy]string
	changes  []string
}

// draining is a proxy on its way out, with its drain timeout.
type draining struct {
	proxy   *tlsproxy.Proxy
	timeout time.Duration
}

// handover is a proxy restarted on the address its predecessor holds: the
// new one can only listen once the old one has stopped accepting.
type handover struct {
	prev, next *tlsproxy.Proxy
}

type proxyUpdate struct {
	proxy *tlsproxy.Proxy
	cfg   tlsproxy.Config
}

// prepare builds (without starting) every proxy the change to next needs.
// A proxy that keeps its name, mode, listen address, HTTP mode and SVID is
// updated in place: new handshakes use the new allow list, limits and
// target, and established connections whose peer the new allow list
// refuses are closed (tlsproxy.Proxy.Update). Any other change is a new
// proxy on the new address and a drain of the old one.
func (s *proxySet) prepare(next *Plan) (*proxyChange, error) {
	pc := &proxyChange{field: map[*tlsproxy.Proxy]string{}}
	s.mu.Lock()
	cur := slices.Clone(s.running)
	s.mu.Unlock()
	byName := map[string]runningProxy{}
	for _, r := range cur {
		byName[r.plan.Config.Name] = r
	}
	nextByName := map[string]ProxyPlan{}
	for _, np := range next.Proxies {
		nextByName[np.Config.Name] = np
	}
	// leaving holds, by listen address, the running proxies this change
	// replaces or removes: a new proxy on one of those addresses takes it
	// over as the old one drains (a restart on the same address, a
	// rename), since binding it beside the old one would fail.
	leaving := map[string]*tlsproxy.Proxy{}
	for _, r := range cur {
		np, stays := nextByName[r.plan.Config.Name]
		if !stays || (!r.plan.equal(np) && !r.plan.inPlace(np)) {
			leaving[r.plan.Config.Listen] = r.proxy
		}
	}
	seen := map[string]bool{}
	var errs []error
	shares := s.fd.shares(next.Proxies)
	for i, np := range next.Proxies {
		name := np.Config.Name
		seen[name] = true
		old, had := byName[name]
		switch {
		case had && old.plan.equal(np):
			pc.running = append(pc.running, old)
			continue
		case had && old.plan.inPlace(np):
			pc.update = append(pc.update, proxyUpdate{proxy: old.proxy, cfg: np.Config})
			pc.running = append(pc.running, runningProxy{old.proxy, np})
			pc.changes = append(pc.changes, "proxy "+name+": updated in place")
			continue
		}
		q, err := s.build(np, shareOf(shares, i))
		if err != nil {
			errs = append(errs, next.Config.At(fmt.Sprintf("proxies[%d]", i), err))
			continue
		}
		pc.field[q] = fmt.Sprintf("proxies[%d].listen", i)
		pc.running = append(pc.running, runningProxy{q, np})
		if prev := leaving[np.Config.Listen]; prev != nil {
			pc.handover = append(pc.handover, handover{prev: prev, next: q})
		} else {
			pc.start = append(pc.start, q)
		}
		if had {
			pc.drain = append(pc.drain, draining{old.proxy, old.plan.drainTimeout()})
			pc.changes = append(pc.changes, "proxy "+name+": restarted on "+np.Config.Listen)
		} else {
			pc.changes = append(pc.changes, "proxy "+name+": added")
		}
	}
	for _, r := range cur {
		if !seen[r.plan.Config.Name] {
			pc.drain = append(pc.drain, draining{r.proxy, r.plan.drainTimeout()})
			pc.changes = append(pc.changes, "proxy "+r.plan.Config.Name+": removed (draining)")
		}
	}
	if err := config.Join(errs...); err != nil {
		closeAll(pc.built())
		return nil, err
	}
	return pc, nil
}

// bind starts the change's new proxies that need no handover: a port in
// use refuses the whole reload with nothing touched (abort closes them).
func (pc *proxyChange) bind(ctx context.Context, next *config.Config) error {
	for _, p := range pc.start {
		if err := p.Start(ctx); err != nil {
			return next.At(pc.field[p], fmt.Errorf("listen: %w", err))
		}
	}
	return nil
}

// abort closes every proxy the change made.
func (pc *proxyChange) abort() { closeAll(pc.built()) }

// built are the proxies the change made: those it started and those still
// waiting for a handover.
func (pc *proxyChange) built() []*tlsproxy.Proxy {
	ps := slices.Clone(pc.start)
	for _, h := range pc.handover {
		ps = append(ps, h.next)
	}
	return ps
}

// commit puts the change in force: updates in place, the descriptor shares
// of the new set, the list the collector and status see (the old proxies'
// series leave as the new ones arrive), the drains, then the handovers.
func (s *proxySet) commit(ctx context.Context, pc *proxyChange) {
	for _, u := range pc.update {
		// Checked by the plan; a failure now would be a bug, and the
		// proxy keeps its previous settings.
		if err := u.proxy.Update(u.cfg); err != nil {
			s.log.Error("proxy update refused", zap.String("proxy", u.proxy.Name()), zap.Error(err))
		}
	}
	plans := make([]ProxyPlan, len(pc.running))
	for i, r := range pc.running {
		plans[i] = r.plan
	}
	shares := s.fd.shares(plans)
	for i, r := range pc.running {
		r.proxy.SetFDBudget(shareOf(shares, i))
	}
	s.mu.Lock()
	s.running = pc.running
	s.mu.Unlock()
	for _, d := range pc.drain {
		s.drainInBackground(d)
	}
	for _, h := range pc.handover {
		if err := takeOver(ctx, h); err != nil {
			s.log.Error("proxy restart on its own address failed; it is not listening", zap.String("proxy", h.next.Name()), zap.Error(err))
		}
	}
}

// handoverTimeout bounds a handover: the old proxy closes its listener
// first thing in Shutdown, so only a wedged proxy or a stranger binding
// the port in between takes this long.
const handoverTimeout = 5 * time.Second

// takeOver starts h.next once h.prev (already draining in the background)
// has closed its listener. The address is unserved only between the two,
// for that proxy alone; established connections drain on the old one.
func takeOver(ctx context.Context, h handover) error {
	deadline := time.NewTimer(handoverTimeout)
	defer deadline.Stop()
	select {
	case <-h.prev.ListenerClosed():
	case <-deadline.C:
		return fmt.Errorf("proxy %s: the previous proxy did not stop accepting", h.prev.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
	retry := time.NewTicker(10 * time.Millisecond)
	defer retry.Stop()
	for {
		err := h.next.Start(ctx)
		if err == nil {
			return nil
		}
		// Only a stranger binding the port in between fails here; give
		// it the time a closing socket can take.
		select {
		case <-retry.C:
		case <-deadline.C:
			return err
		case <-ctx.Done():
			return err
		}
	}
}

// drainInBackground shuts d's proxy down under its own drain timeout while
// the agent carries on; shutdown waits for it.
func (s *proxySet) drainInBackground(d draining) {
	s.drains.Go(func() {
		// Under the agent's shutdown deadline too (drainsCtx): a removed
		// proxy's long drain_timeout must not hold up a stop.
		ctx, cancel := context.WithTimeout(s.drainsCtx, d.timeout)
		defer cancel()
		if err := d.proxy.Shutdown(ctx); err != nil {
			s.log.Warn("proxy drain after reload", zap.String("proxy", d.proxy.Name()), zap.Error(err))
		}
	})
}

// equal reports whether o runs exactly as p: same settings and the same
// policy content (tlsproxy.Config.Equal compares the authorizers by
// PolicyFingerprint: a policy's bytes as each plan loaded them).
func (p ProxyPlan) equal(o ProxyPlan) bool {
	return p.Config.Equal(o.Config) && p.Selector == o.Selector
}

// inPlace reports whether the change from p to o is one tlsproxy.Update
// can make: everything may change but the proxy's identity, mode, address
// and HTTP mode.
func (p ProxyPlan) inPlace(o ProxyPlan) bool {
	return p.Config.Mode == o.Config.Mode && p.Config.Listen == o.Config.Listen && p.Config.HTTP == o.Config.HTTP &&
		p.Selector == o.Selector
}

func (p ProxyPlan) drainTimeout() time.Duration {
	if p.Config.DrainTimeout > 0 {
		return p.Config.DrainTimeout
	}
	return tlsproxy.DefaultDrainTimeout
}
