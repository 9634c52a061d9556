package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// ReloadResult is the outcome of one configuration reload.
type ReloadResult struct {
	// Hash is the SHA-256 of the file that was read.
	Hash string
	// Changes names what was applied, one entry per output or proxy
	// ("output redis: changed", "proxy ollama: added"); empty when the new
	// file means the same as the running one.
	Changes []string
	// Err is why nothing was applied (the file's problems, or a setting
	// that cannot change while the agent runs); nil when applied.
	Err error
}

type reloadRequest struct {
	path string
	done chan ReloadResult
}

// Reload reads the file at path, checks it exactly as `config validate`
// and `run` do, and applies the difference to the running agent: outputs
// and proxies added, changed or removed, the log level. It is all or
// nothing: an invalid file, or one that changes a setting only a restart
// can apply, changes nothing and the running configuration carries on.
// Reload waits until Run has started everything (it is queued until then)
// and returns once the change is applied or refused; once Run is stopping
// or has returned, it refuses at once.
func (a *Agent) Reload(ctx context.Context, path string) ReloadResult {
	req := reloadRequest{path: path, done: make(chan ReloadResult, 1)}
	select {
	case a.reloadCh <- req:
	case <-a.stopped:
		return ReloadResult{Err: fmt.Errorf("reload %s: %w", path, errStopped)}
	case <-ctx.Done():
		return ReloadResult{Err: fmt.Errorf("reload %s: %w", path, ctx.Err())}
	}
	select {
	case res := <-req.done:
		return res
	case <-ctx.Done():
		return ReloadResult{Err: fmt.Errorf("reload %s: %w", path, ctx.Err())}
	}
}

// reload runs in Run's goroutine, so it never races a shutdown or another
// reload.
func (a *Agent) reload(ctx context.Context, path string) ReloadResult {
	a.log.Info("reloading configuration", zap.String("config", path))
	// The same check as `config validate` and `run`: a file run would
	// refuse is refused here, with the same lines.
	// Read only once the file holds still: an editor rewriting it in
	// place passes through shorter files that may well be valid.
	plan, err := load(ctx, path, os.Getenv, Self())
	if err != nil {
		return a.recordReload(ReloadResult{Err: err})
	}
	if plan.Warnings != nil {
		for _, w := range splitProblems(plan.Warnings) {
			a.log.Warn("configuration: " + w.Error())
		}
	}
	res := ReloadResult{Hash: plan.Hash}
	res.Changes, res.Err = a.apply(ctx, plan.Config)
	return a.recordReload(res)
}

// recordReload keeps the outcome for status and logs it: one line per
// problem, so each FILE:LINE stands on its own in the journal.
func (a *Agent) recordReload(res ReloadResult) ReloadResult {
	now := time.Now()
	a.mu.Lock()
	st := &a.configState
	st.Reloads++
	last := &admin.ConfigReload{At: now, Hash: res.Hash, Changes: res.Changes}
	if res.Err != nil {
		last.Error = res.Err.Error()
		st.LastFailedReload = last
	} else {
		st.Hash, st.AppliedAt = res.Hash, now
	}
	st.LastReload = last
	a.mu.Unlock()
	if res.Err != nil {
		for _, e := range splitProblems(res.Err) {
			a.log.Error("config reload failed; the running configuration is unchanged", zap.Error(e))
		}
		return res
	}
	if len(res.Changes) == 0 {
		a.log.Info("config reloaded: nothing changed", zap.String("hash", res.Hash))
	} else {
		a.log.Info("config reloaded", zap.String("hash", res.Hash), zap.Strings("changes", res.Changes))
	}
	return res
}

// registerReloadMetrics exports the reload state status shows, so an
// alert can catch a refused reload (the agent then runs a configuration
// that is no longer the file on disk).
func (a *Agent) registerReloadMetrics() {
	state := func() admin.ConfigState {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.configState
	}
	a.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_agent_config_reload_failed",
			Help: "1 while the last configuration reload was refused (the agent runs an older configuration than its file), 0 otherwise.",
		}, func() float64 {
			if last := state().LastReload; last != nil && last.Error != "" {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "identity_agent_config_reloads_total",
			Help: "Configuration reload attempts (SIGHUP), applied or refused.",
		}, func() float64 { return float64(state().Reloads) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "identity_agent_config_applied_timestamp_seconds",
			Help: "When the configuration in force was applied (start or last successful reload), Unix seconds.",
		}, func() float64 {
			if at := state().AppliedAt; !at.IsZero() {
				return float64(at.UnixNano()) / 1e9
			}
			return 0
		}),
	)
}

