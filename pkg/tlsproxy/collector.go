package tlsproxy

import "github.com/prometheus/client_golang/prometheus"

// StatsCollector exports, at scrape time, the metrics WithRegisterer would
// register for each proxy whose Stats stats returns, with the same names
// and the proxy="<name>" label. A program that replaces proxies (a
// configuration reload) registers it once and lets stats return the
// proxies in force, instead of registering and unregistering each proxy's
// metrics: a proxy and the one replacing it may share a name.
type StatsCollector struct {
	stats func() []Stats
	descs descs
}

// NewStatsCollector returns the collector over what stats returns; stats
// is called on every scrape and must be safe for concurrent use.
func NewStatsCollector(stats func() []Stats) *StatsCollector {
	return &StatsCollector{stats: stats, descs: newDescs([]string{"proxy"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *StatsCollector) Describe(ch chan<- *prometheus.Desc) { c.descs.describe(ch) }

// Collect implements prometheus.Collector.
func (c *StatsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		c.descs.collect(ch, s, s.Name)
	}
}

// descs are the proxy metrics' descriptions: proxy is either a constant
// label (one proxy's collector) or the first variable label.
type descs struct {
	open, handshaking, authenticated, limit, shed, ended                   *prometheus.Desc
	total, refused, handshake, retries, resumed, dialFail, bytes, bulkBufs *prometheus.Desc
}

func newDescs(vars []string, constLabels prometheus.Labels) descs {
	with := func(more ...string) []string { return append(append([]string(nil), vars...), more...) }
	return descs{
		open: prometheus.NewDesc("identity_agent_proxy_connections_open",
			"Connections currently open, including those in the TLS handshake.", with(), constLabels),
		handshaking: prometheus.NewDesc("identity_agent_proxy_connections_handshaking",
			"Connections accepted and not yet authenticated (the handshake pool).", with(), constLabels),
		authenticated: prometheus.NewDesc("identity_agent_proxy_connections_authenticated",
			"Authenticated connections (bounded by max_conns).", with(), constLabels),
		limit: prometheus.NewDesc("identity_agent_proxy_limit",
			"Admission limits in force (after fitting RLIMIT_NOFILE), by limit: max_conns, max_handshakes, max_handshakes_per_source.", with("limit"), constLabels),
		shed: prometheus.NewDesc("identity_agent_proxy_handshakes_shed_total",
			"Handshaking connections closed to admit newer ones, by reason: pool_full, source_cap.", with("reason"), constLabels),
		ended: prometheus.NewDesc("identity_agent_proxy_connections_ended_total",
			"Authenticated connections the proxy closed, by cause: revoked (a reload removed the peer from allow), max_conn_lifetime.", with("cause"), constLabels),
		total: prometheus.NewDesc("identity_agent_proxy_connections_total",
			"Connections accepted.", with(), constLabels),
		refused: prometheus.NewDesc("identity_agent_proxy_connections_refused_total",
			"Connections reset because max_conns authenticated connections were open.", with(), constLabels),
		handshake: prometheus.NewDesc("identity_agent_proxy_handshake_failures_total",
			"Failed or rejected TLS handshakes by cause.", with("cause"), constLabels),
		retries: prometheus.NewDesc("identity_agent_proxy_handshake_retries_total",
			"Client-mode handshakes retried once after failing on trust (unknown_ca, peer_rejected).", with(), constLabels),
		resumed: prometheus.NewDesc("identity_agent_proxy_handshakes_resumed_total",
			"Successful TLS handshakes that resumed a session.", with(), constLabels),
		dialFail: prometheus.NewDesc("identity_agent_proxy_target_dial_failures_total",
			"Failed connection attempts to the target.", with(), constLabels),
		bytes: prometheus.NewDesc("identity_agent_proxy_bytes_total",
			"Payload bytes moved, by direction (to_target, from_target).", with("direction"), constLabels),
		bulkBufs: prometheus.NewDesc("identity_agent_proxy_bulk_buffer_bytes",
			"Memory held in large relay buffers by bulk streams now (bounded by the proxy's bulk buffer budget).", with(), constLabels),
	}
}

func (d descs) describe(ch chan<- *prometheus.Desc) {
	for _, x := range []*prometheus.Desc{d.open, d.handshaking, d.authenticated, d.limit, d.shed, d.ended, d.total,
		d.refused, d.handshake, d.resumed, d.retries, d.dialFail, d.bytes, d.bulkBufs} {
		ch <- x
	}
}

// collect sends s's metrics; vals are the variable labels' values before
// each metric's own (the proxy's name, for StatsCollector).
func (d descs) collect(ch chan<- prometheus.Metric, s Stats, vals ...string) {
	gauge := func(desc *prometheus.Desc, v float64, more ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, append(append([]string(nil), vals...), more...)...)
	}
	counter := func(desc *prometheus.Desc, v uint64, more ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), append(append([]string(nil), vals...), more...)...)
	}
	gauge(d.open, float64(s.ConnectionsOpen))
	gauge(d.handshaking, float64(s.ConnectionsHandshaking))
	gauge(d.authenticated, float64(s.ConnectionsAuthenticated))
	gauge(d.limit, float64(s.MaxConns), "max_conns")
	gauge(d.limit, float64(s.MaxHandshakes), "max_handshakes")
	gauge(d.limit, float64(s.MaxHandshakesPerSource), "max_handshakes_per_source")
	for r := range numShedReasons {
		counter(d.shed, s.HandshakesShed[r.String()], r.String())
	}
	counter(d.ended, s.ConnectionsRevoked, endRevoked.String())
	counter(d.ended, s.ConnectionsLifetimeEnded, endLifetime.String())
	counter(d.total, s.ConnectionsTotal)
	counter(d.refused, s.ConnectionsRefused)
	for _, cause := range allCauses {
		counter(d.handshake, s.HandshakeFailures[cause], string(cause))
	}
	counter(d.resumed, s.HandshakesResumed)
	counter(d.retries, s.HandshakeRetries)
	counter(d.dialFail, s.TargetDialFailures)
	counter(d.bytes, s.BytesToTarget, "to_target")
	counter(d.bytes, s.BytesFromTarget, "from_target")
	gauge(d.bulkBufs, float64(s.BulkBufferBytes))
}
