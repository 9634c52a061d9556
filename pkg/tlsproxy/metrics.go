package tlsproxy

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats is a snapshot of one proxy's counters, for the status command.
type Stats struct {
	Name     string `json:"name"`
	Mode     Mode   `json:"mode"`
	Listen   string `json:"listen"`
	Target   string `json:"target"`
	Running  bool   `json:"running"`
	Draining bool   `json:"draining"`
	// ConnectionsOpen counts connections accepted and not yet closed,
	// including those still in the handshake.
	ConnectionsOpen int64 `json:"connections_open"`
	// ConnectionsTotal counts connections accepted (refused ones excluded).
	ConnectionsTotal uint64 `json:"connections_total"`
	// ConnectionsRefused counts connections reset because MaxConns was reached.
	ConnectionsRefused uint64 `json:"connections_refused"`
	// HandshakeFailures counts failed handshakes by Cause; every cause is present.
	HandshakeFailures map[Cause]uint64 `json:"handshake_failures"`
	// HandshakesResumed counts successful handshakes that resumed a TLS
	// session instead of a full handshake.
	HandshakesResumed uint64 `json:"handshakes_resumed"`
	// TargetDialFailures counts failed dials to the target.
	TargetDialFailures uint64 `json:"target_dial_failures"`
	// BytesToTarget and BytesFromTarget count plaintext payload bytes (in
	// HTTP mode: the HTTP bytes exchanged with the client, before the
	// request is rewritten for the target).
	BytesToTarget   uint64 `json:"bytes_to_target"`
	BytesFromTarget uint64 `json:"bytes_from_target"`
	// BulkBufferBytes is the memory held right now in large relay buffers
	// by bulk streams; it never exceeds the WithBulkBufferBudget budget.
	BulkBufferBytes int64 `json:"bulk_buffer_bytes"`
}

type counters struct {
	open       atomic.Int64
	total      atomic.Uint64
	refused    atomic.Uint64
	handshake  [len(allCauses)]atomic.Uint64
	dialFail   atomic.Uint64
	toTarget   atomic.Uint64
	fromTarget atomic.Uint64
	resumed    atomic.Uint64
}

// collector exposes the counters to Prometheus at scrape time, so the
// data path only touches atomics.
type collector struct {
	c     *counters
	bufs  *bufPool
	descs struct {
		open, total, refused, handshake, resumed, dialFail, bytes, bulkBufs *prometheus.Desc
	}
}

func newCollector(name string, c *counters, bufs *bufPool) *collector {
	labels := prometheus.Labels{"proxy": name}
	col := &collector{c: c, bufs: bufs}
	col.descs.open = prometheus.NewDesc("identity_agent_proxy_connections_open",
		"Connections currently open, including those in the TLS handshake.", nil, labels)
	col.descs.total = prometheus.NewDesc("identity_agent_proxy_connections_total",
		"Connections accepted.", nil, labels)
	col.descs.refused = prometheus.NewDesc("identity_agent_proxy_connections_refused_total",
		"Connections reset at once because max_conns was reached.", nil, labels)
	col.descs.handshake = prometheus.NewDesc("identity_agent_proxy_handshake_failures_total",
		"Failed or rejected TLS handshakes by cause.", []string{"cause"}, labels)
	col.descs.resumed = prometheus.NewDesc("identity_agent_proxy_handshakes_resumed_total",
		"Successful TLS handshakes that resumed a session.", nil, labels)
	col.descs.dialFail = prometheus.NewDesc("identity_agent_proxy_target_dial_failures_total",
		"Failed connection attempts to the target.", nil, labels)
	col.descs.bytes = prometheus.NewDesc("identity_agent_proxy_bytes_total",
		"Payload bytes moved, by direction (to_target, from_target).", []string{"direction"}, labels)
	col.descs.bulkBufs = prometheus.NewDesc("identity_agent_proxy_bulk_buffer_bytes",
		"Memory held in large relay buffers by bulk streams now (bounded by the proxy's bulk buffer budget).", nil, labels)
	return col
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- col.descs.open
	ch <- col.descs.total
	ch <- col.descs.refused
	ch <- col.descs.handshake
	ch <- col.descs.resumed
	ch <- col.descs.dialFail
	ch <- col.descs.bytes
	ch <- col.descs.bulkBufs
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	c := col.c
	ch <- prometheus.MustNewConstMetric(col.descs.open, prometheus.GaugeValue, float64(c.open.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.total, prometheus.CounterValue, float64(c.total.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.refused, prometheus.CounterValue, float64(c.refused.Load()))
	for i, cause := range allCauses {
		ch <- prometheus.MustNewConstMetric(col.descs.handshake, prometheus.CounterValue, float64(c.handshake[i].Load()), string(cause))
	}
	ch <- prometheus.MustNewConstMetric(col.descs.resumed, prometheus.CounterValue, float64(c.resumed.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.dialFail, prometheus.CounterValue, float64(c.dialFail.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.bytes, prometheus.CounterValue, float64(c.toTarget.Load()), "to_target")
	ch <- prometheus.MustNewConstMetric(col.descs.bytes, prometheus.CounterValue, float64(c.fromTarget.Load()), "from_target")
	ch <- prometheus.MustNewConstMetric(col.descs.bulkBufs, prometheus.GaugeValue, float64(col.bufs.largeBytesInUse()))
}
