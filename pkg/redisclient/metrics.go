package redisclient

import (
	"github.com/identity-agent/identity-agent/internal/promreg"
	"github.com/prometheus/client_golang/prometheus"
)

type clientMetrics struct {
	dials       *prometheus.CounterVec
	fallbacks   prometheus.Counter
	tlsFailures *prometheus.CounterVec
	tlsUp       prometheus.Gauge
}

func newClientMetrics(r prometheus.Registerer, name string) *clientMetrics {
	l := prometheus.Labels{"client": name}
	return &clientMetrics{
		dials: promreg.Shared(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_redis_client_dials_total", Help: "New Redis connections by path (tls, plaintext).",
			ConstLabels: l}, []string{"path"})),
		fallbacks: promreg.Shared(r, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "identity_agent_redis_client_fallbacks_total", Help: "dual_auth connections that fell back from mTLS to password on the plaintext port.",
			ConstLabels: l})),
		tlsFailures: promreg.Shared(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "identity_agent_redis_client_tls_failures_total",
			Help:        "Failed TLS attempts by cause: unreachable (the only one dual_auth falls back on), server_id, untrusted_chain, handshake.",
			ConstLabels: l}, []string{"cause"})),
		tlsUp: promreg.Shared(r, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "identity_agent_redis_client_tls_up", Help: "1 when new connections use the TLS path.",
			ConstLabels: l})),
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
