package wire

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind (the capture tests
// run Capture.Run in one).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
