package tlsproxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/identity-agent/identity-agent/pkg/mtls"
)

// Mode says which side of the proxy speaks mTLS.
type Mode string

const (
	// ModeServer accepts mTLS connections and forwards plaintext to a local target.
	ModeServer Mode = "server"
	// ModeClient accepts local plaintext connections and forwards them over mTLS.
	ModeClient Mode = "client"
)

// Defaults applied by New when a Config field is zero. They are sized so
// that 1,000 idle attackers holding connections open (from one address or
// from many) leave authorized clients served; see docs/PROXY.md.
const (
	// DefaultMaxConns bounds authenticated connections.
	DefaultMaxConns = 1024
	// DefaultMaxHandshakes bounds connections still in the TLS handshake:
	// above 1,000 idle attackers, so that they wait out the handshake
	// deadline instead of pushing each other out at the rate they reconnect.
	DefaultMaxHandshakes = 2048
	// DefaultMaxHandshakesPerSource bounds one source address's share of
	// the handshake pool: a client proxy under heavy connection churn
	// (wrk -c50 with Connection: close) stays well below it.
	DefaultMaxHandshakesPerSource = 256
	// DefaultHandshakeTimeout: a TLS 1.3 handshake takes one round trip,
	// so 5 s is generous even across continents.
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultConnectTimeout   = 5 * time.Second
	DefaultDrainTimeout     = 30 * time.Second
	// MinConnLifetime is the smallest non-zero MaxConnLifetime: below it
	// every client would reconnect continuously.
	MinConnLifetime = time.Second
)

// Config describes one proxy. Addresses are "host:port" for TCP or
// "unix:///abs/path" for a unix socket.
type Config struct {
	// Name identifies the proxy in errors, logs, metrics and Stats.
	Name string
	Mode Mode
	// Listen is where the proxy accepts connections: mTLS in server mode,
	// plaintext in client mode. With WithListener it may be empty (it is
	// then the listener's address).
	Listen string
	// Target is where accepted connections are forwarded: plaintext in
	// server mode, mTLS in client mode.
	Target string
	// Authorizer decides which verified peers are accepted (clients in
	// server mode, the server in client mode); its String is shown in logs.
	// Set it or Allow, not both.
	Authorizer mtls.Authorizer
	// Allow is the short way to set Authorizer: the peer SPIFFE IDs that
	// are accepted, as mtls.ParseAllow reads them (an ID, a prefix "/*" or
	// a trust domain).
	Allow []string
	// HTTP turns a server-mode proxy into an HTTP/1.1 reverse proxy that
	// passes the verified peer identity to the target in the
	// X-Forwarded-Client-Cert header and strips any incoming copy; the
	// target reads it with package xfcc.
	HTTP bool
	// RewriteHost (HTTP mode) sends the target's address as the Host
	// header, keeping the caller's in X-Forwarded-Host: for backends that
	// refuse a non-local Host, as Ollama does on loopback.
	RewriteHost bool

	// MaxConns bounds concurrent authenticated connections: those whose
	// TLS handshake succeeded and whose peer is allowed. While it is
	// reached, new connections are reset at once, before any handshake.
	MaxConns int
	// MaxHandshakes bounds connections still in the TLS handshake, apart
	// from MaxConns. When it is full, the oldest of them is closed to make
	// room for the newcomer (one that has sent nothing yet first), so
	// strangers cannot hold the door shut; see docs/PROXY.md.
	MaxHandshakes int
	// MaxHandshakesPerSource bounds the handshakes of one source address
	// (an IPv4 address or an IPv6 /64) in server mode; a source at its
	// cap makes room by losing its own oldest handshake. Client mode
	// accepts local callers only and has no per-source cap.
	MaxHandshakesPerSource int
	// HandshakeTimeout bounds the TLS handshake (both modes).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection after no byte moved in either
	// direction for this long.
	IdleTimeout time.Duration
	// ConnectTimeout bounds dialing the target.
	ConnectTimeout time.Duration
	// DrainTimeout bounds Shutdown when its context has no earlier
	// deadline, and how long an HTTP-mode connection that must close (its
	// peer revoked by Update, or MaxConnLifetime reached) may finish the
	// request it is serving.
	DrainTimeout time.Duration
	// MaxConnLifetime closes an authenticated connection this long after
	// its handshake, whatever it is doing (in HTTP mode after the request
	// in flight, within DrainTimeout), so that no peer rides one
	// handshake's verdict forever. Zero (the default) means no limit.
	MaxConnLifetime time.Duration

	// UnsafeAllowNonLoopbackPlaintext permits the plaintext side (target in
	// server mode, listen in client mode) to be something other than a
	// loopback address or a unix socket.
	UnsafeAllowNonLoopbackPlaintext bool
}

// addr is a parsed listen or target address.
type addr struct {
	network string // "tcp" or "unix"
	address string // host:port or socket path
}

func (a addr) String() string {
	if a.network == "unix" {
		return "unix://" + a.address
	}
	return a.address
}

