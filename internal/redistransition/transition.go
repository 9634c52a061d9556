package redistransition

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/clientlist"
	"github.com/identity-agent/identity-agent/pkg/redisclient"
)

// Gate names.
const (
	GateTLSFiles        = "tls-files"
	GateTLSPing         = "tls-ping"
	GateTLSAuthClients  = "tls-auth-clients"
	GatePlaintextNow    = "plaintext-now"
	GatePlaintextWindow = "plaintext-window"
	GateHealthChecks    = "health-checks"
	GateConfirm         = "confirm"
)

// TransitionConfig configures the transition tool.
type TransitionConfig struct {
	// StateFile is shared with the agent's Sampler. Required.
	StateFile string
	// PlainPort / TLSPort are the ports to open again on rollback / to open
	// in B (defaults 6379 / 6380).
	PlainPort, TLSPort int
	// TLSFiles as the server sees them; required to advance A→B.
	TLSFiles TLSFiles
	// PasswordFile holds the password that requirepass is set back to when
	// rolling back from D; it is also sent by the tls-ping gate.
	PasswordFile string
	// Window of zero plaintext connections required before D (default 24h).
	Window time.Duration
	// MaxSampleGap: samples further apart than this restart the window,
	// since nobody watched in between (default 10m: an agent restart keeps
	// the window, a day-long outage does not count as observed).
	MaxSampleGap time.Duration
	// TLSAddr, SVIDs, Bundles, ServerAuthorizer drive the tls-ping gate
	// (the agent's own SVID dials the TLS port). TLSAddr defaults to
	// 127.0.0.1:<TLSPort>.
	TLSAddr          string
	SVIDs            x509svid.Source
	Bundles          x509bundle.Source
	ServerAuthorizer tlsconfig.Authorizer
	HealthChecks     []HealthCheck
}

// Transition reads and moves a live server through phases A–D.
type Transition struct {
	admin *Admin
	cfg   TransitionConfig
	log   *zap.Logger
	now   func() time.Time
	m     *transitionMetrics
}

// NewTransition validates cfg. The caller owns admin.
func NewTransition(admin *Admin, cfg TransitionConfig, o ...Option) (*Transition, error) {
	if admin == nil {
		return nil, fmt.Errorf("redis transition: admin connection is required")
	}
	if cfg.StateFile == "" {
		return nil, fmt.Errorf("redis transition: state_file is required")
	}
	cfg.PlainPort, cfg.TLSPort = portsOrDefault(cfg.PlainPort, cfg.TLSPort)
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxSampleGap <= 0 {
		cfg.MaxSampleGap = DefaultMaxSampleGap
	}
	if cfg.TLSAddr == "" {
		cfg.TLSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.TLSPort))
	}
	s := newSettings(o)
	return &Transition{admin: admin, cfg: cfg, log: s.logger, now: s.now, m: newTransitionMetrics(s.reg)}, nil
}

// ServerSettings are the live settings that define the phase.
type ServerSettings struct {
	Port           string `json:"port"`
	TLSPort        string `json:"tls_port"`
	TLSAuthClients string `json:"tls_auth_clients"`
	PasswordSet    bool   `json:"password_set"`
	ConfigFile     string `json:"config_file,omitempty"`
}

// Gate is one condition for a step.
type Gate struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Status is what `redis transition status` prints.
type Status struct {
	Phase       Phase          `json:"phase"`
	Description string         `json:"description"`
	Server      ServerSettings `json:"server"`
	Connections ConnCounts     `json:"connections"`
	Sample      SampleState    `json:"sample"`
	// Next is the phase Advance would go to ("" in D) and Gates its gates.
	Next  Phase  `json:"next,omitempty"`
	Gates []Gate `json:"gates,omitempty"`
	// Previous is the phase Rollback would go to ("" in A).
	Previous Phase `json:"previous,omitempty"`
}

// Ready reports whether every gate passed.
func (s *Status) Ready() bool {
	for _, g := range s.Gates {
		if !g.OK {
			return false
		}
	}
	return s.Next != ""
}

// GateError is the refusal of a step; it names every failing gate.
type GateError struct {
	From, To Phase
	Failed   []Gate
}

