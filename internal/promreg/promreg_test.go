package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"

	"github.com/identity-agent/identity-agent/internal/promreg"
)

func TestSharedReturnsTheRegisteredCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	opts := prometheus.CounterOpts{Name: "x_total", Help: "x"}
	a := promreg.Shared(reg, prometheus.NewCounterVec(opts, []string{"name"}))
	b := promreg.Shared(reg, prometheus.NewCounterVec(opts, []string{"name"}))
	assert.Same(t, a, b, "the second gets the first")
	b.WithLabelValues("two").Inc()
	a.WithLabelValues("one").Inc()
	assert.Equal(t, 2, testutil.CollectAndCount(reg))

	c := prometheus.NewCounter(opts)
	assert.Same(t, c, promreg.Shared(nil, c), "no registry: kept in memory")
}
