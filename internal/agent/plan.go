package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/rotation"
	"github.com/identity-agent/identity-agent/pkg/svid"
	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// Plan is a configuration converted into what each package takes and
// checked by every rule `run` applies before it starts anything: the
// file's own rules (internal/config), each package's Validate, owners that
// must exist, and what only the whole file shows (two outputs in one
// directory, two listeners on one address). It is the one currency
// between the file and the running agent: `config validate`, `status` and
// `run` make it with NewPlan (or Load), New starts it, and a reload makes
// the next one and Applies it; the reload's diff compares the two plans.
//
// Making a plan changes nothing: no directory, socket or file is created,
// nothing is chowned, nothing connects or starts; it only reads (user and
// group databases, symlinks along output directories).
type Plan struct {
	Config *config.Config
	// Outputs, one per configured output, owners resolved and every
	// reloader built (against Env's source, logger and registry).
	Outputs []rotation.Output
	// Proxies, one per configured proxy.
	Proxies []ProxyPlan
	// Settings are the agent-wide settings, defaults applied.
	Settings Settings
	// Hash is the SHA-256 of the file the plan was made from (status
	// shows it; a reload compares it).
	Hash string
	// Warnings are settings that are legal but probably unintended, as
	// config.Problems.
	Warnings error

	// env is what the plan was built with; Apply takes only a plan built
	// for the agent's own.
	env Env
}

// ProxyPlan is one configured proxy as tlsproxy takes it.
type ProxyPlan struct {
	Config tlsproxy.Config
	// Selector picks the SVID the proxy presents.
	Selector svid.Selector
}

// Settings are the agent-wide settings of a plan with their defaults
// applied. All but LogLevel are fixed while the agent runs (restartOnly).
type Settings struct {
	WorkloadAPISocket   string
	WorkloadAPIRetryMax time.Duration
	AdminSocket         string
	MetricsListen       string
	LogLevel, LogFormat string
	ExpiryWindow        time.Duration
	Debounce            time.Duration
	RetryMin, RetryMax  time.Duration
	Guard               bool
	// RedisTransition is the redis.transition section, nil without one.
	RedisTransition *config.RedisTransition
}

// Env is what a plan is built with besides the file: the Workload API
// source the reloaders and proxies take their SVIDs from, the logger and
// metrics registry the parts use, and the user the output directories are
// checked for. `config validate` and `status` plan with no source and no
// registry: such a plan is only checked, never run (New refuses it).
type Env struct {
	// Source is not started by planning. Nil: a plan only to check.
	Source *svid.Source
	// Logger; nil is zap.NewNop().
	Logger *zap.Logger
	// Registry the parts register their metrics on; nil: none.
	Registry *prometheus.Registry
	// RunAs is whom output directories are checked for; nil is this
	// process's user (Self).
	RunAs *RunAs
}

// NewEnv is the Env that runs cfg: an unstarted source for cfg's Workload
// API, a new registry, and log. Nothing is started or connected.
func NewEnv(cfg *config.Config, log *zap.Logger) Env {
	if log == nil {
		log = zap.NewNop()
	}
	retryMax := cfg.WorkloadAPI.RetryMax.D(svid.DefaultRetryMax)
	src := svid.NewSource(svid.WithAddr(cfg.WorkloadAPI.Socket), svid.WithLogger(log.Named("workloadapi")),
		svid.WithBackoff(min(svid.DefaultRetryMin, retryMax), retryMax))
	as := Self()
	return Env{Source: src, Logger: log, Registry: prometheus.NewRegistry(), RunAs: &as}
}

func (e Env) logger() *zap.Logger {
	if e.Logger == nil {
		return zap.NewNop()
	}
	return e.Logger
}

func (e Env) runAs() RunAs {
	if e.RunAs == nil {
		return Self()
	}
	return *e.RunAs
}

// registerer is e.Registry as a Registerer; a nil one (not a nil
// *Registry in an interface) when there is none.
func (e Env) registerer() prometheus.Registerer {
	if e.Registry == nil {
		return nil
	}
	return e.Registry
}

// Load reads the file at path and plans it for checking (no source): every
// problem of the file and of the plan is reported at once, as
// config.Problems sorted by line. The file is used only once it has held
// still for SettleInterval (two identical reads; see readSettled), so
// `run`, `config validate` and a reload all read it by one rule.
func Load(path string, getenv func(string) string) (*Plan, error) {
	return load(context.Background(), path, getenv, checkOnly(Self()))
}

// LoadAs is Load checked for the agent running as as instead of as this
// process's user: `config validate --user NAME`, and the root steps of a
// service (`service prepare`, `install`) that check for the service's user.
// Like Load, it only reads.
func LoadAs(path string, getenv func(string) string, as RunAs) (*Plan, error) {
	return load(context.Background(), path, getenv, checkOnly(as))
}

// EnvFunc makes the Env a plan is built with from the file's decoded
// configuration (its log and workload_api settings). It is called for a
// file with problems of its own too (that plan is only checked, and
// reports them all), so it must not start or connect anything.
type EnvFunc func(cfg *config.Config) (Env, error)

// LoadToRun is Load for a plan that runs (`run`, `fetch`): env makes its
// Env, typically NewEnv with a logger made from cfg.Log. The file is read
// and planned once.
func LoadToRun(path string, getenv func(string) string, env EnvFunc) (*Plan, error) {
	return load(context.Background(), path, getenv, env)
}

func checkOnly(as RunAs) EnvFunc {
	return func(*config.Config) (Env, error) { return Env{RunAs: &as}, nil }
}

