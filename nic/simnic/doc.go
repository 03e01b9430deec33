// Package simnic is kvloom's register-level simulated accelerator. Model
// implements the register map of docs/regmap.md in software on a memory
// region — plain memory, or a file mapped with MAP_SHARED that stands in for
// a card's BAR — with the matching done by a matcher.Index holding exactly
// the table's entries (so it is exact by construction) and the timing taken
// from sim.Pipeline (so the simulator and the simulated device agree). Time
// is virtual: every request's device time is a pure function of its work.
//
// Device is the simulator as a nic.Device: a Model on plain memory, driven
// by the same nic.Driver that drives a card. Backend registers it.
//
// Limits behave like hardware: a full table evicts its lowest-ranked entry
// or rejects the insert, a full completion ring stalls the device (and so
// fills the request ring, and so refuses submissions), and a malformed
// descriptor or record sets the error registers and is answered in place.
//
// simnic imports nic, matcher, bitstream and sim; it must not import
// nic/fpga, store, gpu, engine or hostctl. Its errors wrap ErrConfig (a
// configuration or image the simulator cannot take) and the nic sentinels.
package simnic
