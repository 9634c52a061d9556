package agent

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/identity-agent/identity-agent/internal/admin"
	"github.com/identity-agent/identity-agent/internal/config"
)

// TestFDBudgetSplit: the reserve and the admin endpoint at its caps come
// off the limit first; proxies that fit get what they need, and proxies
// that do not share the rest in proportion, never more than it.
func TestFDBudgetSplit(t *testing.T) {
	small := proxyPlan(config.Proxy{Name: "s", Mode: "server", MaxConns: 10, MaxHandshakes: 20})
	big := proxyPlan(config.Proxy{Name: "b", Mode: "server"}) // defaults: 2048 + 2*1024 + 1
	b := fdBudget{soft: 1024, hard: 1024, known: true, admin: admin.FDs(true)}
	b.proxies = 1024 - FDReserve - b.admin
	assert.Equal(t, []int{41}, b.shares([]ProxyPlan{small}))
	got := b.shares([]ProxyPlan{small, big})
	assert.LessOrEqual(t, got[0]+got[1], b.proxies)
	assert.Less(t, got[0], 41, "both are lowered in proportion")
	assert.Greater(t, got[1], 10*got[0])
	assert.Nil(t, fdBudget{}.shares([]ProxyPlan{small}), "no limit known: tlsproxy's own default")
	assert.Equal(t, 2+2*admin.MaxSocketConns+2+2*admin.MaxMetricsConns, b.admin)
}
