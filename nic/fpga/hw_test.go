//go:build hw

package fpga_test

import (
	"os"
	"testing"

	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/fpga"
	"github.com/kvloom/kvloom/nic/nictest"
)

// TestHardwareConformance runs the conformance suite on a real card that
// already runs a kvloom image: KVLOOM_FPGA_BDF names it (make test-hw).
// The suite's Config cannot reshape a card (FixedShape): the capacity and
// backpressure subtests work with the image's own geometry.
func TestHardwareConformance(t *testing.T) {
	bdf := os.Getenv("KVLOOM_FPGA_BDF")
	if bdf == "" {
		t.Fatal("set KVLOOM_FPGA_BDF to the PCI address of a card running a kvloom image (see `kvloom devices`)")
	}
	nictest.Run(t, nictest.Harness{
		Open: func(t *testing.T, _ nictest.Config) nic.Device {
			d, err := fpga.Open(t.Context(), bdf, fpga.Options{})
			if err != nil {
				t.Fatalf("open card %s: %v", bdf, err)
			}
			return d
		},
		BAR:        func(d nic.Device) *nic.Region { return d.(*fpga.Device).Region() },
		FixedShape: true,
	})
}
