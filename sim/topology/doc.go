// Package topology owns kvloom's topology file format (docs/topology.md):
// hosts with their NUMA nodes and PCIe trees (host bridges, root ports,
// switches), GPUs, NICs and accelerators, NVMe drives and storage tiers;
// network switches; and the links between them with bandwidth, latency and
// per-message overhead. `kvloom topo --export` writes it from a discovered
// machine; the simulator (sim) and the tuner (sim/tune) read it.
//
// Parse is strict (unknown or duplicate keys are errors with their line)
// and validates the whole file, reporting every problem at once with
// errors.Join. Marshal is deterministic. The package also holds the GPU
// model catalogue the format refers to by name (GPUPreset) and the PCIe
// distance classification (Host.Distance: PIX, PXB, PHB, NODE, SYS).
//
// topology imports no other kvloom package, so that gpu and sim can both
// depend on it. Errors wrap the sentinels of errors.go: ErrSyntax,
// ErrVersion, ErrUnknownPreset, ErrNegative, ErrDangling, ErrDuplicate and
// ErrInvalid; validation problems are *FieldError values carrying the line
// and field path.
package topology
