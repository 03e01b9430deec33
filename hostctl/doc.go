// Package hostctl is kvloomd, kvloom's host daemon, as a library: an
// embedding program (cmd/kvloomd, `kvloom demo`, tests) builds a Daemon
// with New, serves the API on listeners with Serve/ServeTLS (or Run, which
// listens where the configuration says and stops on ctx), and stops it with
// Shutdown.
//
// It owns:
//   - the configuration (Config: one versioned YAML file, every field
//     documented in its `doc` tag, defaults that run with no file, flags on
//     top, unknown keys and bad values reported with file and line, all at
//     once); it accepts what `kvloom tune --out` writes (sim/tune.DaemonConfig);
//   - the gRPC API of hostctl/api (docs/api.md): Prepare streams a plan and
//     per-layer readiness over a shared-memory segment the engine maps (and,
//     with a DMA backend, a GPU buffer fed by stitching each layer straight
//     into the backend's pinned pool), serves the chunks that made the
//     deadline and drops, before their layer is ready, planned chunks
//     whose later layers fail; Lookup answers from memory, Store cuts written-back KV into chunks by
//     the matcher's rules, and Evict, Pin, Hint, Stats, Status, Devices,
//     LoadImage, Release, Ping; grpc.health.v1 and reflection; a Unix socket
//     (0660) and optional TCP with TLS and client certificates; message
//     limits; per-tenant quotas; errors mapped to status codes in one
//     function (grpcStatus);
//   - the control loop, which ranks index entries by expected hits ×
//     recompute time saved (hot-substring sketch for chunks, reuse counts
//     for prefixes, pins first) and pushes the accelerator's table, and
//     turns hot spans it finds inside stored prompts into
//     position-independent chunks (a bounded number per round);
//   - the peer tier: other daemons found in a static list or a Redis
//     directory, whose index entries are pulled (Sync) and whose chunks
//     are streamed layer by layer (FetchChunk), then written into the local
//     tiers through the bounded write-back queue;
//   - the index journal, which keeps the index across restarts;
//   - Prometheus metrics on one registry per daemon, and slog logging;
//   - the explicit wiring of every backend: simnic, fpga and xdp in a
//     nic.Registry (Registry), the gpu DMA backend, the store's tiers,
//     write-back queue and prefetcher.
//
// hostctl may import any kvloom package. It is imported by the mains
// (cmd/kvloomd, and cmd/kvloom's client commands), by hostctl/demo (the
// `kvloom demo` run against an embedded daemon) and by tests; no library
// package below it may import it.
//
// Errors wrap the sentinels of errors.go (ErrConfig, ErrBadRequest,
// ErrUnknownModel, ErrTooLarge, ErrQuota, ErrOverloaded, ErrPermission,
// ErrNotFound, ErrNoDevice, ErrShutdown, ErrBackend) or the sentinels of
// the packages it drives; *FieldError names an invalid configuration value.
package hostctl
