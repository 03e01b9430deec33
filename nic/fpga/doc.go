// Package fpga is the PCI FPGA backend: it discovers accelerator cards in
// sysfs (github.com/u-root/u-root/pkg/pci over an injectable sysfs root,
// with vendor/device tables for AMD/Xilinx Alveo and Intel PAC/DFL cards),
// maps the card's BAR by mmapping sysfs resourceN, programs the card through
// bitstream's loaders (AMD XRT for Alveo, Intel DFL partial reconfiguration
// for PAC/N3000/N6000, or any bitstream.Loader passed in), and drives the
// register map of docs/regmap.md with nic.Driver: rings, doorbells, polling
// with backoff in place of interrupts, error handling and reset.
//
// The kvloom image exposes its register map at offset 0 of the BAR the card
// table names. In CI the same code runs against a fake sysfs tree whose
// resourceN is a file the simulator (nic/simnic) serves from its side of a
// shared mapping (docs/regmap.md explains the arrangement).
//
// fpga imports nic, matcher, bitstream and internal/pciid (vendor and
// device ids, PCI addresses); it must not import nic/simnic, sim, store, gpu
// or hostctl. Errors wrap nic.ErrNoDevice (card absent), nic.ErrBadSpec (a
// malformed PCI address; pciid's *ParseError says what is wrong),
// ErrUnsupported (a PCI function that is not a supported card),
// ErrBARTooSmall, ErrNotProgrammed (no kvloom image on the card),
// ErrBARBusy (the BAR is claimed by a kernel driver) and the nic and
// bitstream sentinels.
package fpga
