package pciid_test

import (
	"testing"

	"github.com/kvloom/kvloom/internal/pciid"
)

func TestIsFPGA(t *testing.T) {
	for _, c := range []struct {
		vendor, device uint16
		want           bool
	}{
		{pciid.VendorXilinx, 0x505c, true}, // Alveo U55C
		{pciid.VendorXilinx, 0xd020, true}, // Alveo U50 golden image
		{pciid.VendorIntel, pciid.DeviceIntelPACA10, true},
		{pciid.VendorIntel, pciid.DeviceIntelPACA10VF, true},
		{pciid.VendorIntel, pciid.DeviceIntelInt5X, true},
		{pciid.VendorIntel, pciid.DeviceIntelInt5XVF, true},
		{pciid.VendorIntel, pciid.DeviceIntelInt6X, true},
		{pciid.VendorIntel, pciid.DeviceIntelInt6XVF, true},
		{pciid.VendorIntel, pciid.DeviceIntelPACN3000, true},
		{pciid.VendorIntel, pciid.DeviceIntelPACD5005, true},
		{pciid.VendorIntel, pciid.DeviceIntelPACD5005VF, true},
		{pciid.VendorIntel, pciid.DeviceIntelDFL, true},
		{pciid.VendorIntel, pciid.DeviceIntelDFLVF, true},
		{pciid.VendorIntel, pciid.DeviceIntelN6000, true},
		{pciid.VendorIntel, pciid.DeviceIntelN6001, true},
		{pciid.VendorIntel, pciid.DeviceIntelC6100, true},
		{pciid.VendorSilicom, pciid.DeviceSilicomN5010, true},
		{pciid.VendorSilicom, pciid.DeviceSilicomN5011, true},
		{pciid.VendorIntel, 0x1572, false},   // X710 Ethernet
		{pciid.VendorIntel, 0x0b32, false},   // Intel, not a DFL id
		{pciid.VendorSilicom, 0x1002, false}, // Silicom, not an FPGA
		{pciid.VendorNVIDIA, 0x2330, false},  // H100
		{pciid.VendorMellanox, pciid.DeviceSilicomN5010, false},
	} {
		if got := pciid.IsFPGA(c.vendor, c.device); got != c.want {
			t.Errorf("IsFPGA(%04x:%04x) = %v, want %v", c.vendor, c.device, got, c.want)
		}
	}
}