// splitProblems returns the errors joined in err (config.Problems, or
// errors.Join), or err itself.
func splitProblems(err error) []error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		if errs := u.Unwrap(); len(errs) > 0 {
			return errs
		}
	}
	return []error{err}
}

// restartOnly are the settings a running agent cannot change: a new
// Workload API or admin socket means new connections for every part, and
// the rotation tunables are read by every output's loop.
func restartOnly(cur, next *config.Config) []error {
	var names []string
	names = append(names, changedFields("workload_api", cur.WorkloadAPI, next.WorkloadAPI)...)
	names = append(names, changedFields("admin", cur.Admin, next.Admin)...)
	if cur.Log.Format != next.Log.Format {
		names = append(names, "log.format")
	}
	names = append(names, changedFields("rotation", cur.Rotation, next.Rotation)...)
	if !reflect.DeepEqual(cur.Redis, next.Redis) {
		names = append(names, "redis")
	}
	errs := make([]error, 0, len(names))
	for _, n := range names {
		errs = append(errs, next.At(n, errors.New("cannot change while the agent runs; restart it to apply (systemctl restart identity-agent)")))
	}
	return errs
}

// changedFields names, by their YAML keys under prefix, the fields of two
// values of one struct type that differ; the line a refusal points at is
// then the line of the setting the operator edited.
func changedFields(prefix string, a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := range va.NumField() {
		if reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			continue
		}
		name, _, _ := strings.Cut(va.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			name = prefix
		} else {
			name = prefix + "." + name
		}
		out = append(out, name)
	}
	return out
}

// apply changes the running agent from a.cfg to next, or nothing.
func (a *Agent) apply(ctx context.Context, next *config.Config) ([]string, error) {
	cur := a.currentConfig()
	if err := config.Join(restartOnly(cur, next)...); err != nil {
		return nil, err
	}
	var changes []string

	// Outputs: by name; a changed one is replaced (its new runner writes
	// only when its files differ from those on disk).
	curOut := map[string]config.Output{}
	for _, o := range cur.Outputs {
		curOut[o.Name] = o
	}
	var change rotation.Change
	addCfg := *next
	addCfg.Outputs = nil
	seen := map[string]bool{}
	for _, o := range next.Outputs {
		seen[o.Name] = true
		old, ok := curOut[o.Name]
		switch {
		case !ok:
			changes = append(changes, "output "+o.Name+": added")
		case reflect.DeepEqual(old, o):
			continue
		default:
			change.Remove = append(change.Remove, o.Name)
			changes = append(changes, "output "+o.Name+": changed")
		}
		addCfg.Outputs = append(addCfg.Outputs, o)
	}
	for _, o := range cur.Outputs {
		if !seen[o.Name] {
			change.Remove = append(change.Remove, o.Name)
			changes = append(changes, "output "+o.Name+": removed")
		}
	}
	if len(addCfg.Outputs) > 0 {
		outs, err := Outputs(&addCfg, a.reloadEnv())
		if err != nil {
			return nil, err
		}
		change.Add = outs
	}

	// Proxies: started (bound) before anything else changes, so a port in
	// use refuses the whole reload with nothing touched.
	pc, err := a.planProxies(cur, next)
	if err != nil {
		return nil, err
	}
	for _, p := range pc.start {
		if err := p.Start(ctx); err != nil {
			a.closeAll(pc.built())
			return nil, next.At(pc.field[p], fmt.Errorf("listen: %w", err))
		}
	}
	if err := a.manager.Apply(ctx, change); err != nil {
		a.closeAll(pc.built())
		return nil, outputProblem(next, err)
	}
	for _, u := range pc.update {
		// Checked by planProxies; a failure now would be a bug, and the
		// proxy keeps its previous settings.
		if err := u.proxy.Update(u.cfg); err != nil {
			a.log.Error("proxy update refused", zap.String("proxy", u.proxy.Name()), zap.Error(err))
		}
	}
	// The proxies kept share the descriptors again with those added and
	// without those removed (pc.running is in next.Proxies' order).
	shares := a.fd.shares(next.Proxies)
	for i, p := range pc.running {
		p.SetFDBudget(shareOf(shares, i))
	}
	a.mu.Lock()
	for _, d := range pc.drain {
		if pm := a.proxyMetrics[d.proxy]; pm != nil {
			pm.release()
			delete(a.proxyMetrics, d.proxy)
		}
	}
	for p, pm := range pc.metrics {
		if err := pm.commit(); err != nil {
			a.log.Error("proxy metrics", zap.String("proxy", p.Name()), zap.Error(err))
		}
		a.proxyMetrics[p] = pm
	}
	a.proxies = pc.running
	a.cfg = next
	a.mu.Unlock()
	for _, d := range pc.drain {
		a.drainInBackground(d)
	}
	for _, h := range pc.handover {
		if err := a.takeOver(ctx, h); err != nil {
			a.log.Error("proxy restart on its own address failed; it is not listening", zap.String("proxy", h.next.Name()), zap.Error(err))
		}
	}
	if a.opts.LogLevel != nil && cur.Log.Level != next.Log.Level {
		if lvl, err := zapcore.ParseLevel(next.Log.Level); err == nil {
			a.opts.LogLevel.SetLevel(lvl)
			changes = append(changes, "log.level: "+next.Log.Level)
		}
	}
	return append(changes, pc.changes...), nil
}

