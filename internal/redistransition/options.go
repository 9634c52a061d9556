package redistransition

import (
	"fmt"
	"time"

	"github.com/identity-agent/identity-agent/internal/secretfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Option configures NewAdmin, NewConfigSetReloader, NewTransition and
// NewSampler.
type Option func(*settings)

type settings struct {
	logger *zap.Logger
	reg    prometheus.Registerer
	now    func() time.Time
}

func newSettings(opts []Option) *settings {
	s := &settings{logger: zap.NewNop(), now: time.Now}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	return s
}

// WithLogger sets the logger (default zap.NewNop()).
func WithLogger(l *zap.Logger) Option {
	return func(s *settings) {
		if l != nil {
			s.logger = l
		}
	}
}

// WithRegisterer registers this package's metrics on r. Without it no
// metric is registered anywhere.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(s *settings) { s.reg = r }
}

// withClock is for tests of the time window logic.
func withClock(now func() time.Time) Option {
	return func(s *settings) { s.now = now }
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// readPasswordFile reads a password file on every use so a rotated password
// needs no restart; trailing line breaks are not part of the password
// (internal/secretfile holds the rule).
func readPasswordFile(path string) (string, error) {
	pw, err := secretfile.Read(path)
	if err != nil {
		return "", fmt.Errorf("password_file: %w", err)
	}
	return pw, nil
}
