package tlsproxy

import (
	"crypto/x509"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// An authenticated connection is closed by the proxy itself, rather than
// by either end, in two cases: Update narrowed the allow list and its peer
// (the certificate it handshook with) is no longer allowed, or it reached
// MaxConnLifetime. A TCP-mode connection has no request boundary and is
// closed at once. An HTTP-mode connection finishes the request it is
// serving, bounded by DrainTimeout, and is closed as soon as it is idle; a
// request that arrives after the peer was revoked is answered 403 and
// never reaches the target.

// endReason says why the proxy closes an authenticated connection.
type endReason int

const (
	endNone     endReason = iota
	endRevoked            // Update removed the peer from the allow list
	endLifetime           // MaxConnLifetime reached
	numEndReasons
)

var endReasonNames = [numEndReasons]string{"", "revoked", "max_conn_lifetime"}

func (r endReason) String() string { return endReasonNames[r] }

// authorizedNow re-runs the authorizer in force on the certificates the
// peer handshook with: a peer that has rotated its SVID since is judged
// by the one this connection carries.
func authorizedNow(rt *runtimeConfig, t *tracked) bool {
	return rt.authz.Authorize(t.peer, [][]*x509.Certificate{t.peerCerts}) == nil
}

// reauthorize closes the established connections whose peer rt's allow
// list no longer accepts, and returns how many.
func (p *Proxy) reauthorize(rt *runtimeConfig) int {
	var revoked []*tracked
	p.mu.Lock()
	for t := range p.conns {
		if t.peerCerts != nil && !authorizedNow(rt, t) {
			revoked = append(revoked, t)
		}
	}
	p.mu.Unlock()
	for _, t := range revoked {
		p.endConn(t, endRevoked)
	}
	return len(revoked)
}

// rearmLifetimes applies the MaxConnLifetime in force to every
// authenticated connection, counted from its handshake.
func (p *Proxy) rearmLifetimes() {
	var conns []*tracked
	p.mu.Lock()
	for t := range p.conns {
		if t.peerCerts != nil {
			conns = append(conns, t)
		}
	}
	p.mu.Unlock()
	for _, t := range conns {
		p.armLifetime(t)
	}
}

// armLifetime (re)starts t's lifetime timer from the MaxConnLifetime in
// force. It reads the setting under t.mu, so that it and an Update's
// rearmLifetimes cannot leave an older value armed.
func (p *Proxy) armLifetime(t *tracked) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lifeTimer != nil {
		t.lifeTimer.Stop()
		t.lifeTimer = nil
	}
	life := p.rt.Load().cfg.MaxConnLifetime
	if life <= 0 || t.released || t.cut {
		return
	}
	t.lifeTimer = time.AfterFunc(max(time.Until(t.since.Add(life)), 0), func() { p.endConn(t, endLifetime) })
}

// endConn closes an authenticated connection for reason: at once in TCP
// mode, after its request in flight (within DrainTimeout) in HTTP mode.
func (p *Proxy) endConn(t *tracked, reason endReason) {
	t.mu.Lock()
	if t.released || t.cut || t.ending == endRevoked || t.ending == reason {
		t.mu.Unlock()
		return
	}
	t.ending = reason
	hc, busy := t.hc, t.hstate == http.StateActive
	drain := p.rt.Load().cfg.DrainTimeout
	if hc != nil && busy {
		if t.drainTimer != nil {
			t.drainTimer.Stop()
		}
		t.drainTimer = time.AfterFunc(drain, t.forceClose)
	}
	t.mu.Unlock()

	p.stats.ended[reason].Add(1)
	fields := []zap.Field{zap.String("peer_addr", t.peerAddr), zap.String("peer_id", t.peer.String()),
		zap.String("cause", reason.String())}
	switch {
	case hc != nil && busy:
		fields = append(fields, zap.Duration("drain_timeout", drain))
	case hc != nil:
		_ = hc.Close()
	default:
		t.forceClose()
	}
	if reason == endRevoked {
		p.log.Warn("established connection closed: peer no longer allowed", fields...)
	} else {
		p.log.Info("established connection closed: max_conn_lifetime reached", fields...)
	}
}

// httpState records the HTTP server's view of t (http.Server.ConnState)
// and closes t when it turns idle after endConn.
func (t *tracked) httpState(hc *httpConn, s http.ConnState) {
	t.mu.Lock()
	t.hstate = s
	closeNow := s == http.StateIdle && t.ending != endNone
	t.mu.Unlock()
	if closeNow {
		_ = hc.Close()
	}
}

// endingReason is why the proxy is closing t, or endNone.
func (t *tracked) endingReason() endReason {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ending
}

// stopTimers ends t's lifetime and drain timers; called once, from release.
func (t *tracked) stopTimers() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.released = true
	for _, tm := range []*time.Timer{t.lifeTimer, t.drainTimer} {
		if tm != nil {
			tm.Stop()
		}
	}
}
