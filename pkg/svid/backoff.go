package svid

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/zap"
)

// Defaults of the reconnection backoff (WithBackoff). A unix socket that
// reappears is reconnected to at once, whatever the backoff has grown to.
const (
	DefaultRetryMin = time.Second
	DefaultRetryMax = 30 * time.Second
)

// maxRetryMax keeps a misconfigured cap from leaving the agent disconnected
// for hours from a TCP Workload API, where no socket file can be watched.
const maxRetryMax = time.Hour

// ValidateRetryMax checks a reconnection backoff cap (the agent's
// workload_api.retry_max) without side effects.
func ValidateRetryMax(d time.Duration) error {
	if d <= 0 || d > maxRetryMax {
		return fmt.Errorf("%s must be above 0 and at most %s", d, maxRetryMax)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// expBackoff doubles from min to max. go-spiffe's default is linear
// 1s,2s,3s..30s; doubling reaches the cap sooner, and the bounds are ours.
type expBackoff struct {
	min, max, cur time.Duration
}

func newExpBackoff(minDelay, maxDelay time.Duration) *expBackoff {
	return &expBackoff{min: minDelay, max: maxDelay}
}

func (b *expBackoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur *= 2
	}
	if b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *expBackoff) Reset() { b.cur = 0 }

type expBackoffStrategy struct{ min, max time.Duration }

func (s expBackoffStrategy) NewBackoff() workloadapi.Backoff { return newExpBackoff(s.min, s.max) }

// spiffeLogger adapts zap to go-spiffe's logger. go-spiffe logs every
// failed watch attempt at error level although it retries them, and every
// such error also reaches our watcher, which logs it once as a warning;
// go-spiffe's own lines are therefore debug detail.
type spiffeLogger struct{ l *zap.SugaredLogger }

func (l spiffeLogger) Debugf(format string, args ...any) { l.l.Debugf(format, args...) }
func (l spiffeLogger) Infof(format string, args ...any)  { l.l.Infof(format, args...) }
func (l spiffeLogger) Warnf(format string, args ...any)  { l.l.Debugf(format, args...) }
func (l spiffeLogger) Errorf(format string, args ...any) { l.l.Debugf(format, args...) }
