package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/config"
	"github.com/identity-agent/identity-agent/pkg/svid"
)

// workload_api.retry_max caps the Source's reconnection backoff; pkg/svid
// owns its default and its rule, the config adds the line.
func TestWorkloadAPIRetryMax(t *testing.T) {
	cfg, err := config.Parse("a.yaml", []byte("workload_api: {socket: unix:///s}\nallow_empty: true\n"), noEnv)
	require.NoError(t, err)
	assert.Equal(t, svid.DefaultRetryMax, cfg.WorkloadAPI.RetryMax.D(0))

	cfg, err = config.Parse("a.yaml", []byte("workload_api:\n  socket: unix:///s\n  retry_max: 5s\nallow_empty: true\n"), noEnv)
	require.NoError(t, err)
	assert.Equal(t, 5*time.Second, cfg.WorkloadAPI.RetryMax.D(0))

	_, err = config.Parse("a.yaml", []byte("workload_api:\n  socket: unix:///s\n  retry_max: 2h\nallow_empty: true\n"), noEnv)
	require.EqualError(t, err, "a.yaml:3: workload_api.retry_max: 2h0m0s must be above 0 and at most 1h0m0s")
	_, err = config.Parse("a.yaml", []byte("workload_api:\n  socket: unix:///s\n  retry_max: -1s\n"), noEnv)
	require.ErrorContains(t, err, "a.yaml:3: ")
}
