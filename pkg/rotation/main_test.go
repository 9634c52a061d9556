package rotation

import (
	"testing"

	"go.uber.org/goleak"
)

// Every Run, timer callback, reload process wait and guard must be gone
// once the tests' cleanups ran.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
