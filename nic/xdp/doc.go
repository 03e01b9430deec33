// Package xdp is the eBPF/XDP backend of nic.Device: KVLP hints
// (docs/protocol.md) are answered in the kernel, at the NIC driver, by the
// program in bpf/kvlp.c. It looks every anchor of a hint up in a BPF hash map
// (the hot index the control plane pushes, keyed by salt id and
// fingerprint), replies with XDP_TX, and writes one ring-buffer event per hit
// so that the daemon starts prefetching before the request reaches user
// space. Everything that is not KVLP passes to the kernel stack; malformed
// KVLP is dropped; per-CPU counters record every outcome.
//
// The Go side loads the program (the built-in bpf2go object, or a signed
// bitstream image of kind xdp through bitstream's xdp loader), attaches it in
// generic, native or offload mode with a BPF link, keeps the index map in
// step with the table in batches, reads the ring buffer in a goroutine it
// owns, and detaches on Close. As a nic.Device, Submit computes a prompt's
// anchors and prefix block keys, sends them through the program as real
// hint frames with BPF_PROG_TEST_RUN, and verifies every hit on the tokens
// the control plane pushed, so that it reports exactly what matcher.FindAll
// reports over the table's entries.
//
// Kernel requirements: Linux ≥ 5.17 (BPF ring buffer 5.8, XDP BPF links
// 5.9, bpf_loop 5.17), root or CAP_BPF+CAP_NET_ADMIN. Off Linux, Open
// returns nic.ErrNotSupported.
//
// xdp imports nic, nic/wire, matcher and bitstream; it must not import
// store, gpu, sim, engine or hostctl. Errors wrap nic's sentinels for the
// device contract, and ErrOptions or ErrKernel.
package xdp
