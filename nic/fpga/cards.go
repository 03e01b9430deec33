package fpga

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

// PCI vendor ids.
const (
	VendorXilinx = 0x10ee
	VendorIntel  = 0x8086
)

// cards is the table of supported functions (pci.ids and the kernel's
// dfl-pci.c, docs/regmap.md's sources).
var cards = []Card{
	{VendorXilinx, 0x5000, "Alveo U200", FamilyAlveo, 0, false},
	{VendorXilinx, 0x5004, "Alveo U250", FamilyAlveo, 0, false},
	{VendorXilinx, 0x5005, "Alveo U250", FamilyAlveo, 0, false},
	{VendorXilinx, 0x500c, "Alveo U280", FamilyAlveo, 0, false},
	{VendorXilinx, 0x5020, "Alveo U50", FamilyAlveo, 0, false},
	{VendorXilinx, 0x505c, "Alveo U55C", FamilyAlveo, 0, false},
	{VendorXilinx, 0xd000, "Alveo U200 (golden image)", FamilyAlveo, 0, true},
	{VendorXilinx, 0xd004, "Alveo U250 (golden image)", FamilyAlveo, 0, true},
	{VendorXilinx, 0xd00c, "Alveo U280 (golden image)", FamilyAlveo, 0, true},
	{VendorXilinx, 0xd020, "Alveo U50 (golden image)", FamilyAlveo, 0, true},
	{VendorIntel, 0x09c4, "Intel PAC Arria 10 GX", FamilyDFL, 0, false},
	{VendorIntel, 0x0b30, "Intel PAC N3000", FamilyDFL, 0, false},
	{VendorIntel, 0x0b2b, "Intel PAC D5005", FamilyDFL, 0, false},
	{VendorIntel, 0xbcce, "Intel DFL FPGA", FamilyDFL, 0, false},
	{VendorIntel, 0x1770, "Intel N6000", FamilyDFL, 0, false},
	{VendorIntel, 0x1771, "Intel N6001", FamilyDFL, 0, false},
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
