package agent

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// proxyMetrics is the Registerer one proxy registers its metrics on. It
// remembers what the proxy registered, so that a reload can hand a proxy's
// name to its replacement: the old proxy's series leave (release) before
// the new proxy's arrive (commit), where both registering at once would be
// refused as a duplicate. A deferred one holds the new proxy's collectors
// until commit, so a reload that is refused never shows them.
type proxyMetrics struct {
	reg prometheus.Registerer

	mu       sync.Mutex
	deferred bool
	cols     []prometheus.Collector
}

func newProxyMetrics(reg prometheus.Registerer, deferred bool) *proxyMetrics {
	return &proxyMetrics{reg: reg, deferred: deferred}
}

func (m *proxyMetrics) Register(c prometheus.Collector) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.deferred {
		if err := m.reg.Register(c); err != nil {
			return err
		}
	}
	m.cols = append(m.cols, c)
	return nil
}

func (m *proxyMetrics) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := m.Register(c); err != nil {
			panic(err)
		}
	}
}

func (m *proxyMetrics) Unregister(c prometheus.Collector) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, have := range m.cols {
		if have == c {
			m.cols = append(m.cols[:i], m.cols[i+1:]...)
			return m.deferred || m.reg.Unregister(c)
		}
	}
	return false
}

// commit registers what a deferred proxy registered so far.
func (m *proxyMetrics) commit() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.deferred {
		return nil
	}
	for i, c := range m.cols {
		if err := m.reg.Register(c); err != nil {
			for _, done := range m.cols[:i] {
				m.reg.Unregister(done)
			}
			return err
		}
	}
	m.deferred = false
	return nil
}

// release unregisters everything (a proxy on its way out; its later
// Unregister calls find nothing).
func (m *proxyMetrics) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.deferred {
		for _, c := range m.cols {
			m.reg.Unregister(c)
		}
	}
	m.cols = nil
}
