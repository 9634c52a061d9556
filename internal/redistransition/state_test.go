package redistransition

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// CurrentPhase: the newer of the last step and the last sample; before the
// first advance only the sampler knows the phase (it was "-" in status).
func TestStateCurrentPhase(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		st   State
		want Phase
	}{
		{"nothing known", State{}, ""},
		{"sampled before any advance", State{Sample: SampleState{Phase: PhaseA, LastSample: t0}}, PhaseA},
		{"advanced after the last sample", State{Phase: PhaseB, PhaseSince: t0.Add(time.Second), Sample: SampleState{Phase: PhaseA, LastSample: t0}}, PhaseB},
		{"sampled after the advance", State{Phase: PhaseC, PhaseSince: t0, Sample: SampleState{Phase: PhaseD, LastSample: t0.Add(time.Second)}}, PhaseD},
		{"a sample that fit no phase", State{Phase: PhaseB, PhaseSince: t0, Sample: SampleState{LastSample: t0.Add(time.Second)}}, PhaseB},
	} {
		assert.Equal(t, tc.want, tc.st.CurrentPhase(), tc.name)
	}
}