func (e *GateError) Error() string {
	parts := make([]string, 0, len(e.Failed))
	for _, g := range e.Failed {
		parts = append(parts, fmt.Sprintf("gate %s: %s", g.Name, g.Detail))
	}
	return fmt.Sprintf("refusing %s→%s: %s", e.From, e.To, strings.Join(parts, "; "))
}

// Result is what a step did.
type Result struct {
	From    Phase    `json:"from"`
	To      Phase    `json:"to"`
	Set     []string `json:"set,omitempty"` // setting names changed with CONFIG SET
	Rewrote bool     `json:"config_rewritten"`
	// Killed counts plaintext connections closed when D turned the port off.
	Killed int `json:"killed_plaintext_connections,omitempty"`
}

func (t *Transition) server(ctx context.Context) (ServerSettings, error) {
	v, err := t.admin.ConfigGet(ctx, "port", "tls-port", "tls-auth-clients", "requirepass")
	if err != nil {
		return ServerSettings{}, err
	}
	cf, err := t.admin.ConfigFile(ctx)
	if err != nil {
		return ServerSettings{}, err
	}
	return ServerSettings{Port: v["port"], TLSPort: v["tls-port"], TLSAuthClients: v["tls-auth-clients"],
		PasswordSet: v["requirepass"] != "", ConfigFile: cf}, nil
}

func phaseOf(s ServerSettings, st State) (Phase, error) {
	plain := s.Port != "" && s.Port != "0"
	tlsOn := s.TLSPort != "" && s.TLSPort != "0"
	switch {
	case plain && !tlsOn:
		return PhaseA, nil
	case plain && tlsOn:
		if st.Phase == PhaseC {
			return PhaseC, nil
		}
		return PhaseB, nil
	case !plain && tlsOn:
		return PhaseD, nil
	}
	return "", fmt.Errorf("redis transition: server has neither port nor tls-port open (port=%s tls-port=%s)", s.Port, s.TLSPort)
}

func (t *Transition) ports(s ServerSettings) (plain, tlsPort string) {
	plain, tlsPort = s.Port, s.TLSPort
	if plain == "0" || plain == "" {
		plain = strconv.Itoa(t.cfg.PlainPort)
	}
	if tlsPort == "0" || tlsPort == "" {
		tlsPort = strconv.Itoa(t.cfg.TLSPort)
	}
	return plain, tlsPort
}

// current reads the saved state and the live server and derives the phase.
func (t *Transition) current(ctx context.Context) (State, ServerSettings, Phase, error) {
	st, err := LoadState(t.cfg.StateFile)
	if err != nil {
		return st, ServerSettings{}, "", err
	}
	srv, err := t.server(ctx)
	if err != nil {
		return st, srv, "", err
	}
	ph, err := phaseOf(srv, st)
	return st, srv, ph, err
}

// Status reads the live server and evaluates the gates of the next step
// as if confirm were given (confirm is reported as pending otherwise).
func (t *Transition) Status(ctx context.Context, confirm bool) (*Status, error) {
	st, srv, ph, err := t.current(ctx)
	if err != nil {
		return nil, err
	}
	pp, tp := t.ports(srv)
	counts, err := t.admin.Clients(ctx, pp, tp)
	if err != nil {
		return nil, err
	}
	if srv.Port == "0" {
		counts.Other += counts.Plaintext
		counts.Plaintext, counts.PlaintextClients = 0, nil
	}
	s := &Status{Phase: ph, Description: ph.Describe(), Server: srv, Connections: counts, Sample: st.Sample,
		Next: ph.next(), Previous: ph.prev()}
	if s.Next != "" {
		s.Gates = t.gates(ctx, ph, s, confirm)
	}
	t.m.observe(s)
	return s, nil
}

func (t *Transition) gates(ctx context.Context, from Phase, s *Status, confirm bool) []Gate {
	var g []Gate
	switch from {
	case PhaseA:
		g = append(g, t.gateTLSFiles())
	case PhaseB:
		g = append(g, t.gateTLSPing(ctx), gateAuthClients(s.Server))
	case PhaseC:
		g = append(g, t.gateTLSPing(ctx), gateAuthClients(s.Server), gatePlainNow(s), t.gateWindow(s.Sample))
	}
	g = append(g, t.gateHealth(ctx))
	if confirm {
		g = append(g, Gate{Name: GateConfirm, OK: true, Detail: "confirmed by operator"})
	} else {
		g = append(g, Gate{Name: GateConfirm, Detail: "pending: pass --confirm"})
	}
	return g
}

