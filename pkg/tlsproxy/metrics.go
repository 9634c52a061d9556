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

// collector exposes one proxy's Stats to Prometheus at scrape time (the
// data path only touches atomics), labelled proxy="<name>" as a constant
// label; StatsCollector is the same for several proxies.
type collector struct {
	p     *Proxy
	descs descs
}

func newCollector(name string, p *Proxy) *collector {
	return &collector{p: p, descs: newDescs(nil, prometheus.Labels{"proxy": name})}
}

func (col *collector) Describe(ch chan<- *prometheus.Desc) { col.descs.describe(ch) }

func (col *collector) Collect(ch chan<- prometheus.Metric) { col.descs.collect(ch, col.p.Stats()) }
