// Package evict holds the cache replacement policies of kvloom's memory tier
// and the tools that measure them on real request traces.
//
//   - Policy is a weighted (byte- or block-sized) replacement policy over
//     comparable keys: LRU (the baseline), S3-FIFO (Yang et al., SOSP'23)
//     and W-TinyLFU (Einziger et al., as Caffeine ships it). New returns one
//     by name; DefaultPolicy is the one the memory tier ships.
//   - Sketch is a 4-bit count-min frequency sketch with periodic halving
//     (TinyLFU's), also used by the disk tier's "wanted twice" admission
//     filter.
//   - Replay runs a request trace (plain block ids: sim.ReadMooncake reads
//     the Mooncake FAST'25 format, `kvloom trace replay` hands its requests
//     over) through a policy with prefix-cache semantics and reports the
//     token hit ratio.
//
// Policies are not safe for concurrent use: the memory tier serialises them
// under its own lock. evict imports no other kvloom package.
//
// Errors: ErrPolicy (unknown policy name or bad capacity).
package evict
