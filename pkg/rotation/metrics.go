package rotation

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	reg            prometheus.Registerer
	expiry         *prometheus.GaugeVec
	rotations      *prometheus.CounterVec
	writeFailures  *prometheus.CounterVec
	reloads        *prometheus.CounterVec
	reloadFailures *prometheus.CounterVec
	reloadVerified *prometheus.GaugeVec
}

// newMetrics always builds the collectors so the code paths never branch on
// "metrics enabled"; they are only registered when reg is not nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "identity_agent_svid_expiry_timestamp_seconds",
			Help: "NotAfter (Unix seconds) of the X.509-SVID currently written for the output.",
		}, []string{"output", "spiffe_id"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_rotations_total",
			Help: "Writes that changed an output's files.",
		}, []string{"output"}),
		writeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_write_failures_total",
			Help: "Failed attempts to produce an output's files (validation, JWT fetch or disk write).",
		}, []string{"output"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_reloads_total",
			Help: "Reload attempts after an output's files changed.",
		}, []string{"output", "kind"}),
		reloadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_agent_reload_failures_total",
			Help: "Reload attempts that failed.",
		}, []string{"output", "kind"}),
		reloadVerified: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "identity_agent_reload_verified",
			Help: "1 when the output's verify endpoint serves the certificate last written, 0 when it did not within the verify timeout (outputs with verify only).",
		}, []string{"output"}),
	}
	if reg == nil {
		return m, nil
	}
	m.reg = reg
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.expiry, m.rotations, m.writeFailures, m.reloads, m.reloadFailures, m.reloadVerified} {
		if err := reg.Register(c); err != nil {
			// Leave the Registerer as we found it so a retry can succeed.
			for _, d := range done {
				reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("rotation metrics: already registered (one Manager per Registerer): %w", err)
			}
			return nil, fmt.Errorf("rotation metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}

// forget drops a removed output's series, so dashboards and alerts do not
// keep reading the last value of an output that no longer exists.
func (m *metrics) forget(output string) {
	l := prometheus.Labels{"output": output}
	m.expiry.DeletePartialMatch(l)
	m.rotations.DeletePartialMatch(l)
	m.writeFailures.DeletePartialMatch(l)
	m.reloads.DeletePartialMatch(l)
	m.reloadFailures.DeletePartialMatch(l)
	m.reloadVerified.DeletePartialMatch(l)
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.expiry, m.rotations, m.writeFailures, m.reloads, m.reloadFailures, m.reloadVerified} {
		m.reg.Unregister(c)
	}
	m.reg = nil
}
