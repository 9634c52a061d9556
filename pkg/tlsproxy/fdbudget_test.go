package tlsproxy_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/identity-agent/identity-agent/pkg/tlsproxy"
)

// TestFDBudgetReplacesTheRlimit: a proxy given its share of descriptors
// fits its limits into that share, not into RLIMIT_NOFILE, and refits
// when the share changes while it runs.
func TestFDBudgetReplacesTheRlimit(t *testing.T) {
	cfg := tlsproxy.Config{Name: "fd", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0", Allow: []string{clientID.String()}}
	assert.Equal(t, 1+tlsproxy.DefaultMaxHandshakes+2*tlsproxy.DefaultMaxConns, cfg.FDs())
	cfg.HTTP, cfg.MaxConns, cfg.MaxHandshakes = true, 10, 20
	assert.Equal(t, 1+20+3*10, cfg.FDs())

	e := newEnv(t)
	cfg = tlsproxy.Config{Name: "fd", Mode: tlsproxy.ModeServer, Listen: "127.0.0.1:0",
		Target: echoBackend(t), Allow: []string{clientID.String()}}
	srv := startProxy(t, cfg, e.server,
		tlsproxy.WithFDLimit(func() (uint64, bool) { return 1 << 20, true }), // plenty: the budget decides
		tlsproxy.WithFDBudget(401))
	st := srv.Stats()
	assert.LessOrEqual(t, 1+st.MaxHandshakes+2*st.MaxConns, 401)
	assert.Greater(t, 1+st.MaxHandshakes+2*st.MaxConns, 380, "the share is used, not wasted")
	assert.Len(t, srv.logs.FilterMessageSnippet("share of the file descriptor limit").All(), 1)

	srv.SetFDBudget(201)
	st = srv.Stats()
	assert.LessOrEqual(t, 1+st.MaxHandshakes+2*st.MaxConns, 201)
	srv.SetFDBudget(cfg.FDs())
	st = srv.Stats()
	assert.Equal(t, tlsproxy.DefaultMaxConns, st.MaxConns, "a share that fits restores the configured limits")
	assert.Equal(t, tlsproxy.DefaultMaxHandshakes, st.MaxHandshakes)
}
