// Package bitstream owns accelerator images: the signed container format
// (docs/bitstream.md) with its canonical manifest and payload sections,
// ed25519 signing and trust, read-only parsers for vendor payloads (Xilinx
// .bit, Vitis xclbin2, eBPF ELF objects through cilium/ebpf), and the
// loaders that put an image onto a target: sim, xdp, fpga-dfl, fpga-mgr and
// xrt, each behind the Loader interface, switched atomically by a Slot.
//
// Parsing is pure: Parse, ParseBit, ParseXclbin and InspectEBPF read bytes
// and touch nothing. Loaders touch the host only in Load, through a root
// path or an interface in their options, so tests run them against fake
// sysfs trees and stand-in targets (internal/testutil).
//
// bitstream must not import nic or any other kvloom package: nic imports it,
// because nic.Device.Load takes a *Image.
//
// Errors: parsers return *FormatError (Is ErrMalformed; payload corruption
// also Is ErrHashMismatch). Verify returns errors wrapping ErrUnsigned,
// ErrUntrusted or ErrBadSignature. Compatibility problems are
// *IncompatibleError (Is ErrIncompatible). Loaders add ErrNotSupported,
// ErrToolMissing, ErrNoDevice and ErrLoadFailed, and wrap
// ErrTargetUnchanged when a failed load left the previous image live.
package bitstream
