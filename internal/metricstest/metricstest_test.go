package metricstest_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/identity-agent/identity-agent/internal/metricstest"
)

func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hits_total", Help: "h", ConstLabels: prometheus.Labels{"proxy": "p"}}, []string{"cause"})
	c.WithLabelValues("a").Add(2)
	c.WithLabelValues("b").Add(5)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "up", Help: "u"})
	g.Set(1)
	reg.MustRegister(c, g)
	return reg
}

func TestLookupMatchesAllLabelsExactly(t *testing.T) {
	reg := registry(t)
	v, ok, err := metricstest.Lookup(reg, "hits_total", map[string]string{"proxy": "p", "cause": "b"})
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, 5.0, v)

	_, ok, err = metricstest.Lookup(reg, "hits_total", map[string]string{"cause": "b"})
	require.NoError(t, err)
	assert.False(t, ok, "a subset of the labels names no series")
	_, ok, _ = metricstest.Lookup(reg, "hits_total", map[string]string{"proxy": "p", "cause": "b", "x": "y"})
	assert.False(t, ok, "a superset names no series either")

	v, ok, _ = metricstest.Lookup(reg, "up", nil)
	assert.True(t, ok, "nil labels name a series without labels")
	assert.Equal(t, 1.0, v)
	assert.Equal(t, 2.0, metricstest.Value(t, reg, "hits_total", map[string]string{"proxy": "p", "cause": "a"}))
}

// fatalRecorder captures Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	for _, a := range args {
		if s, ok := a.(string); ok {
			f.msg += " " + s
		}
	}
}

func TestValueNamesTheSeriesThatExist(t *testing.T) {
	rec := &fatalRecorder{TB: t}
	metricstest.Value(rec, registry(t), "hits_total", map[string]string{"cause": "a"})
	assert.Contains(t, rec.msg, `hits_total{cause="a",proxy="p"}`)
	assert.Contains(t, rec.msg, `hits_total{cause="b",proxy="p"}`)

	rec = &fatalRecorder{TB: t}
	metricstest.Value(rec, registry(t), "nope", nil)
	assert.Contains(t, rec.msg, "no series of that name")
}
