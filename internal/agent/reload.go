package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
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

// reloadRequest is a file to load and apply (Reload) or a plan to apply
// (Apply).
type reloadRequest struct {
	path string
	plan *Plan
	done chan ReloadResult
}

func (r reloadRequest) name() string {
	if r.plan != nil {
		return r.plan.Config.Path
	}
	return r.path
}

// Reload reads the file at path, checks it exactly as `config validate`
// and `run` do, plans it with the agent's Env and Applies it: planned
// once. An invalid file changes nothing and the running configuration
// carries on. Reload waits until Run has started everything (it is
// queued until then) and returns once the change is applied or refused;
// once Run is stopping or has returned, it refuses at once.
func (a *Agent) Reload(ctx context.Context, path string) ReloadResult {
	return a.request(ctx, reloadRequest{path: path})
}

// Apply changes the running agent to plan, which must have been made with
// the agent's Env (Env): outputs and proxies added, changed or removed,
// the log level. It is all or nothing: a plan that changes a setting only
// a restart can apply, or a part that cannot start (an address in use, an
// output directory that cannot be made), changes nothing. It waits for
// Run like Reload.
func (a *Agent) Apply(ctx context.Context, plan *Plan) ReloadResult {
	return a.request(ctx, reloadRequest{plan: plan})
}

func (a *Agent) request(ctx context.Context, req reloadRequest) ReloadResult {
	req.done = make(chan ReloadResult, 1)
	select {
	case a.reloadCh <- req:
	case <-a.stopped:
		return ReloadResult{Err: fmt.Errorf("reload %s: %w", req.name(), errStopped)}
	case <-ctx.Done():
		return ReloadResult{Err: fmt.Errorf("reload %s: %w", req.name(), ctx.Err())}
	}
	select {
	case res := <-req.done:
		return res
	case <-ctx.Done():
		return ReloadResult{Err: fmt.Errorf("reload %s: %w", req.name(), ctx.Err())}
	}
}

