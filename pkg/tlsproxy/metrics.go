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
	// Authorizer describes who may connect (the String of the authorizer
	// in force: "allow spiffe://…, …" for an allow list).
	Authorizer string `json:"authorizer"`
	// MaxConns, MaxHandshakes and MaxHandshakesPerSource are the limits in
	// force: the configured ones, lowered if RLIMIT_NOFILE cannot hold them.
	MaxConns               int `json:"max_conns"`
	MaxHandshakes          int `json:"max_handshakes"`
	MaxHandshakesPerSource int `json:"max_handshakes_per_source"`
	// ConnectionsOpen counts connections accepted and not yet closed:
	// ConnectionsHandshaking plus ConnectionsAuthenticated, plus those
	// between the two stages or closing.
	ConnectionsOpen int64 `json:"connections_open"`
	// ConnectionsHandshaking counts connections in the handshake pool.
	ConnectionsHandshaking int64 `json:"connections_handshaking"`
	// ConnectionsAuthenticated counts connections holding one of MaxConns.
	ConnectionsAuthenticated int64 `json:"connections_authenticated"`
	// ConnectionsTotal counts connections accepted (refused ones excluded).
	ConnectionsTotal uint64 `json:"connections_total"`
	// ConnectionsRefused counts connections reset because MaxConns
	// authenticated connections were open.
	ConnectionsRefused uint64 `json:"connections_refused"`
	// ConnectionsRevoked counts authenticated connections the proxy closed
	// because an Update removed their peer from the allow list.
	ConnectionsRevoked uint64 `json:"connections_revoked"`
	// ConnectionsLifetimeEnded counts authenticated connections closed at
	// MaxConnLifetime.
	ConnectionsLifetimeEnded uint64 `json:"connections_lifetime_ended"`
	// HandshakesShed counts handshaking connections closed to admit newer
	// ones, by reason: "pool_full" (MaxHandshakes) and "source_cap"
	// (MaxHandshakesPerSource). Both keys are always present.
	HandshakesShed map[string]uint64 `json:"handshakes_shed"`
	// HandshakeFailures counts failed handshakes by Cause; every cause is present.
	HandshakeFailures map[Cause]uint64 `json:"handshake_failures"`
	// HandshakeRetries counts client-mode handshakes tried a second time
	// after failing on trust (unknown_ca, peer_rejected): a CA switch that
	// reached one peer before the other. Each failure is also counted in
	// HandshakeFailures and logged with the peer.
	HandshakeRetries uint64 `json:"handshake_retries"`
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
	shed       [numShedReasons]atomic.Uint64
	ended      [numEndReasons]atomic.Uint64
	handshake  [len(allCauses)]atomic.Uint64
	dialFail   atomic.Uint64
	toTarget   atomic.Uint64
	fromTarget atomic.Uint64
	resumed    atomic.Uint64
	retries    atomic.Uint64
}

// collector exposes the counters to Prometheus at scrape time, so the
// data path only touches atomics.
type collector struct {
	c     *counters
	bufs  *bufPool
	adm   *admission
	descs struct {
		open, handshaking, authenticated, limit, shed, ended                   *prometheus.Desc
		total, refused, handshake, retries, resumed, dialFail, bytes, bulkBufs *prometheus.Desc
	}
}

