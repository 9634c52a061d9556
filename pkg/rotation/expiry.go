package rotation

import (
	"fmt"
	"time"
)

// Expiry is where an SVID stands in its lifetime. It is decided in one
// place, ExpiryOf, for the watchdog's log lines, State and the status
// command alike.
type Expiry string

// Expiry values.
const (
	// ExpiryOK: the SVID has more than the expiry window left.
	ExpiryOK Expiry = "ok"
	// ExpiryOverdue: less than the expiry window is left, so the rotation
	// that should have replaced it is overdue.
	ExpiryOverdue Expiry = "overdue"
	// ExpiryExpired: the SVID is past its NotAfter.
	ExpiryExpired Expiry = "expired"
)

// ExpiryOf grades an SVID valid from notBefore to notAfter at now: expired
// at notAfter; overdue from notAfter-window on or, with window 0 (the
// default), once less than a third of its lifetime is left; ok before.
// An empty notAfter (nothing held) gives "".
func ExpiryOf(notBefore, notAfter time.Time, window time.Duration, now time.Time) Expiry {
	switch {
	case notAfter.IsZero():
		return ""
	case !now.Before(notAfter):
		return ExpiryExpired
	case !now.Before(notAfter.Add(-effectiveWindow(notBefore, notAfter, window))):
		return ExpiryOverdue
	}
	return ExpiryOK
}

// effectiveWindow is how long before notAfter an SVID becomes overdue.
func effectiveWindow(notBefore, notAfter time.Time, window time.Duration) time.Duration {
	if window > 0 {
		return window
	}
	if notBefore.IsZero() || !notBefore.Before(notAfter) {
		return 0 // no lifetime to take a third of: overdue only when expired
	}
	return notAfter.Sub(notBefore) / 3
}

// expiryRule describes the rule for State, in the words of the status
// command.
func expiryRule(window time.Duration) string {
	if window > 0 {
		return fmt.Sprintf("expiry window %s", window)
	}
	return "rotation overdue: less than a third of the lifetime left"
}
