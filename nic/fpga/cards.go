package fpga

import "github.com/kvloom/kvloom/internal/pciid"

// Family is a card vendor's programming path.
type Family string

// Card families.
const (
	// FamilyAlveo cards (AMD/Xilinx) are programmed by XRT (xclbin).
	FamilyAlveo Family = "alveo"
	// FamilyDFL cards (Intel PAC, N3000, N6000, D5005) are reconfigured
	// through the kernel's DFL FME.
	FamilyDFL Family = "dfl"
)

// Card is one supported PCI function.
type Card struct {
	Vendor, Device uint16
	Name           string
	Family         Family
	// BAR is the BAR that holds the kvloom register map.
	BAR int
	// Golden marks a golden (recovery) image id: the card has no user
	// shell and must be flashed before kvloom can use it.
	Golden bool
}

// cards is the table of supported functions (pci.ids and the kernel's
// dfl-pci.c, docs/regmap.md's sources). Every entry is a function
// pciid.IsFPGA knows, so the topology matrix shows each card as an FPGA.
var cards = []Card{
	{pciid.VendorXilinx, 0x5000, "Alveo U200", FamilyAlveo, 0, false},
	{pciid.VendorXilinx, 0x5004, "Alveo U250", FamilyAlveo, 0, false},
	{pciid.VendorXilinx, 0x5005, "Alveo U250", FamilyAlveo, 0, false},
	{pciid.VendorXilinx, 0x500c, "Alveo U280", FamilyAlveo, 0, false},
	{pciid.VendorXilinx, 0x5020, "Alveo U50", FamilyAlveo, 0, false},
	{pciid.VendorXilinx, 0x505c, "Alveo U55C", FamilyAlveo, 0, false},
	{pciid.VendorXilinx, 0xd000, "Alveo U200 (golden image)", FamilyAlveo, 0, true},
	{pciid.VendorXilinx, 0xd004, "Alveo U250 (golden image)", FamilyAlveo, 0, true},
	{pciid.VendorXilinx, 0xd00c, "Alveo U280 (golden image)", FamilyAlveo, 0, true},
	{pciid.VendorXilinx, 0xd020, "Alveo U50 (golden image)", FamilyAlveo, 0, true},
	{pciid.VendorIntel, pciid.DeviceIntelPACA10, "Intel PAC Arria 10 GX", FamilyDFL, 0, false},
	{pciid.VendorIntel, pciid.DeviceIntelPACN3000, "Intel PAC N3000", FamilyDFL, 0, false},
	{pciid.VendorIntel, pciid.DeviceIntelPACD5005, "Intel PAC D5005", FamilyDFL, 0, false},
	{pciid.VendorIntel, pciid.DeviceIntelDFL, "Intel DFL FPGA", FamilyDFL, 0, false},
	{pciid.VendorIntel, pciid.DeviceIntelN6000, "Intel N6000", FamilyDFL, 0, false},
	{pciid.VendorIntel, pciid.DeviceIntelN6001, "Intel N6001", FamilyDFL, 0, false},
}

// lookup returns the table entry of vendor:device.
func lookup(vendor, device uint16) (Card, bool) {
	for _, c := range cards {
		if c.Vendor == vendor && c.Device == device {
			return c, true
		}
	}
	return Card{}, false
}