func newCollector(name string, p *Proxy) *collector {
	labels := prometheus.Labels{"proxy": name}
	col := &collector{c: &p.stats, bufs: p.bufs, adm: p.adm}
	col.descs.open = prometheus.NewDesc("identity_agent_proxy_connections_open",
		"Connections currently open, including those in the TLS handshake.", nil, labels)
	col.descs.handshaking = prometheus.NewDesc("identity_agent_proxy_connections_handshaking",
		"Connections accepted and not yet authenticated (the handshake pool).", nil, labels)
	col.descs.authenticated = prometheus.NewDesc("identity_agent_proxy_connections_authenticated",
		"Authenticated connections (bounded by max_conns).", nil, labels)
	col.descs.limit = prometheus.NewDesc("identity_agent_proxy_limit",
		"Admission limits in force (after fitting RLIMIT_NOFILE), by limit: max_conns, max_handshakes, max_handshakes_per_source.", []string{"limit"}, labels)
	col.descs.shed = prometheus.NewDesc("identity_agent_proxy_handshakes_shed_total",
		"Handshaking connections closed to admit newer ones, by reason: pool_full, source_cap.", []string{"reason"}, labels)
	col.descs.ended = prometheus.NewDesc("identity_agent_proxy_connections_ended_total",
		"Authenticated connections the proxy closed, by cause: revoked (a reload removed the peer from allow), max_conn_lifetime.", []string{"cause"}, labels)
	col.descs.total = prometheus.NewDesc("identity_agent_proxy_connections_total",
		"Connections accepted.", nil, labels)
	col.descs.refused = prometheus.NewDesc("identity_agent_proxy_connections_refused_total",
		"Connections reset because max_conns authenticated connections were open.", nil, labels)
	col.descs.handshake = prometheus.NewDesc("identity_agent_proxy_handshake_failures_total",
		"Failed or rejected TLS handshakes by cause.", []string{"cause"}, labels)
	col.descs.retries = prometheus.NewDesc("identity_agent_proxy_handshake_retries_total",
		"Client-mode handshakes retried once after failing on trust (unknown_ca, peer_rejected).", nil, labels)
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
	ch <- col.descs.handshaking
	ch <- col.descs.authenticated
	ch <- col.descs.limit
	ch <- col.descs.shed
	ch <- col.descs.ended
	ch <- col.descs.total
	ch <- col.descs.refused
	ch <- col.descs.handshake
	ch <- col.descs.resumed
	ch <- col.descs.retries
	ch <- col.descs.dialFail
	ch <- col.descs.bytes
	ch <- col.descs.bulkBufs
}

func (col *collector) Collect(ch chan<- prometheus.Metric) {
	c := col.c
	ch <- prometheus.MustNewConstMetric(col.descs.open, prometheus.GaugeValue, float64(c.open.Load()))
	hs, authed, lim := col.adm.counts()
	ch <- prometheus.MustNewConstMetric(col.descs.handshaking, prometheus.GaugeValue, float64(hs))
	ch <- prometheus.MustNewConstMetric(col.descs.authenticated, prometheus.GaugeValue, float64(authed))
	ch <- prometheus.MustNewConstMetric(col.descs.limit, prometheus.GaugeValue, float64(lim.maxConns), "max_conns")
	ch <- prometheus.MustNewConstMetric(col.descs.limit, prometheus.GaugeValue, float64(lim.maxHandshakes), "max_handshakes")
	ch <- prometheus.MustNewConstMetric(col.descs.limit, prometheus.GaugeValue, float64(lim.perSource), "max_handshakes_per_source")
	for r := range numShedReasons {
		ch <- prometheus.MustNewConstMetric(col.descs.shed, prometheus.CounterValue, float64(c.shed[r].Load()), r.String())
	}
	for r := endRevoked; r < numEndReasons; r++ {
		ch <- prometheus.MustNewConstMetric(col.descs.ended, prometheus.CounterValue, float64(c.ended[r].Load()), r.String())
	}
	ch <- prometheus.MustNewConstMetric(col.descs.total, prometheus.CounterValue, float64(c.total.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.refused, prometheus.CounterValue, float64(c.refused.Load()))
	for i, cause := range allCauses {
		ch <- prometheus.MustNewConstMetric(col.descs.handshake, prometheus.CounterValue, float64(c.handshake[i].Load()), string(cause))
	}
	ch <- prometheus.MustNewConstMetric(col.descs.resumed, prometheus.CounterValue, float64(c.resumed.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.retries, prometheus.CounterValue, float64(c.retries.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.dialFail, prometheus.CounterValue, float64(c.dialFail.Load()))
	ch <- prometheus.MustNewConstMetric(col.descs.bytes, prometheus.CounterValue, float64(c.toTarget.Load()), "to_target")
	ch <- prometheus.MustNewConstMetric(col.descs.bytes, prometheus.CounterValue, float64(c.fromTarget.Load()), "from_target")
	ch <- prometheus.MustNewConstMetric(col.descs.bulkBufs, prometheus.GaugeValue, float64(col.bufs.largeBytesInUse()))
}
