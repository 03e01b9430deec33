// Package pciid holds the PCI identities more than one kvloom package needs:
// the vendor ids kvloom recognises, the table of FPGA card functions (every
// AMD/Xilinx function, Intel's DFL cards as drivers/fpga/dfl-pci.c binds
// them, Silicom's N5010/N5011), and PCI function addresses (BDF) in every
// form we meet, normalised to sysfs form.
//
// gpu classifies functions for the topology matrix with it and nic/fpga
// opens cards with it; neither may import the other, so the shared facts
// sit here, below both.
//
// pciid is a leaf: it must not import any kvloom package. It does no I/O.
//
// Errors: ErrMalformed, carried by a *ParseError that names the input, the
// offset and the reason.
package pciid