func (t *Transition) gateTLSFiles() Gate {
	g := Gate{Name: GateTLSFiles}
	f := t.cfg.TLSFiles
	if f.CertFile == "" || f.KeyFile == "" || f.CAFile == "" {
		g.Detail = "cert_file, key_file and ca_file must be configured for the Redis output"
		return g
	}
	for _, p := range []string{f.KeyFile, f.CAFile} {
		if _, err := os.Stat(p); err != nil {
			g.Detail = err.Error()
			return g
		}
	}
	b, err := os.ReadFile(f.CertFile)
	if err != nil {
		g.Detail = err.Error()
		return g
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		g.Detail = f.CertFile + ": no PEM certificate"
		return g
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		g.Detail = fmt.Sprintf("%s: %v", f.CertFile, err)
		return g
	}
	if len(cert.URIs) == 0 || cert.URIs[0].Scheme != "spiffe" {
		g.Detail = f.CertFile + ": not an X.509-SVID (no spiffe:// URI SAN)"
		return g
	}
	if time.Now().After(cert.NotAfter) {
		g.Detail = fmt.Sprintf("%s: expired at %s", f.CertFile, cert.NotAfter.UTC().Format(time.RFC3339))
		return g
	}
	g.OK = true
	g.Detail = fmt.Sprintf("%s is %s, valid until %s", f.CertFile, cert.URIs[0], cert.NotAfter.UTC().Format(time.RFC3339))
	return g
}

func (t *Transition) gateTLSPing(ctx context.Context) Gate {
	g := Gate{Name: GateTLSPing}
	if t.cfg.SVIDs == nil || t.cfg.Bundles == nil || t.cfg.ServerAuthorizer == nil {
		g.Detail = "no SVID source / server authorizer configured for the TLS check"
		return g
	}
	p, err := redisclient.PingTLS(ctx, t.cfg.TLSAddr, t.cfg.SVIDs, t.cfg.Bundles, t.cfg.ServerAuthorizer, t.cfg.PasswordFile)
	if err != nil {
		g.Detail = err.Error()
		return g
	}
	g.OK = true
	g.Detail = fmt.Sprintf("PONG over mTLS from %s (serial %s) at %s", p.SpiffeID, p.Serial, t.cfg.TLSAddr)
	return g
}

func gateAuthClients(s ServerSettings) Gate {
	g := Gate{Name: GateTLSAuthClients, OK: s.TLSAuthClients == "yes"}
	g.Detail = "tls-auth-clients " + s.TLSAuthClients
	if !g.OK {
		g.Detail += ": TLS clients without a certificate are let in; set tls-auth-clients yes"
	}
	return g
}

func gatePlainNow(s *Status) Gate {
	g := Gate{Name: GatePlaintextNow, OK: s.Connections.Plaintext == 0}
	if g.OK {
		g.Detail = "no connection on the plaintext port"
	} else {
		g.Detail = fmt.Sprintf("%d connection(s) on plaintext port %s: %s", s.Connections.Plaintext, s.Server.Port,
			strings.Join(s.Connections.PlaintextClients, ", "))
	}
	return g
}

func (t *Transition) gateWindow(sm SampleState) Gate {
	g := Gate{Name: GatePlaintextWindow}
	now := t.now()
	switch {
	case sm.LastSample.IsZero():
		g.Detail = fmt.Sprintf("no sample in %s yet: run the agent with the redis transition sampler", t.cfg.StateFile)
	case now.Sub(sm.LastSample) > t.cfg.MaxSampleGap:
		g.Detail = fmt.Sprintf("last sample %s ago (max %s): the sampler is not running", now.Sub(sm.LastSample).Round(time.Second), t.cfg.MaxSampleGap)
	case sm.PlaintextZeroSince.IsZero():
		g.Detail = fmt.Sprintf("plaintext connection seen in the last sample (%d)", sm.Last.Plaintext)
	default:
		clean := now.Sub(sm.PlaintextZeroSince)
		if clean >= t.cfg.Window {
			g.OK = true
			g.Detail = fmt.Sprintf("no plaintext connection sampled for %s (window %s)", clean.Round(time.Second), t.cfg.Window)
		} else {
			g.Detail = fmt.Sprintf("no plaintext connection sampled for %s of the %s window", clean.Round(time.Second), t.cfg.Window)
		}
	}
	return g
}

