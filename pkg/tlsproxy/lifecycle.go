package tlsproxy

import (
	"context"
	"fmt"

	"go.uber.org/zap"
)

// Shutdown stops accepting, waits for open connections to finish until ctx
// is done or DrainTimeout passes, then closes the rest and waits for every
// goroutine. It returns ctx's error if connections had to be cut.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if p.draining || p.stopped {
		p.mu.Unlock()
		return nil
	}
	if !p.running {
		// Never started: nothing to drain, but free the metric names and
		// a listener handed to us.
		p.stopped = true
		reserved := p.reserved
		p.reserved = nil
		p.mu.Unlock()
		if reserved != nil && reserved != p.opts.ln {
			_ = reserved.Close()
		}
		if p.opts.ln != nil {
			_ = p.opts.ln.Close()
		}
		p.mu.Lock()
		p.closeListenerSignalLocked()
		p.mu.Unlock()
		if p.col != nil {
			p.reg.Unregister(p.col)
		}
		return nil
	}
	// Stop accepting before anyone can see Draining: a caller that waits
	// for it (status, tests, an orchestrator) must find the port closed.
	_ = p.ln.Close()
	p.draining = true
	p.closeListenerSignalLocked()
	p.idle = make(chan struct{})
	if len(p.conns) == 0 {
		close(p.idle)
	}
	p.mu.Unlock()

	p.log.Info("proxy draining", zap.Int64("open", p.stats.open.Load()))
	ctx, cancel := context.WithTimeout(ctx, p.rt.Load().cfg.DrainTimeout)
	defer cancel()
	if p.http != nil {
		p.http.shutdown(ctx)
	}
	var err error
	select {
	case <-p.idle:
	case <-ctx.Done():
		err = ctx.Err()
		p.mu.Lock()
		n := len(p.conns)
		for t := range p.conns {
			t.forceClose()
		}
		p.mu.Unlock()
		if n > 0 {
			p.log.Warn("drain deadline reached, closing connections", zap.Int("closed", n))
		} else {
			err = nil
		}
	}
	p.cancel()
	if p.http != nil {
		p.http.close()
	}
	p.wg.Wait()
	if p.col != nil {
		p.reg.Unregister(p.col)
	}
	p.mu.Lock()
	p.running, p.stopped = false, true
	p.mu.Unlock()
	p.log.Info("proxy stopped")
	if err != nil {
		return fmt.Errorf("proxy %q: drain: %w", p.name, err)
	}
	return nil
}

// ListenerClosed returns a channel that is closed once Shutdown (or
// Close) has closed the proxy's listener: its address is free again, for
// a proxy that takes it over, while open connections may still drain. A
// proxy that never listened closes it when Shutdown finds nothing to close.
func (p *Proxy) ListenerClosed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lnClosed == nil {
		p.lnClosed = make(chan struct{})
		if p.draining || p.stopped {
			close(p.lnClosed)
		}
	}
	return p.lnClosed
}

// closeListenerSignalLocked closes ListenerClosed's channel; p.mu is held.
func (p *Proxy) closeListenerSignalLocked() {
	if p.lnClosed == nil {
		p.lnClosed = make(chan struct{})
	}
	select {
	case <-p.lnClosed:
	default:
		close(p.lnClosed)
	}
}

// Close stops the proxy at once: it closes the listener and every open
// connection, and returns when every goroutine has ended. Use Shutdown to
// let connections finish first.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Shutdown(ctx) // cutting connections is what Close is for
	return nil
}

// Stats returns a snapshot of the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	running, draining := p.running, p.draining
	listen := p.listen.String()
	if p.ln != nil && p.listen.network == "tcp" {
		listen = p.ln.Addr().String()
	}
	p.mu.Unlock()
	rt := p.rt.Load()
	hs, authed, lim := p.adm.counts()
	s := Stats{
		Name:                     p.name,
		Mode:                     p.mode,
		Listen:                   listen,
		Target:                   rt.target.String(),
		Authorizer:               rt.authz.String(),
		Running:                  running,
		Draining:                 draining,
		MaxConns:                 lim.maxConns,
		MaxHandshakes:            lim.maxHandshakes,
		MaxHandshakesPerSource:   lim.perSource,
		ConnectionsOpen:          p.stats.open.Load(),
		ConnectionsHandshaking:   int64(hs),
		ConnectionsAuthenticated: int64(authed),
		ConnectionsTotal:         p.stats.total.Load(),
		ConnectionsRefused:       p.stats.refused.Load(),
		ConnectionsRevoked:       p.stats.ended[endRevoked].Load(),
		ConnectionsLifetimeEnded: p.stats.ended[endLifetime].Load(),
		HandshakesShed:           make(map[string]uint64, numShedReasons),
		HandshakeFailures:        make(map[Cause]uint64, len(allCauses)),
		HandshakesResumed:        p.stats.resumed.Load(),
		HandshakeRetries:         p.stats.retries.Load(),
		TargetDialFailures:       p.stats.dialFail.Load(),
		BytesToTarget:            p.stats.toTarget.Load(),
		BytesFromTarget:          p.stats.fromTarget.Load(),
		BulkBufferBytes:          p.bufs.largeBytesInUse(),
	}
	for i, c := range allCauses {
		s.HandshakeFailures[c] = p.stats.handshake[i].Load()
	}
	for r := range numShedReasons {
		s.HandshakesShed[r.String()] = p.stats.shed[r].Load()
	}
	return s
}
