package bitstream_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: the fpga-mgr
// loader starts one per firmware write, the fake kernels one each.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
