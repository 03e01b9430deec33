// Package tune is kvloom's topology tuner: it searches the daemon's
// parameters (chunk size, prefetch depth, accelerator table entries, the
// NIC each GPU loads through, the DRAM given to KV, the recompute budget,
// the stored-KV codec) for a topology and a workload by running the
// simulator, reports the best configuration, the top five and each knob's
// sensitivity, and writes the result as kvloomd's YAML configuration
// (DaemonConfig).
//
// tune imports sim and sim/topology; it must not import hostctl (the
// daemon imports this package's DaemonConfig contract, not the other way
// round). It starts no goroutines. Errors wrap ErrTune or the simulator's
// sentinels.
package tune