// serve runs a request in Run's goroutine, so it never races a shutdown
// or another reload.
func (a *Agent) serve(ctx context.Context, req reloadRequest) ReloadResult {
	plan := req.plan
	if plan == nil {
		a.log.Info("reloading configuration", zap.String("config", req.path))
		// The same check as `config validate` and `run`: a file run would
		// refuse is refused here, with the same lines.
		// Read only once the file holds still: an editor rewriting it in
		// place passes through shorter files that may well be valid.
		var err error
		plan, err = load(ctx, req.path, os.Getenv, func(*config.Config) (Env, error) { return a.env, nil })
		if err != nil {
			return a.recordReload(ReloadResult{Err: err})
		}
		if plan.Warnings != nil {
			for _, w := range splitProblems(plan.Warnings) {
				a.log.Warn("configuration: " + w.Error())
			}
		}
	}
	res := ReloadResult{Hash: plan.Hash}
	res.Changes, res.Err = a.apply(ctx, plan)
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
// the rotation tunables are read by every output's loop. Each is named by
// its key in the file, so the refusal points at the line the operator
// edited.
func restartOnly(cur, next *Plan) []error {
	c, n := cur.Settings, next.Settings
	fixed := []struct {
		field   string
		changed bool
	}{
		{"workload_api.socket", c.WorkloadAPISocket != n.WorkloadAPISocket},
		{"workload_api.retry_max", c.WorkloadAPIRetryMax != n.WorkloadAPIRetryMax},
		{"admin.socket", c.AdminSocket != n.AdminSocket},
		{"admin.metrics_listen", c.MetricsListen != n.MetricsListen},
		{"log.format", c.LogFormat != n.LogFormat},
		{"rotation.expiry_window", c.ExpiryWindow != n.ExpiryWindow},
		{"rotation.debounce", c.Debounce != n.Debounce},
		{"rotation.retry_min", c.RetryMin != n.RetryMin},
		{"rotation.retry_max", c.RetryMax != n.RetryMax},
		{"rotation.guard", c.Guard != n.Guard},
		{"redis", !sameRedisTransition(c.RedisTransition, n.RedisTransition)},
	}
	var errs []error
	for _, f := range fixed {
		if f.changed {
			errs = append(errs, next.Config.At(f.field, errors.New("cannot change while the agent runs; restart it to apply (systemctl restart identity-agent)")))
		}
	}
	return errs
}

// sameRedisTransition compares two redis.transition sections setting by
// setting.
func sameRedisTransition(a, b *config.RedisTransition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Admin == b.Admin && a.PlainPort == b.PlainPort && a.TLSPort == b.TLSPort && a.TLSAddr == b.TLSAddr &&
		a.SpiffeID == b.SpiffeID && a.ServerID == b.ServerID && a.CertFile == b.CertFile && a.KeyFile == b.KeyFile &&
		a.CACertFile == b.CACertFile && a.PasswordFile == b.PasswordFile && a.StateFile == b.StateFile &&
		a.Window == b.Window && a.SampleInterval == b.SampleInterval && a.MaxSampleGap == b.MaxSampleGap &&
		slices.EqualFunc(a.HealthChecks, b.HealthChecks, func(x, y config.HealthCheck) bool {
			return x.Name == y.Name && x.HTTP == y.HTTP && slices.Equal(x.Exec, y.Exec) && x.Timeout == y.Timeout
		})
}

// apply changes the running agent from its plan to next, or nothing.
func (a *Agent) apply(ctx context.Context, next *Plan) ([]string, error) {
	if next.env != a.env {
		return nil, errors.New("apply: the plan was not made with this agent's Env")
	}
	cur := a.currentPlan()
	if err := config.Join(restartOnly(cur, next)...); err != nil {
		return nil, err
	}
	change, changes := diffOutputs(cur, next)

	// Proxies: started (bound) before anything else changes, so a port in
	// use refuses the whole reload with nothing touched.
	pc, err := a.proxies.prepare(next)
	if err != nil {
		return nil, err
	}
	if err := pc.bind(ctx, next.Config); err != nil {
		pc.abort()
		return nil, err
	}
	if err := a.manager.Apply(ctx, change); err != nil {
		pc.abort()
		return nil, outputProblem(next.Config, err)
	}
	a.mu.Lock()
	a.plan = next
	a.mu.Unlock()
	a.proxies.commit(ctx, pc)
	if a.opts.LogLevel != nil && cur.Settings.LogLevel != next.Settings.LogLevel {
		if lvl, err := zapcore.ParseLevel(next.Settings.LogLevel); err == nil {
			a.opts.LogLevel.SetLevel(lvl)
			changes = append(changes, "log.level: "+next.Settings.LogLevel)
		}
	}
	return append(changes, pc.changes...), nil
}

// diffOutputs compares the outputs by name: a changed one is replaced (its
// new runner writes only when its files differ from those on disk), and
// the new plan's outputs, reloaders built, are what starts.
func diffOutputs(cur, next *Plan) (rotation.Change, []string) {
	var change rotation.Change
	var changes []string
	curOut := map[string]rotation.Output{}
	for _, o := range cur.Outputs {
		curOut[o.Name] = o
	}
	seen := map[string]bool{}
	for _, o := range next.Outputs {
		seen[o.Name] = true
		old, ok := curOut[o.Name]
		switch {
		case !ok:
			changes = append(changes, "output "+o.Name+": added")
		case old.Equal(o):
			continue
		default:
			change.Remove = append(change.Remove, o.Name)
			changes = append(changes, "output "+o.Name+": changed")
		}
		change.Add = append(change.Add, o)
	}
	for _, o := range cur.Outputs {
		if !seen[o.Name] {
			change.Remove = append(change.Remove, o.Name)
			changes = append(changes, "output "+o.Name+": removed")
		}
	}
	return change, changes
}

func (a *Agent) currentPlan() *Plan {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.plan
}