// parseAddr accepts "host:port", "[v6]:port" and "unix:///abs/path".
func parseAddr(s string) (addr, error) {
	if s == "" {
		return addr{}, errors.New("empty address")
	}
	if rest, ok := strings.CutPrefix(s, "unix://"); ok {
		if !filepath.IsAbs(rest) {
			return addr{}, fmt.Errorf("%q: unix socket path must be absolute (unix:///path)", s)
		}
		return addr{network: "unix", address: filepath.Clean(rest)}, nil
	}
	if strings.Contains(s, "://") {
		return addr{}, fmt.Errorf("%q: want host:port or unix:///path", s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return addr{}, fmt.Errorf("%q: %w", s, err)
	}
	if port == "" {
		return addr{}, fmt.Errorf("%q: missing port", s)
	}
	return addr{network: "tcp", address: net.JoinHostPort(host, port)}, nil
}

// isLoopback reports whether a is a unix socket or a loopback TCP address.
// Host names other than "localhost" are refused: what they resolve to can
// change after validation.
func (a addr) isLoopback() bool {
	if a.network == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(a.address)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// normalized returns cfg with defaults filled in and its addresses parsed,
// or Validate's error prefixed with the proxy's name.
func (cfg Config) normalized() (Config, addr, addr, error) {
	if err := cfg.Validate(); err != nil {
		return Config{}, addr{}, addr{}, fmt.Errorf("proxy %q: %w", cfg.Name, err)
	}
	listen, _ := parseAddr(cfg.Listen)
	target, _ := parseAddr(cfg.Target)
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.HandshakeTimeout, DefaultHandshakeTimeout},
		{&cfg.IdleTimeout, DefaultIdleTimeout},
		{&cfg.ConnectTimeout, DefaultConnectTimeout},
		{&cfg.DrainTimeout, DefaultDrainTimeout},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	for _, n := range []struct {
		v   *int
		def int
	}{
		{&cfg.MaxConns, DefaultMaxConns},
		{&cfg.MaxHandshakes, DefaultMaxHandshakes},
		{&cfg.MaxHandshakesPerSource, DefaultMaxHandshakesPerSource},
	} {
		if *n.v == 0 {
			*n.v = n.def
		}
	}
	// A per-source cap above the pool would never apply; keeping it
	// within makes Stats show the limit that is in force.
	cfg.MaxHandshakesPerSource = min(cfg.MaxHandshakesPerSource, cfg.MaxHandshakes)
	return cfg, listen, target, nil
}

// errAllowAndAuthorizer: two sources of one decision would leave the
// reader guessing which one is in force.
var errAllowAndAuthorizer = errors.New("set either Allow or Authorizer, not both")

// EffectiveAuthorizer returns the authorizer in force: Authorizer, or the
// one mtls.ParseAllow builds from Allow. Setting both, or neither, is an
// error.
func (cfg Config) EffectiveAuthorizer() (mtls.Authorizer, error) {
	switch {
	case cfg.Authorizer != nil && len(cfg.Allow) > 0:
		return nil, errAllowAndAuthorizer
	case cfg.Authorizer != nil:
		return cfg.Authorizer, nil
	}
	a, err := mtls.ParseAllow(cfg.Allow)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// PolicyFingerprint identifies the authorization policy in force
// (mtls.Fingerprint of EffectiveAuthorizer), so that a caller can record
// it and tell an edited allow list or policy file from an unchanged one.
// A config whose authorizer does not build gets a fingerprint of what was
// given, prefixed "invalid:".
func (cfg Config) PolicyFingerprint() string {
	if a, err := cfg.EffectiveAuthorizer(); err == nil {
		return mtls.Fingerprint(a)
	}
	return "invalid:" + mtls.Fingerprint(cfg.Authorizer) + "\x00" + strings.Join(cfg.Allow, "\x00")
}

// Equal reports whether cfg and other describe the same proxy: every
// field equal, and the authorizers equal by content (PolicyFingerprint),
// so an allow list given as Allow equals the same list given as
// Authorizer, and an edited allow list or policy is a change. Defaults are
// not applied: a zero field and its default differ.
func (cfg Config) Equal(other Config) bool {
	a, b := cfg, other
	// A new field must be added here; TestConfigEqualCoversEveryField
	// fails until it is.
	return a.Name == b.Name && a.Mode == b.Mode && a.Listen == b.Listen && a.Target == b.Target &&
		a.HTTP == b.HTTP && a.RewriteHost == b.RewriteHost &&
		a.MaxConns == b.MaxConns && a.MaxHandshakes == b.MaxHandshakes && a.MaxHandshakesPerSource == b.MaxHandshakesPerSource &&
		a.HandshakeTimeout == b.HandshakeTimeout && a.IdleTimeout == b.IdleTimeout && a.ConnectTimeout == b.ConnectTimeout &&
		a.DrainTimeout == b.DrainTimeout && a.MaxConnLifetime == b.MaxConnLifetime &&
		a.UnsafeAllowNonLoopbackPlaintext == b.UnsafeAllowNonLoopbackPlaintext &&
		a.PolicyFingerprint() == b.PolicyFingerprint()
}
