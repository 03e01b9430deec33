package quality

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that zstd's encoders and decoders are closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
