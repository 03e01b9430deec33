// Package nic owns the contract every in-network accelerator backend
// implements (Device), the types that cross it (index updates, requests,
// events, stats), the backend registry that turns a --device spec
// ("auto", "sim", "fpga:BDF", "xdp:IFACE") into a Device, and the register
// map of the FPGA implementation (docs/regmap.md):
//
//   - regmap.yaml is the one source of the map; `go generate` (nic/internal/gen)
//     writes regmap_gen.go and the tables of docs/regmap.md from it.
//   - Region is device memory as the CPU sees it (a BAR mapped from sysfs
//     resourceN with MapFile, or plain memory), accessed with aligned atomic
//     loads and stores; layout.go encodes the ring descriptors, completions
//     and table records.
//   - Driver is the host side of the map — rings, doorbells, polling with
//     backoff in place of interrupts, the table window, fault detection and
//     reset — shared by every backend that speaks it (nic/fpga on a card,
//     nic/simnic on the simulator), so that the code that drives a card is
//     the code the simulator tests.
//
// Backends live in subpackages (nic/simnic, nic/fpga, nic/xdp) and are
// registered explicitly by the caller (hostctl, cmd/kvloom), never by blank
// imports or init. nic/nictest is the conformance suite they all pass.
//
// nic imports matcher and bitstream; it must not import store, gpu, sim,
// engine, hostctl or a backend. Errors wrap the sentinels of errors.go
// (ErrTableFull as *TableFullError, ErrQueueFull, ErrBadRequest,
// ErrDeviceFault as *DeviceError, ErrTimeout, ErrNoDevice, ErrBadSpec,
// ErrClosed, ErrIncompatibleImage, ErrNotSupported).
package nic
