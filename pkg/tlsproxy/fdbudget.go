package tlsproxy

import "cmp"

// FDs is the number of file descriptors a proxy with this configuration
// holds at its limits (defaults applied): its listener, one per
// handshaking connection and two per authenticated one (three in HTTP
// mode, with its pooled upstream connection). A program running several
// proxies, or other listeners, splits RLIMIT_NOFILE with it and hands each
// proxy its share with WithFDBudget.
func (c Config) FDs() int {
	perAuthed := 2
	if c.HTTP {
		perAuthed = 3
	}
	return 1 + cmp.Or(c.MaxHandshakes, DefaultMaxHandshakes) + perAuthed*cmp.Or(c.MaxConns, DefaultMaxConns)
}

// WithFDBudget makes the proxy fit its limits into n file descriptors
// (counted as Config.FDs counts them) instead of into RLIMIT_NOFILE less a
// reserve of 128 for the rest of the process. Limits that do not fit are
// lowered in proportion, with one WARN line, when the proxy starts and on
// every Update. n <= 0 keeps the default.
func WithFDBudget(n int) Option {
	return func(o *options) { o.fdBudget = max(n, 0) }
}

// SetFDBudget changes the proxy's WithFDBudget share, for a program that
// re-splits its descriptors when it adds or removes proxies. A running
// proxy refits its limits at once; as with Update, lowered limits apply to
// admission only and nothing open is closed to meet them.
func (p *Proxy) SetFDBudget(n int) {
	p.updMu.Lock()
	defer p.updMu.Unlock()
	n = max(n, 0)
	if n == p.opts.fdBudget {
		return
	}
	p.opts.fdBudget = n
	p.mu.Lock()
	running := p.running
	p.mu.Unlock()
	if !running {
		return // Start fits
	}
	rt := p.rt.Load()
	base := *rt
	base.lim = limits{maxConns: rt.cfg.MaxConns, maxHandshakes: rt.cfg.MaxHandshakes, perSource: rt.cfg.MaxHandshakesPerSource}
	next := p.fitted(&base)
	p.rt.Store(next)
	p.adm.setLimits(next.lim)
}

// fitInto lowers l so that a proxy at its limits holds at most avail
// descriptors besides its listener (see fitLimits, which keeps fdReserve
// of RLIMIT_NOFILE for the rest of the process).
func fitInto(l limits, avail uint64, perAuthed int) (limits, bool) {
	return fitLimits(l, avail+fdReserve, perAuthed)
}
