package demo

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// demo's daemon, its gRPC server and client must all be gone when Run
// returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
