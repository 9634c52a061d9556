package metricstest

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Lookup returns the value of the counter or gauge series name{labels}.
// found is false when the registry has no series with exactly those
// labels; err is a failure to gather.
func Lookup(g prometheus.Gatherer, name string, labels map[string]string) (value float64, found bool, err error) {
	m, _, err := find(g, name, labels)
	if err != nil || m == nil {
		return 0, false, err
	}
	return valueOf(m), true, nil
}

// Value is Lookup for assertions: it fails the test at once when the
// series does not exist, listing the label sets that do.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	m, others, err := find(g, name, labels)
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	if m == nil {
		t.Fatalf("no series %s%s; the registry has %s", name, format(labels), describe(name, others))
	}
	return valueOf(m)
}

// find returns the series with exactly labels, or nil and the label sets
// of name's series.
func find(g prometheus.Gatherer, name string, labels map[string]string) (*dto.Metric, []map[string]string, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, nil, err
	}
	var others []map[string]string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			have := make(map[string]string, len(m.GetLabel()))
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			if maps.Equal(have, labels) { // nil and empty both mean "no labels"
				return m, nil, nil
			}
			others = append(others, have)
		}
	}
	return nil, others, nil
}

func valueOf(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

func describe(name string, sets []map[string]string) string {
	if len(sets) == 0 {
		return "no series of that name"
	}
	parts := make([]string, len(sets))
	for i, s := range sets {
		parts[i] = name + format(s)
	}
	return strings.Join(parts, ", ")
}

// format writes labels the way Prometheus does, sorted by name.
func format(labels map[string]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", k, labels[k])
	}
	b.WriteByte('}')
	return b.String()
}
