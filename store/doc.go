// Package store owns where chunk KV lives and how it gets back in time:
//
//   - Store, the contract every tier implements: Get (streaming, layer by
//     layer, through kvcache.ChunkReader), Put, batched Has, Delete, Stats;
//   - the tiers: Memory (a byte budget, the evict package's replacement
//     policy, leases that readers hold and eviction cannot be starved by),
//     Disk (chunks packed into large crash-safe files, checksums verified on
//     read, corrupt files quarantined, a "wanted twice" admission filter, an
//     index rebuilt from blob headers on restart) and Redis (single server or
//     Cluster; one key per group of layers plus a metadata key, transfers of
//     at least 256 KiB, pipelined);
//   - Tiered, which stacks them (mem → disk → redis) with promotion on
//     hit and an in-memory location index, configured from one string
//     (Parse, Open);
//   - BatchGetter, opening many chunks in one call: the Redis tier reads
//     their headers and first layer groups in one pipelined round trip,
//     the tiered store sends that first and opens local hits meanwhile;
//   - Prefetcher, which loads a prompt's chunks concurrently under a
//     deadline and a bytes-in-flight budget, layer 0 of every chunk first,
//     deduplicating concurrent fetches of one chunk across requests;
//   - WriteBack, the bounded asynchronous queue that offloads new chunks.
//
// Never wrong KV: a tier returns a chunk only if its key, model fingerprint
// and checksums verify; on any doubt the answer is a miss (ErrNotFound
// wrapping the reason) and the engine recomputes.
//
// store imports matcher and kvcache (and store/evict) and nothing else from
// kvloom; it must not import gpu, engine, sim, nic or hostctl.
//
// Errors callers branch on are in errors.go: ErrNotFound, ErrCorrupt,
// ErrUnavailable, ErrFull, ErrTooLarge, ErrNotAdmitted, ErrQueueFull,
// ErrClosed, ErrConfig, ErrDeadline.
package store