func (t *Transition) gateHealth(ctx context.Context) Gate {
	g := Gate{Name: GateHealthChecks, OK: true}
	if len(t.cfg.HealthChecks) == 0 {
		g.Detail = "none configured"
		return g
	}
	var failed []string
	for _, h := range t.cfg.HealthChecks {
		if err := h.Check(ctx); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", h.Name, err))
		}
	}
	if len(failed) > 0 {
		g.OK = false
		g.Detail = strings.Join(failed, "; ")
		return g
	}
	g.Detail = fmt.Sprintf("%d passed", len(t.cfg.HealthChecks))
	return g
}

// Advance applies the next phase when all its gates pass, saving the
// settings it changes in the state file; otherwise it returns a *GateError
// naming each failing gate and changes nothing.
func (t *Transition) Advance(ctx context.Context, confirm bool) (*Result, error) {
	s, err := t.Status(ctx, confirm)
	if err != nil {
		return nil, err
	}
	if s.Next == "" {
		return nil, fmt.Errorf("redis transition: already in phase D; nothing to advance")
	}
	var failed []Gate
	for _, g := range s.Gates {
		if !g.OK {
			failed = append(failed, g)
		}
	}
	if len(failed) > 0 {
		return nil, &GateError{From: s.Phase, To: s.Next, Failed: failed}
	}
	res := &Result{From: s.Phase, To: s.Next}
	step := Step{From: s.Phase, To: s.Next, At: t.now().UTC()}
	var kv [][2]string
	switch s.Phase {
	case PhaseA:
		f := t.cfg.TLSFiles
		kv = [][2]string{{"tls-cert-file", f.CertFile}, {"tls-key-file", f.KeyFile}, {"tls-ca-cert-file", f.CAFile},
			{"tls-auth-clients", "yes"}, {"tls-port", strconv.Itoa(t.cfg.TLSPort)}}
	case PhaseC:
		kv = [][2]string{{"tls-auth-clients", "yes"}, {"requirepass", ""}, {"port", "0"}}
	}
	if len(kv) > 0 {
		keys := make([]string, 0, len(kv))
		for _, p := range kv {
			if p[0] != "requirepass" {
				keys = append(keys, p[0])
			}
		}
		prev, err := t.admin.ConfigGet(ctx, keys...)
		if err != nil {
			return nil, err
		}
		step.Previous, step.PasswordWasSet = prev, s.Server.PasswordSet
		if err := t.admin.ConfigSet(ctx, kv); err != nil {
			return nil, fmt.Errorf("redis transition %s→%s: %w", s.Phase, s.Next, err)
		}
		for _, p := range kv {
			res.Set = append(res.Set, p[0])
		}
		if s.Phase == PhaseC {
			res.Killed = t.killPlaintext(ctx, s.Server.Port)
		}
		if res.Rewrote, err = t.admin.Rewrite(ctx); err != nil {
			return res, fmt.Errorf("redis transition %s→%s applied but not persisted: %w", s.Phase, s.Next, err)
		}
		step.Rewrote = res.Rewrote
	}
	if err := updateState(t.cfg.StateFile, func(st *State) error {
		st.Phase, st.PhaseSince = s.Next, step.At
		st.History = append(st.History, step)
		return nil
	}); err != nil {
		return res, fmt.Errorf("redis transition %s→%s applied but not recorded: %w", s.Phase, s.Next, err)
	}
	t.log.Info("redis transition advanced", zap.String("from", string(s.Phase)), zap.String("to", string(s.Next)),
		zap.Strings("set", res.Set), zap.Bool("rewrote", res.Rewrote))
	return res, nil
}

