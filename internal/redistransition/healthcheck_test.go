package redistransition

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/redistest"
)

func TestHealthChecks(t *testing.T) {
	ctx := redistest.Context(t)
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer bad.Close()
	require.NoError(t, HTTPHealthCheck("ok", ok.URL, time.Second).Check(ctx))
	require.ErrorContains(t, HTTPHealthCheck("bad", bad.URL, time.Second).Check(ctx), "503")
	require.NoError(t, CommandHealthCheck("true", []string{"true"}, 0).Check(ctx))
	require.ErrorContains(t, CommandHealthCheck("sh", []string{"sh", "-c", "echo not ready >&2; exit 3"}, 0).Check(ctx), "not ready")
	require.ErrorContains(t, CommandHealthCheck("empty", nil, 0).Check(ctx), "empty command")
}
