// Package nic owns the contract every in-network accelerator backend
// implements (Device), the types that cross it (index updates, requests,
// events, stats), the backend registry that turns a --device spec
// ("auto", "sim", "fpga:BDF", "xdp:IFACE") into a Device, and the register
// map of the FPGA implementation.
//
// Backends live in subpackages (nic/simnic, nic/fpga, nic/xdp) and are
// registered explicitly by hostctl, never by blank imports. nic imports
// matcher and bitstream; it must not import store, gpu, sim, engine or
// hostctl.
package nic
