package redistransition

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// SamplerConfig configures the plaintext-connection sampler that the
// running agent runs for the plaintext-window gate.
type SamplerConfig struct {
	StateFile string        // required; the file `redis transition` reads
	Interval  time.Duration // default 15s
	// MaxGap: a sample further than this from the previous one restarts
	// the plaintext-free window (default 10m, as TransitionConfig).
	MaxGap time.Duration
	// PlainPort / TLSPort are used when the server reports 0 (default
	// DefaultPlainPort / DefaultTLSPort).
	PlainPort, TLSPort int
	// Transition, when set, is evaluated after each sample (Status without
	// confirm) so the phase and gate metrics stay current on /metrics.
	Transition *Transition
}

// Sampler samples CLIENT LIST on an interval and keeps, in the state
// file, since when no connection was seen on the plaintext port. It is a
// sample, not an audit: a plaintext connection that opens and closes
// between two samples is missed, so keep Interval short.
type Sampler struct {
	admin *Admin
	cfg   SamplerConfig
	log   *zap.Logger
	now   func() time.Time
	m     *transitionMetrics
}

// NewSampler validates cfg. The caller owns admin.
func NewSampler(admin *Admin, cfg SamplerConfig, o ...Option) (*Sampler, error) {
	if admin == nil {
		return nil, fmt.Errorf("redis sampler: admin connection is required")
	}
	if cfg.StateFile == "" {
		return nil, fmt.Errorf("redis sampler: state_file is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultSampleInterval
	}
	if cfg.MaxGap <= 0 {
		cfg.MaxGap = DefaultMaxSampleGap
	}
	cfg.PlainPort, cfg.TLSPort = portsOrDefault(cfg.PlainPort, cfg.TLSPort)
	s := newSettings(o)
	return &Sampler{admin: admin, cfg: cfg, log: s.logger, now: s.now, m: newTransitionMetrics(s.reg)}, nil
}

// SampleOnce takes one sample and records it.
func (s *Sampler) SampleOnce(ctx context.Context) (ConnCounts, error) {
	v, err := s.admin.ConfigGet(ctx, "port", "tls-port")
	if err != nil {
		return ConnCounts{}, err
	}
	t := &Transition{cfg: TransitionConfig{PlainPort: s.cfg.PlainPort, TLSPort: s.cfg.TLSPort}}
	pp, tp := t.ports(ServerSettings{Port: v["port"], TLSPort: v["tls-port"]})
	c, err := s.admin.Clients(ctx, pp, tp)
	if err != nil {
		return ConnCounts{}, err
	}
	if v["port"] == "0" {
		// Port closed (phase D): whatever is left there is being drained.
		c.Other += c.Plaintext
		c.Plaintext, c.PlaintextClients = 0, nil
	}
	now := s.now().UTC()
	var clean time.Duration
	err = updateState(s.cfg.StateFile, func(st *State) error {
		sm := &st.Sample
		gap := sm.LastSample.IsZero() || now.Sub(sm.LastSample) > s.cfg.MaxGap
		switch {
		case c.Plaintext > 0:
			sm.PlaintextZeroSince = time.Time{}
			sm.LastPlaintextSeen = now
		case gap || sm.PlaintextZeroSince.IsZero():
			sm.PlaintextZeroSince = now
		}
		sm.LastSample, sm.Last = now, c
		sm.Samples++
		sm.Phase, _ = phaseOf(ServerSettings{Port: v["port"], TLSPort: v["tls-port"]}, *st)
		if !sm.PlaintextZeroSince.IsZero() {
			clean = now.Sub(sm.PlaintextZeroSince)
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	s.m.counts(c)
	s.m.cleanSecs.Set(clean.Seconds())
	if s.cfg.Transition != nil {
		if _, err := s.cfg.Transition.Status(ctx, false); err != nil {
			s.log.Debug("redis transition status after sample failed", zap.Error(err))
		}
	}
	if c.Plaintext > 0 {
		s.log.Debug("redis plaintext connections sampled", zap.Int("count", c.Plaintext), zap.Strings("clients", c.PlaintextClients))
	}
	return c, nil
}

// Run samples every Interval until ctx is done (then it returns nil).
// Failures are logged and retried at the next tick.
func (s *Sampler) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := s.SampleOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("redis transition sample failed", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
