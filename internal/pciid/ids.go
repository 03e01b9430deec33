package pciid

// PCI vendor ids kvloom cares about (pci.ids).
const (
	VendorNVIDIA    = 0x10de
	VendorMellanox  = 0x15b3
	VendorIntel     = 0x8086
	VendorNetronome = 0x19ee
	VendorCorigine  = 0x1da8
	VendorXilinx    = 0x10ee
	VendorSilicom   = 0x1c2c
)

// Intel FPGA device ids under VendorIntel, as drivers/fpga/dfl-pci.c lists
// them (VF: the card's SR-IOV virtual function).
const (
	DeviceIntelPACA10     = 0x09c4 // PAC Arria 10 GX (PF_DSC_1_X)
	DeviceIntelPACA10VF   = 0x09c5
	DeviceIntelInt5X      = 0xbcbd // PF_INT_5_X
	DeviceIntelInt5XVF    = 0xbcbf
	DeviceIntelInt6X      = 0xbcc0 // PF_INT_6_X
	DeviceIntelInt6XVF    = 0xbcc1
	DeviceIntelPACN3000   = 0x0b30
	DeviceIntelPACD5005   = 0x0b2b
	DeviceIntelPACD5005VF = 0x0b2c
	DeviceIntelDFL        = 0xbcce // generic DFL card
	DeviceIntelDFLVF      = 0xbccf
	// dfl-pci.c matches the N6000, N6001 and C6100 as subsystem ids under
	// DeviceIntelDFL; kvloom's tables have always taken them as device ids
	// too, and keep doing so.
	DeviceIntelN6000 = 0x1770
	DeviceIntelN6001 = 0x1771
	DeviceIntelC6100 = 0x17d4
)

// Silicom FPGA SmartNIC device ids under VendorSilicom (dfl-pci.c).
const (
	DeviceSilicomN5010 = 0x1000
	DeviceSilicomN5011 = 0x1001
)

// IsFPGA reports whether vendor:device is an FPGA card function: any
// AMD/Xilinx function, an Intel DFL/PAC card, or a Silicom N5010/N5011.
// It is the table both the topology matrix and the FPGA backend go by.
func IsFPGA(vendor, device uint16) bool {
	switch vendor {
	case VendorXilinx:
		return true
	case VendorIntel:
		switch device {
		case DeviceIntelPACA10, DeviceIntelPACA10VF, DeviceIntelInt5X, DeviceIntelInt5XVF,
			DeviceIntelInt6X, DeviceIntelInt6XVF, DeviceIntelPACN3000, DeviceIntelPACD5005,
			DeviceIntelPACD5005VF, DeviceIntelDFL, DeviceIntelDFLVF, DeviceIntelN6000,
			DeviceIntelN6001, DeviceIntelC6100:
			return true
		}
	case VendorSilicom:
		return device == DeviceSilicomN5010 || device == DeviceSilicomN5011
	}
	return false
}
