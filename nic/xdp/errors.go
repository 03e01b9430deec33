package xdp

import "errors"

// Sentinel errors callers branch on. Errors that concern the nic.Device
// contract wrap nic's sentinels instead (nic.ErrBadRequest,
// nic.ErrQueueFull, nic.ErrTableFull, nic.ErrClosed,
// nic.ErrIncompatibleImage, nic.ErrNotSupported, nic.ErrDeviceFault).
var (
	// ErrOptions: Options hold a value out of range; nothing was touched.
	ErrOptions = errors.New("invalid xdp options")
	// ErrKernel: the kernel lacks something the program needs (BPF ring
	// buffers, bpf_loop, BPF links for XDP, BPF_PROG_TEST_RUN); the error
	// names it and the kernel version that has it.
	ErrKernel = errors.New("kernel cannot run the kvlp program")
)
