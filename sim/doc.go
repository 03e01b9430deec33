// Package sim is kvloom's simulator: a deterministic discrete-event engine
// with models of GPUs (prefill, decode, tensor parallelism), links (PCIe,
// NVLink, Ethernet and InfiniBand, NVMe, DRAM, Redis over TCP), storage
// tiers and the in-network accelerator; workloads (the Mooncake trace
// format, multi-turn chat and RAG generators); the serving policies kvloom
// is compared against; and the reports, plots and timelines of a run.
//
// Pipeline is the accelerator's timing model and the single source of its
// parameters; nic/simnic times itself with it. Estimate answers "load or
// recompute?" for one request analytically; Run simulates a cluster from a
// sim/topology file over time. Every model and its sources are in
// docs/sim-model.md.
//
// sim may import matcher, kvcache and sim/topology only. It starts no
// goroutines. Errors wrap the sentinels of errors.go (ErrPipeline,
// ErrUnknownModel, ErrTrace, ErrConfig).
package sim
