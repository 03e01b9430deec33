package fpga

import "errors"

// Sentinel errors callers branch on.
var (
	// ErrUnsupported: the PCI function is not a card of the table (wrong
	// vendor or device id), or runs a golden/recovery image.
	ErrUnsupported = errors.New("unsupported PCI device")
	// ErrBARTooSmall: the card's BAR cannot hold the register map.
	ErrBARTooSmall = errors.New("BAR too small for the register map")
	// ErrNotProgrammed: the card runs no kvloom image (MAGIC does not read
	// "KVLM"); Load one first.
	ErrNotProgrammed = errors.New("no kvloom image on the card")
	// ErrBARBusy: the kernel refused to map the BAR: a driver claimed it
	// exclusively, or the kernel is locked down.
	ErrBARBusy = errors.New("BAR cannot be mapped")
)
