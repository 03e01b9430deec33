package fpga

import (
	"testing"

	"github.com/kvloom/kvloom/internal/pciid"
)

// TestCardsAreFPGAs: every card the backend drives is one the topology
// matrix (gpu, through pciid) classifies as an FPGA; the two tables cannot
// drift apart.
func TestCardsAreFPGAs(t *testing.T) {
	for _, c := range cards {
		if !pciid.IsFPGA(c.Vendor, c.Device) {
			t.Errorf("card %04x:%04x %s is not an FPGA to pciid.IsFPGA", c.Vendor, c.Device, c.Name)
		}
	}
}
