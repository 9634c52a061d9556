package redistransition

import (
	"github.com/identity-agent/identity-agent/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

type transitionMetrics struct {
	conns     *prometheus.GaugeVec
	phase     *prometheus.GaugeVec
	gates     *prometheus.GaugeVec
	cleanSecs prometheus.Gauge
}

func newTransitionMetrics(r prometheus.Registerer) *transitionMetrics {
	return &transitionMetrics{
		conns: promreg.Shared(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "identity_agent_redis_connections", Help: "Redis connections by server port (plaintext, tls, other=unix), from CLIENT LIST.",
		}, []string{"port"})),
		phase: promreg.Shared(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "identity_agent_redis_transition_phase", Help: "1 for the current transition phase (A-D).",
		}, []string{"phase"})),
		gates: promreg.Shared(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "identity_agent_redis_transition_gate", Help: "1 when the gate of the next transition step passes.",
		}, []string{"gate"})),
		cleanSecs: promreg.Shared(r, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "identity_agent_redis_plaintext_free_seconds", Help: "How long the sampler has seen no plaintext connection (0 while it sees one).",
		})),
	}
}

func (m *transitionMetrics) counts(c ConnCounts) {
	m.conns.WithLabelValues("plaintext").Set(float64(c.Plaintext))
	m.conns.WithLabelValues("tls").Set(float64(c.TLS))
	m.conns.WithLabelValues("other").Set(float64(c.Other))
}

func (m *transitionMetrics) observe(s *Status) {
	m.counts(s.Connections)
	for _, p := range []Phase{PhaseA, PhaseB, PhaseC, PhaseD} {
		m.phase.WithLabelValues(string(p)).Set(boolGauge(p == s.Phase))
	}
	m.gates.Reset()
	for _, g := range s.Gates {
		m.gates.WithLabelValues(g.Name).Set(boolGauge(g.OK))
	}
}