// killPlaintext closes connections still on the old plaintext port after it
// was turned off (Redis keeps established ones): "plaintext off" means off.
// The admin's own connection is spared.
func (t *Transition) killPlaintext(ctx context.Context, port string) int {
	conn := t.admin.Redis().Conn()
	defer func() { _ = conn.Close() }()
	self, err := conn.ClientID(ctx).Result()
	if err != nil {
		return 0
	}
	list, err := conn.ClientList(ctx).Result()
	if err != nil {
		return 0
	}
	n := 0
	for _, f := range clientlist.Parse(list) {
		if f["id"] == "" || f["id"] == strconv.FormatInt(self, 10) || f.LocalPort() != port {
			continue
		}
		if err := conn.Do(ctx, "CLIENT", "KILL", "ID", f["id"]).Err(); err == nil {
			n++
		}
	}
	return n
}

// Rollback returns to the previous phase, restoring the settings saved by
// the advance that left it (or the defaults when the server was configured
// by hand). Only confirm gates it: rollback is the emergency exit.
func (t *Transition) Rollback(ctx context.Context, confirm bool) (*Result, error) {
	st, srv, ph, err := t.current(ctx)
	if err != nil {
		return nil, err
	}
	to := ph.prev()
	if to == "" {
		return nil, fmt.Errorf("redis transition: already in phase A; nothing to roll back")
	}
	if !confirm {
		return nil, &GateError{From: ph, To: to, Failed: []Gate{{Name: GateConfirm, Detail: "pending: pass --confirm"}}}
	}
	var saved *Step
	if n := len(st.History); n > 0 && st.History[n-1].To == ph && st.History[n-1].From == to {
		saved = &st.History[n-1]
	}
	res := &Result{From: ph, To: to}
	var kv [][2]string
	switch ph {
	case PhaseB:
		prev := "0"
		if saved != nil && saved.Previous["tls-port"] != "" {
			prev = saved.Previous["tls-port"]
		}
		kv = [][2]string{{"tls-port", prev}}
	case PhaseD:
		port, authClients, needPW := strconv.Itoa(t.cfg.PlainPort), srv.TLSAuthClients, true
		if saved != nil {
			if p := saved.Previous["port"]; p != "" && p != "0" {
				port = p
			}
			if a := saved.Previous["tls-auth-clients"]; a != "" {
				authClients = a
			}
			needPW = saved.PasswordWasSet
		}
		if !needPW && authClients != "yes" {
			// Reopening the plaintext port leaves the default user without a
			// password: a certificate-optional TLS port would then let anyone
			// in without a certificate (redis#14638).
			t.log.Warn("redis transition D→C: restoring tls-auth-clients yes, not "+authClients+": no password is set", zap.String("tls_auth_clients_saved", authClients))
			authClients = "yes"
		}
		if needPW {
			if t.cfg.PasswordFile == "" {
				return nil, fmt.Errorf("redis transition D→C: password_file is required to set requirepass again before reopening port %s", port)
			}
			pw, err := readPasswordFile(t.cfg.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("redis transition D→C: %w", err)
			}
			kv = append(kv, [2]string{"requirepass", pw})
		}
		kv = append(kv, [2]string{"tls-auth-clients", authClients}, [2]string{"port", port})
	}
	if len(kv) > 0 {
		if err := t.admin.ConfigSet(ctx, kv); err != nil {
			return nil, fmt.Errorf("redis transition rollback %s→%s: %w", ph, to, err)
		}
		for _, p := range kv {
			res.Set = append(res.Set, p[0])
		}
		if res.Rewrote, err = t.admin.Rewrite(ctx); err != nil {
			return res, fmt.Errorf("redis transition rollback %s→%s applied but not persisted: %w", ph, to, err)
		}
	}
	if err := updateState(t.cfg.StateFile, func(s *State) error {
		s.Phase, s.PhaseSince = to, t.now().UTC()
		if n := len(s.History); n > 0 && s.History[n-1].To == ph {
			s.History = s.History[:n-1]
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("redis transition rollback %s→%s applied but not recorded: %w", ph, to, err)
	}
	t.log.Warn("redis transition rolled back", zap.String("from", string(ph)), zap.String("to", string(to)), zap.Strings("set", res.Set))
	return res, nil
}
