package rotation

import (
	"time"

	"go.uber.org/zap"
)

// The expiry watchdog. Its timer fires when the SVID on disk becomes
// overdue for rotation (ExpiryOf), not on a polling tick; from then on it
// looks at the connection every watchdogCheck until a newer SVID is
// written. It logs once per change of state, never on every check: a
// warning when the SVID is overdue while the Workload API is unreachable,
// an error when it has expired so, and one line when the API is back.

// armWatchdogLocked sets the expiry timer for a newly written SVID.
func (r *outputRunner) armWatchdogLocked(notBefore, notAfter time.Time) {
	if r.watchdogTimer != nil {
		r.watchdogTimer.Stop()
	}
	r.alarm = ""
	d := time.Until(notAfter.Add(-effectiveWindow(notBefore, notAfter, r.m.cfg.expiryWindow)))
	r.watchdogTimer = time.AfterFunc(max(d, 0), func() { r.poke(r.watchdogCh) })
}

// watchdogCheck is how often, once the SVID is overdue, the watchdog
// looks at the connection: the Source does not announce a disconnect,
// and a warning a few seconds late is fine while one a minute late is
// not. window is the SVID's effective expiry window.
func (r *outputRunner) watchdogCheck(window time.Duration) time.Duration {
	if d := r.m.cfg.watchdogCheck; d > 0 {
		return d
	}
	return min(max(window/60, time.Second), 10*time.Second)
}

func (r *outputRunner) watchdogTick() {
	st := r.m.src.Status()
	r.stMu.Lock()
	defer r.stMu.Unlock()
	notBefore, notAfter := r.st.NotBefore, r.st.NotAfter
	now := time.Now()
	e := ExpiryOf(notBefore, notAfter, r.m.cfg.expiryWindow, now)
	if e == "" || e == ExpiryOK {
		return // a newer SVID was written since the timer was set
	}
	// alarm is the state last logged: overdue or expired while the
	// Workload API is unreachable, or "" for nothing to report.
	alarm := e
	if st.Connected {
		alarm = ""
	}
	if alarm != r.alarm {
		fields := []zap.Field{zap.String("spiffe_id", r.st.SpiffeID), zap.String("serial", r.st.Serial),
			zap.Time("not_after", notAfter)}
		if st.NoIdentity {
			fields = append(fields, zap.String("reason", st.Reason))
		}
		switch alarm {
		case ExpiryOverdue:
			r.log.Warn("Workload API unreachable and the SVID on disk expires soon",
				append(fields, zap.Duration("left", notAfter.Sub(now).Round(time.Second)), zap.String("source_error", st.LastError))...)
		case ExpiryExpired:
			r.log.Error("Workload API unreachable and the SVID on disk has expired",
				append(fields, zap.String("source_error", st.LastError))...)
		default:
			r.log.Info("Workload API reachable again; waiting for it to replace the overdue SVID on disk", fields...)
		}
		r.alarm = alarm
	}
	window := effectiveWindow(notBefore, notAfter, r.m.cfg.expiryWindow)
	r.watchdogTimer = time.AfterFunc(r.watchdogCheck(window), func() { r.poke(r.watchdogCh) })
}