// draining is a proxy on its way out, with the drain timeout it was
// configured with.
type draining struct {
	proxy   *tlsproxy.Proxy
	timeout time.Duration
}

// handover is a proxy restarted on the address its predecessor holds: the
// new one can only listen once the old one has stopped accepting.
type handover struct {
	prev, next *tlsproxy.Proxy
}

// outputProblem points an error of rotation's at the output's line in
// next (and its field, when rotation names one).
func outputProblem(next *config.Config, err error) error {
	var oe *rotation.OutputError
	if errors.As(err, &oe) {
		for i, o := range next.Outputs {
			if o.Name != oe.Output {
				continue
			}
			field := fmt.Sprintf("outputs[%d]", i)
			if oe.Field != "" {
				field += "." + oe.Field
			}
			return next.At(field, oe.Err)
		}
	}
	return fmt.Errorf("%s: outputs: %w", next.Path, err)
}

type proxyUpdate struct {
	proxy *tlsproxy.Proxy
	cfg   tlsproxy.Config
}

// proxyChange is what apply does to the proxies: start the new ones,
// update those that keep their listener, drain the ones going away, and
// the list that runs afterwards.
type proxyChange struct {
	start    []*tlsproxy.Proxy
	handover []handover
	drain    []draining
	update   []proxyUpdate
	running  []*tlsproxy.Proxy
	field    map[*tlsproxy.Proxy]string
	metrics  map[*tlsproxy.Proxy]*proxyMetrics
	changes  []string
}

// planProxies builds (without starting) every proxy the change needs. A
// proxy that keeps its name, mode, listen address, HTTP mode and SVID is
// updated in place: new handshakes use the new allow list, limits and
// target, and established connections whose peer the new allow list
// refuses are closed (tlsproxy.Proxy.Update). Any other change
// is a new proxy on the new address and a drain of the old one.
func (a *Agent) planProxies(cur, next *config.Config) (proxyChange, error) {
	pc := proxyChange{field: map[*tlsproxy.Proxy]string{}, metrics: map[*tlsproxy.Proxy]*proxyMetrics{}}
	running := map[string]*tlsproxy.Proxy{}
	for _, p := range a.currentProxies() {
		running[p.Name()] = p
	}
	curCfg := map[string]config.Proxy{}
	for _, p := range cur.Proxies {
		curCfg[p.Name] = p
	}
	// leaving holds, by listen address, the running proxies this change
	// replaces or removes: a new proxy on one of those addresses takes it
	// over as the old one drains (a restart on the same address, a
	// rename), since binding it beside the old one would fail.
	nextCfg := map[string]config.Proxy{}
	for _, np := range next.Proxies {
		nextCfg[np.Name] = np
	}
	leaving := map[string]*tlsproxy.Proxy{}
	for _, op := range cur.Proxies {
		np, stays := nextCfg[op.Name]
		if !stays || (!reflect.DeepEqual(op, np) && !inPlace(op, np)) {
			leaving[op.Listen] = running[op.Name]
		}
	}
	seen := map[string]bool{}
	var errs []error
	shares := a.fd.shares(next.Proxies)
	for i, np := range next.Proxies {
		seen[np.Name] = true
		op, had := curCfg[np.Name]
		p := running[np.Name]
		switch {
		case had && reflect.DeepEqual(op, np):
			pc.running = append(pc.running, p)
			continue
		case had && inPlace(op, np):
			tc := ProxyConfig(np)
			if err := tc.Validate(); err != nil {
				errs = append(errs, next.At(fmt.Sprintf("proxies[%d]", i), err))
				continue
			}
			pc.update = append(pc.update, proxyUpdate{proxy: p, cfg: tc})
			pc.running = append(pc.running, p)
			pc.changes = append(pc.changes, "proxy "+np.Name+": updated in place")
			continue
		}
		q, pm, err := a.newProxy(np, shareOf(shares, i))
		if err != nil {
			errs = append(errs, next.At(fmt.Sprintf("proxies[%d]", i), err))
			continue
		}
		pc.metrics[q] = pm
		pc.field[q] = fmt.Sprintf("proxies[%d].listen", i)
		pc.running = append(pc.running, q)
		if prev := leaving[np.Listen]; prev != nil {
			pc.handover = append(pc.handover, handover{prev: prev, next: q})
		} else {
			pc.start = append(pc.start, q)
		}
		if had {
			pc.drain = append(pc.drain, draining{p, op.DrainTimeout.D(tlsproxy.DefaultDrainTimeout)})
			pc.changes = append(pc.changes, "proxy "+np.Name+": restarted on "+np.Listen)
		} else {
			pc.changes = append(pc.changes, "proxy "+np.Name+": added")
		}
	}
	for _, op := range cur.Proxies {
		if !seen[op.Name] {
			pc.drain = append(pc.drain, draining{running[op.Name], op.DrainTimeout.D(tlsproxy.DefaultDrainTimeout)})
			pc.changes = append(pc.changes, "proxy "+op.Name+": removed (draining)")
		}
	}
	if err := config.Join(errs...); err != nil {
		return proxyChange{}, err
	}
	return pc, nil
}

