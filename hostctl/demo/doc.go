// Package demo is `kvloom demo` (what `make demo` runs): it starts an
// embedded kvloomd (hostctl.Daemon) on its defaults — the simulated
// accelerator, a memory and a disk tier under a temporary data directory,
// shared-memory segments in a temporary directory, the API on a Unix socket
// — and drives it through the gRPC API the way an inference engine does,
// with the reference engine (engine/) on the real tiny model stories260K.
//
// Two workloads run against it:
//   - multi-turn chat: each turn's prompt is the previous prompt, the model's
//     reply and new user text; the engine Stores each turn's KV (prefix
//     blocks) and the next turn Prepares it back. These requests reuse a
//     prefix only, so the demo checks that the engine's output is the full
//     prefill's (logits within LogitTolerance, identical greedy replies);
//   - RAG: stories the model wrote (engine/quality's documents) stored once
//     as shared, declared chunks; prompts of 2–6 of them in varying orders
//     and a cue get non-prefix reuse with RoPE-corrected stitching and the
//     daemon's recompute policy; the demo reports KL divergence, top-1
//     agreement and greedy match length against a full prefill, for the
//     stitched KV alone, the daemon's plan and CacheBlend's own selection.
//
// Every reused range is checked against the KV the engine stored under its
// key (tokens equal, V rows identical, K rows the stored keys re-rotated;
// prefix rows identical to the engine's own prefill). The summary (Summary,
// as text or JSON) gives requests served, tokens reused, bytes by tier, the
// engine's prefill time with and without reuse, the device's matches and
// every check; Run shuts the daemon down and removes its directories.
//
// demo may import any kvloom package (it sits under hostctl). Errors:
// ErrOptions for invalid options, ErrCheck when a check failed (the
// summary lists which), and the errors of the packages it drives.
package demo
