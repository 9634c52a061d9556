package rotation

import (
	"time"

	"go.uber.org/zap"
)

// The expiry watchdog: armed at NotAfter minus the expiry window for the
// SVID on disk, it then looks at the connection every watchdogCheck and
// warns (rate-limited) while the Workload API is unreachable.

// armWatchdogLocked sets the expiry timer for a newly written SVID: it
// fires when the SVID becomes overdue (see ExpiryOf), not on a polling tick.
func (r *outputRunner) armWatchdogLocked(notBefore, notAfter time.Time) {
	if r.watchdogTimer != nil {
		r.watchdogTimer.Stop()
	}
	d := time.Until(overdueAt(notBefore, notAfter, r.m.cfg.expiryWindow))
	r.watchdogTimer = time.AfterFunc(max(d, 0), func() { r.poke(r.watchdogCh) })
}

// watchdogCheck is how often, once inside the window, the watchdog looks
// at the connection: the Source does not announce a disconnect, and a
// warning a few seconds late is fine while one a minute late is not.
func (r *outputRunner) watchdogCheck() time.Duration {
	if d := r.m.cfg.watchdogCheck; d > 0 {
		return d
	}
	return min(max(r.m.cfg.expiryWindow/60, time.Second), 10*time.Second)
}

// watchdogWarnEvery rate-limits the repeated warning.
func (r *outputRunner) watchdogWarnEvery() time.Duration {
	return min(max(r.m.cfg.expiryWindow/10, r.watchdogCheck()), time.Minute)
}

func (r *outputRunner) watchdogTick() {
	st := r.m.src.Status()
	r.stMu.Lock()
	defer r.stMu.Unlock()
	notAfter := r.st.NotAfter
	now := time.Now()
	if e := ExpiryOf(r.st.NotBefore, notAfter, r.m.cfg.expiryWindow, now); e == "" || e == ExpiryOK {
		return // a newer SVID was written since the timer was set
	}
	left := notAfter.Sub(now)
	if st.Connected {
		r.lastWarn = time.Time{}
	} else if r.lastWarn.IsZero() || now.Sub(r.lastWarn) >= r.watchdogWarnEvery() {
		r.lastWarn = now
		fields := []zap.Field{zap.String("spiffe_id", r.st.SpiffeID), zap.String("serial", r.st.Serial),
			zap.Time("not_after", notAfter), zap.String("source_error", st.LastError)}
		if left > 0 {
			r.log.Warn("Workload API unreachable and the SVID on disk expires soon", append(fields, zap.Duration("left", left.Round(time.Second)))...)
		} else {
			r.log.Error("Workload API unreachable and the SVID on disk has expired", fields...)
		}
	}
	r.watchdogTimer = time.AfterFunc(r.watchdogCheck(), func() { r.poke(r.watchdogCh) })
}