// inPlace reports whether the change from a to b is one tlsproxy.Update
// can make: everything may change but the proxy's identity, mode, address
// and HTTP mode.
func inPlace(a, b config.Proxy) bool {
	return a.Mode == b.Mode && a.Listen == b.Listen && a.HTTP == b.HTTP &&
		a.SpiffeID == b.SpiffeID && a.Hint == b.Hint
}

// newProxy builds (does not start) the proxy pc describes.
// Its metrics are deferred: they appear when the reload commits, after
// those of the proxy it replaces are gone.
func (a *Agent) newProxy(pc config.Proxy, fdShare int) (*tlsproxy.Proxy, *proxyMetrics, error) {
	pm := newProxyMetrics(a.registry, true)
	p, err := NewProxy(pc, a.source, tlsproxy.WithLogger(a.log.Named("proxy")), tlsproxy.WithRegisterer(pm),
		tlsproxy.WithFDBudget(fdShare))
	return p, pm, err
}

// takeOver starts h.next once h.prev (already draining in the background)
// has closed its listener. The address is unserved only between the two,
// for that proxy alone; established connections drain on the old one.
func (a *Agent) takeOver(ctx context.Context, h handover) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := h.prev.Stats()
		if st.Draining || !st.Running {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("proxy %s: the previous proxy did not stop accepting", h.prev.Name())
		}
		time.Sleep(time.Millisecond)
	}
	for {
		err := h.next.Start(ctx)
		if err == nil {
			return nil
		}
		// Only a stranger binding the port in between fails here; give
		// it the time a closing socket can take.
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// built are the proxies the change made: those it started and
// those still waiting for a handover.
func (pc proxyChange) built() []*tlsproxy.Proxy {
	ps := slices.Clone(pc.start)
	for _, h := range pc.handover {
		ps = append(ps, h.next)
	}
	return ps
}

func (a *Agent) closeAll(ps []*tlsproxy.Proxy) {
	for _, p := range ps {
		_ = p.Close()
	}
}

// drainInBackground shuts p down under its own drain timeout while the
// agent carries on; shutdown waits for it.
func (a *Agent) drainInBackground(d draining) {
	a.drains.Go(func() {
		// Under the agent's shutdown deadline too (drainsCtx): a removed
		// proxy's long drain_timeout must not hold up a stop.
		ctx, cancel := context.WithTimeout(a.drainsCtx, d.timeout)
		defer cancel()
		if err := d.proxy.Shutdown(ctx); err != nil {
			a.log.Warn("proxy drain after reload", zap.String("proxy", d.proxy.Name()), zap.Error(err))
		}
	})
}

func (a *Agent) currentConfig() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func (a *Agent) currentProxies() []*tlsproxy.Proxy {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.proxies)
}
