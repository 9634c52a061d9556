package tlsproxy

import (
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// Update changes a proxy in place, running or not: connections accepted
// from now on use cfg's allow list (or Authorizer), limits, timeouts and
// target. Established connections keep their target and timeouts, but not
// their authorization: when the policy changes (its mtls.Fingerprint), the
// new one is re-run on the certificate each established peer handshook
// with, and those no longer allowed are closed (TCP mode at once; HTTP
// mode after the request in flight, within DrainTimeout). A changed
// MaxConnLifetime applies to established connections too, counted from
// their handshake. Lowered limits apply to admission only: nothing open
// is closed to meet them. Session tickets issued before the update are not
// resumed, so every peer is verified against the new policy with a full
// handshake.
//
// In HTTP mode each request (not connection) goes to the target in force
// when it arrives.
//
// Name, Mode, Listen (empty keeps the current one) and HTTP cannot
// change: a proxy on another address is a new proxy (start it, then
// Shutdown this one to drain). An invalid cfg changes nothing and the
// error names the field.
func (p *Proxy) Update(cfg Config) error {
	p.updMu.Lock()
	defer p.updMu.Unlock()
	old := p.rt.Load()
	if cfg.Listen == "" {
		cfg.Listen = old.cfg.Listen
	}
	fail := func(field string, err error) error {
		return fmt.Errorf("proxy %q: update: %s: %w", p.name, field, err)
	}
	switch {
	case cfg.Name != p.name:
		return fail("name", fmt.Errorf("%q: a proxy keeps its name (start a new proxy instead)", cfg.Name))
	case cfg.Mode != p.mode:
		return fail("mode", fmt.Errorf("%q: a proxy keeps its mode (start a new proxy instead)", cfg.Mode))
	case cfg.HTTP != old.cfg.HTTP:
		return fail("http", errors.New("turning HTTP mode on or off needs a new proxy"))
	}
	rt, listen, err := p.build(cfg)
	if err != nil {
		return err
	}
	if listen != p.listen && !p.boundTo(listen) {
		return fail("listen", fmt.Errorf("%s: a new address needs a new proxy (start it, then Shutdown this one to drain)", listen))
	}
	p.mu.Lock()
	running, stopped := p.running, p.stopped
	p.mu.Unlock()
	if stopped {
		return fail("proxy", errors.New("already shut down"))
	}
	if running {
		rt = p.fitted(rt)
	}
	p.rt.Store(rt)
	p.adm.setLimits(rt.lim)
	if p.http != nil && rt.target != old.target {
		// Idle upstream connections lead to the old target.
		p.http.transport.CloseIdleConnections()
	}
	revoked := 0
	if old.policy != rt.policy {
		revoked = p.reauthorize(rt)
	}
	if old.cfg.MaxConnLifetime != rt.cfg.MaxConnLifetime {
		p.rearmLifetimes()
	}
	p.log.Info("proxy updated", zap.Strings("changed", changedFields(old.cfg, rt.cfg)), zap.Int("revoked_connections", revoked),
		zap.String("target", rt.target.String()), zap.String("authorizer", rt.authz.String()),
		zap.Int("max_conns", rt.lim.maxConns), zap.Int("max_handshakes", rt.lim.maxHandshakes))
	return nil
}

// changedFields names the config fields (as in YAML) that differ.
func changedFields(a, b Config) []string {
	var out []string
	add := func(changed bool, name string) {
		if changed {
			out = append(out, name)
		}
	}
	add(a.Target != b.Target, "target")
	add(a.PolicyFingerprint() != b.PolicyFingerprint(), "allow")
	add(a.RewriteHost != b.RewriteHost, "rewrite_host")
	add(a.MaxConns != b.MaxConns, "max_conns")
	add(a.MaxHandshakes != b.MaxHandshakes, "max_handshakes")
	add(a.MaxHandshakesPerSource != b.MaxHandshakesPerSource, "max_handshakes_per_source")
	add(a.HandshakeTimeout != b.HandshakeTimeout, "handshake_timeout")
	add(a.IdleTimeout != b.IdleTimeout, "idle_timeout")
	add(a.ConnectTimeout != b.ConnectTimeout, "connect_timeout")
	add(a.DrainTimeout != b.DrainTimeout, "drain_timeout")
	add(a.MaxConnLifetime != b.MaxConnLifetime, "max_conn_lifetime")
	add(a.UnsafeAllowNonLoopbackPlaintext != b.UnsafeAllowNonLoopbackPlaintext, "unsafe_allow_non_loopback_plaintext")
	return out
}

// boundTo reports whether the proxy's listener is at a, so that an
// update may name the port a ":0" listen address was given.
func (p *Proxy) boundTo(a addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ln != nil && a.network == p.listen.network && a.address == p.ln.Addr().String()
}
