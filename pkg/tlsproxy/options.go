package tlsproxy

import (
	"crypto/tls"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Option configures a Proxy (go-spiffe style functional options).
type Option func(*options)

type options struct {
	log        *zap.Logger
	reg        prometheus.Registerer
	noResume   bool
	curves     []tls.CurveID
	bulkBudget int
	ln         net.Listener
	listenUnix func(path string) (net.Listener, error)
	fdLimit    func() (uint64, bool)
	fdBudget   int // 0: fit to RLIMIT_NOFILE less fdReserve
}

// WithLogger sets the logger (default: no-op). Rejected connections are
// logged at Warn, one line each.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithRegisterer registers the proxy's metrics, labelled proxy="<name>".
// Several proxies may share one registerer.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.reg = r }
}

// WithSessionResumption turns TLS session resumption on (the default) or
// off. Resumed sessions are verified and authorized like full handshakes
// and are bound to the SVID presented; turning it off costs a full
// handshake (two signatures and chain verifications) per connection.
func WithSessionResumption(enabled bool) Option {
	return func(o *options) { o.noResume = !enabled }
}

// WithCurvePreferences restricts the TLS key exchanges offered and
// accepted (tls.Config.CurvePreferences). The default is Go's: the
// post-quantum hybrid X25519MLKEM768 first, then classical curves. With
// resumption, the key exchange is most of a new connection's cost; a
// deployment that accepts classical-only forward secrecy between its own
// proxies can pass tls.X25519 to cut it by about a third.
func WithCurvePreferences(ids ...tls.CurveID) Option {
	return func(o *options) { o.curves = append([]tls.CurveID(nil), ids...) }
}

// WithBulkBufferBudget bounds the bytes of large (512 KiB) relay buffers
// the proxy's bulk streams may hold at once (default
// DefaultBulkBufferBudget). Streams beyond it use 64 KiB buffers; 0 turns
// large buffers off, for hosts where memory matters more than throughput.
func WithBulkBufferBudget(bytes int) Option {
	return func(o *options) { o.bulkBudget = max(bytes, 0) }
}

// WithListener makes the proxy serve on ln instead of listening on
// Config.Listen itself: a socket handed over by systemd, a listener a
// test made, or one bound by the caller's own rules. Config.Listen may
// then be empty; it defaults to ln's address. The proxy owns ln from
// Start on and closes it when it stops.
func WithListener(ln net.Listener) Option {
	return func(o *options) { o.ln = ln }
}

// WithUnixListener sets how Start listens on a "unix:///path" address.
// The proxy creates TCP listeners itself but never socket files: their
// mode, owner and what to do with a stale file are the caller's policy.
// Whoever can connect to a client-mode socket borrows this agent's
// identity, so listen should make the socket private before anyone can
// connect (identity-agent binds it at mode 0600 under a temporary name
// and renames it into place). Without this option or WithListener, a
// unix listen address is an error at Start.
func WithUnixListener(listen func(path string) (net.Listener, error)) Option {
	return func(o *options) { o.listenUnix = listen }
}

// withFDLimit replaces the RLIMIT_NOFILE lookup, for tests.
func withFDLimit(f func() (uint64, bool)) Option {
	return func(o *options) { o.fdLimit = f }
}
