package agent

import (
	"go.uber.org/zap"

	"github.com/identity-agent/identity-agent/internal/admin"
)

// FDReserve is the part of RLIMIT_NOFILE no listener may take: what a
// rotation needs to write its files (version directories, temporary files,
// the guard's directory handles), the pipes of reload commands, Redis and
// Traefik reloads, the Workload API connection, logs and the Go runtime.
const FDReserve = 128

// fdBudget is the one place the agent splits its file descriptors: the
// reserve first, then the admin endpoint at its connection caps, and the
// rest shared by the proxies in proportion to what their limits need.
type fdBudget struct {
	soft, hard uint64
	known      bool // false where there is no RLIMIT_NOFILE
	admin      int
	proxies    int
}

func newFDBudget(s Settings) fdBudget {
	soft, hard, ok := rlimitNOFILE()
	b := fdBudget{soft: soft, hard: hard, known: ok, admin: admin.FDs(s.MetricsListen != "")}
	if ok {
		b.proxies = max(int(min(soft, 1<<30))-FDReserve-b.admin, 0)
	}
	return b
}

// shares is each proxy's budget, in order: what its limits need when they
// all fit, else the proxies' part in proportion to need. Nil when there is
// no limit to share.
func (b fdBudget) shares(proxies []ProxyPlan) []int {
	if !b.known || len(proxies) == 0 {
		return nil
	}
	need := make([]int, len(proxies))
	total := 0
	for i, pp := range proxies {
		need[i] = pp.Config.FDs()
		total += need[i]
	}
	out := make([]int, len(proxies))
	for i, n := range need {
		if total <= b.proxies {
			out[i] = n
		} else {
			out[i] = int(int64(b.proxies) * int64(n) / int64(total))
		}
	}
	return out
}

// log writes the one line that says what the agent got: under
// systemd-nspawn, for one, LimitNOFILE is capped below what a unit asks.
func (b fdBudget) log(l *zap.Logger, proxies []ProxyPlan) {
	if !b.known {
		return
	}
	need := 0
	for _, pp := range proxies {
		need += pp.Config.FDs()
	}
	fields := []zap.Field{zap.Uint64("soft", b.soft), zap.Uint64("hard", b.hard),
		zap.Int("reserve", FDReserve), zap.Int("admin", b.admin), zap.Int("proxies", b.proxies), zap.Int("proxies_need", need)}
	if need > b.proxies {
		l.Warn("file descriptor limit (RLIMIT_NOFILE): proxies' limits lowered to fit their share; raise LimitNOFILE (systemd) or NumberOfFiles (launchd) to restore them", fields...)
		return
	}
	l.Info("file descriptor limit (RLIMIT_NOFILE)", fields...)
}

// shareOf is shares[i], or 0 (tlsproxy's own default) without shares.
func shareOf(shares []int, i int) int {
	if i < len(shares) {
		return shares[i]
	}
	return 0
}
