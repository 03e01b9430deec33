// Package gpu knows where every byte of KV will travel on a host and moves
// it there.
//
// It owns:
//   - discovery: every PCI function from sysfs (u-root's pkg/pci reads the
//     identity files; the PCIe path, NUMA node, local CPUs and link come from
//     the resolved sysfs path and attribute files), and the GPUs' own view
//     through NVML (go-nvml) where libnvidia-ml is present — name, UUID,
//     memory, bus id, NVLinks, P2P status and NVML's common
//     ancestor of every GPU pair, and each GPU's NUMA affinity (NVML's
//     memory affinity where it answers, else sysfs; see
//     Topology.NUMAAffinity for the rule the matrix uses);
//   - distances between any two functions in nvidia-smi's vocabulary (PIX,
//     PXB, PHB, NODE, SYS), computed from sysfs paths the way NCCL does and
//     cross-checked against NVML for GPU pairs; the matrix `kvloom topo`
//     prints, and its export to the sim/topology file format;
//   - the DMA path: the DMA interface (per-layer asynchronous copies into a
//     device buffer, two ways in: CopyLayer stages any memory through
//     pinned chunks, pipelined and spread over a few goroutines;
//     AllocHost/CopyHost hand a layer the stitcher wrote straight into
//     pinned memory to the device with no staging copy), the sim backend
//     (host memory standing in for GPU memory, timed by a PCIe link model
//     on a wall or virtual clock), the CUDA backend (libcuda.so.1 through
//     purego, no cgo), and the bounded pinned pool both use (HostPool:
//     contiguous runs of pages, served in arrival order, every buffer
//     returned on completion, failure, cancellation and timeout).
//
// Every hardware seam is injectable: Options.SysfsRoot, Options.NVML (an
// NVMLLibrary; go-nvml's mocks in tests), CUDAOptions.Library. NVML and CUDA
// types stop in this package: gpu.GPU, not nvml.Device, crosses package lines.
//
// gpu may import kvcache, matcher, sim/topology and internal/pciid (vendor
// ids, the FPGA id table, bus ids); it must not import store, nic, sim,
// engine or hostctl.
//
// Errors: ErrNoNVML (NVML absent or failed to initialise; discovery goes on
// with sysfs), ErrNoCUDA (libcuda absent or unusable; callers fall back to
// the sim backend), ErrNotFound, ErrMalformed (a *ParseError naming the
// input, offset and reason; both are pciid's, which parses bus ids),
// ErrClosed, ErrBadRequest, ErrNotSupported; failed CUDA calls are
// *CUDAError.
package gpu
