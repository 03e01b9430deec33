// Package bitstream owns accelerator images: the signed container format
// (docs/bitstream.md) with its manifest and payload sections, ed25519 signing
// and trust, read-only parsers for vendor payloads (Xilinx .bit, Vitis
// xclbin2, eBPF ELF objects), and the loaders that put an image onto a
// target (sim, xdp, fpga-dfl, fpga-mgr, xrt).
//
// bitstream must not import nic or any backend: backends import it. Loaders
// reach their targets through interfaces and root paths passed in.
package bitstream