// RunAs is the user a plan is checked for: the one the agent runs as, whose
// every existing output directory must be (atomicdir.CheckDir).
type RunAs struct {
	UID int
	// Name names the user in messages; "" = "the agent's user".
	Name string
	// Hint, when set, is called for an output directory refused because
	// uid owner owns it; what it returns ("" = nothing) is appended to
	// that one line (e.g. how to check as the service's user instead).
	Hint func(owner int) string
	// SettingsOnly leaves the owner rule out: for a command that reads the
	// config for its settings and writes no output dir (`redis
	// transition`), which root runs next to a service whose user owns the
	// dirs. Not for anything that runs the agent or judges its config.
	SettingsOnly bool
}

// Self is RunAs for this process's effective user: what `run` and a
// reload check.
func Self() RunAs { return RunAs{UID: os.Geteuid()} }

func (r RunAs) who() string {
	if r.Name == "" {
		return "the agent's user"
	}
	return r.Name
}

// NewPlan converts and checks cfg (see Plan) and builds every part that
// is a value (outputs with their reloaders, proxies' settings) with env.
// The error is config.Problems.
func NewPlan(cfg *config.Config, env Env) (*Plan, error) {
	p := &Plan{Config: cfg, env: env, Settings: settingsOf(cfg)}
	var errs, warns []error
	for i, o := range cfg.Outputs {
		at := fmt.Sprintf("outputs[%d]", i)
		ro, err := convertOutput(cfg, env, at, o)
		errs = append(errs, err)
		// The reloads were checked one by one, each at its own line.
		bare := ro
		bare.Reloads = nil
		if err := bare.Validate(); err != nil {
			errs = append(errs, cfg.At(at, err))
		}
		for _, w := range ro.Warnings() {
			warns = append(warns, cfg.At(at, w))
		}
		p.Outputs = append(p.Outputs, ro)
	}
	errs = append(errs, checkOutputDirs(cfg), checkOutputDirOwners(cfg, env.runAs()))
	for i, pc := range cfg.Proxies {
		pp := proxyPlan(pc)
		if err := pp.Config.Validate(); err != nil {
			errs = append(errs, cfg.At(fmt.Sprintf("proxies[%d]", i), err))
		}
		p.Proxies = append(p.Proxies, pp)
	}
	errs = append(errs, checkListeners(cfg, p.Proxies))
	warns = append(warns, cfg.AllowTrustDomainWarnings()...)
	if t := redisTransition(cfg); t != nil {
		errs = append(errs, cfg.At("redis.transition.admin", t.Admin.CheckAdmin()))
	}
	if err := config.Join(errs...); err != nil {
		return nil, err
	}
	p.Warnings = config.Join(warns...)
	return p, nil
}

// proxyPlan is what the plan keeps of one configured proxy.
func proxyPlan(pc config.Proxy) ProxyPlan {
	tc := ProxyConfig(pc)
	return ProxyPlan{Config: tc, Selector: svid.Selector{SpiffeID: pc.SpiffeID, Hint: pc.Hint}}
}

// settingsOf reads the agent-wide settings; config filled their defaults
// (the packages' constants).
func settingsOf(cfg *config.Config) Settings {
	return Settings{
		WorkloadAPISocket:   cfg.WorkloadAPI.Socket,
		WorkloadAPIRetryMax: cfg.WorkloadAPI.RetryMax.D(svid.DefaultRetryMax),
		AdminSocket:         cfg.Admin.Socket,
		MetricsListen:       cfg.Admin.MetricsListen,
		LogLevel:            cfg.Log.Level,
		LogFormat:           cfg.Log.Format,
		ExpiryWindow:        time.Duration(cfg.Rotation.ExpiryWindow),
		Debounce:            time.Duration(cfg.Rotation.Debounce),
		RetryMin:            time.Duration(cfg.Rotation.RetryMin),
		RetryMax:            time.Duration(cfg.Rotation.RetryMax),
		Guard:               cfg.Rotation.Guard == nil || *cfg.Rotation.Guard,
		RedisTransition:     redisTransition(cfg),
	}
}

func redisTransition(cfg *config.Config) *config.RedisTransition {
	if cfg.Redis == nil {
		return nil
	}
	return cfg.Redis.Transition
}

// Parse is Load for bytes already read; path is used in messages.
func Parse(path string, data []byte, getenv func(string) string) (*Plan, error) {
	return parse(path, data, getenv, checkOnly(Self()))
}

func parse(path string, data []byte, getenv func(string) string, mkEnv EnvFunc) (*Plan, error) {
	cfg, err := config.Parse(path, data, getenv)
	if cfg == nil {
		return nil, err
	}
	env, eerr := mkEnv(cfg)
	if eerr != nil {
		if err == nil {
			return nil, fmt.Errorf("%s: %w", path, eerr)
		}
		// The file's own problems say why (a log level the logger
		// refuses is one of them); the plan only adds its lines.
		env = Env{}
	}
	p, perr := NewPlan(cfg, env)
	if all := config.Join(err, withoutEchoes(perr, err)); all != nil {
		return nil, all
	}
	sum := sha256.Sum256(data)
	p.Hash = hex.EncodeToString(sum[:])
	return p, nil
}

// withoutEchoes drops the plan's problems with a field that a problem of
// the file's decoding names too, or inside or around it: one mistake
// (`exec: {command: "a string"}`) is one line, not also "empty command"
// for the value the decoder could not take.
func withoutEchoes(plan, decode error) error {
	var ps, ds config.Problems
	if !errors.As(plan, &ps) || !errors.As(decode, &ds) {
		return plan
	}
	related := func(a, b string) bool {
		return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
	}
	var keep []error
	for _, p := range ps {
		if !slices.ContainsFunc(ds, func(d *config.Problem) bool { return related(p.Field, d.Field) }) {
			keep = append(keep, p)
		}
	}
	return config.Join(keep...)
}
