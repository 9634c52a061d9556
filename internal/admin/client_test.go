package admin_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/admin"
)

// closeFirst closes the first n connections it accepts unread, as the
// admin socket does at its cap with a connection whose request has not
// arrived yet.
type closeFirst struct {
	net.Listener
	n, closed atomic.Int64
}

func (l *closeFirst) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.closed.Load() >= l.n.Load() {
			return c, err
		}
		l.closed.Add(1)
		_ = c.Close()
	}
}

// TestFetchRetriesConnectionClosedUnanswered (issue 18): under a flood at
// the admin socket's cap, the agent may close status's connection before
// its request arrived (EPIPE or EOF at the client). The agent read
// nothing and GET /status has no side effects: Fetch sends it again on a
// new connection instead of reporting the agent unreachable.
func TestFetchRetriesConnectionClosedUnanswered(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	inner, err := net.Listen("unix", sock)
	require.NoError(t, err)
	l := &closeFirst{Listener: inner}
	l.n.Store(3)
	now := time.Now()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(healthyReport(now))
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := admin.Fetch(ctx, sock)
	require.NoError(t, err)
	assert.Equal(t, int64(3), l.closed.Load())
	assert.Equal(t, "spiffe://example.org/a", r.State.SVIDs[0].SpiffeID)
}
