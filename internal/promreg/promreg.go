package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Shared registers c on r and returns it, or returns the collector already
// registered under the same descriptor, so the second client of a kind
// adds its series to the first one's vector instead of failing. A nil r
// registers nothing and returns c (metrics kept in memory only). Any other
// registration error also returns c unregistered: metrics never stop the
// caller from working.
func Shared[T prometheus.Collector](r prometheus.Registerer, c T) T {
	if r == nil {
		return c
	}
	if err := r.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
	}
	return c
}
