// Package quality measures, on the real stories260K model, what reusing KV
// outside the prefix and compressing it cost in output quality: it builds
// an evaluation set from the model's own domain (stories the model writes
// from varied openings, deterministic seeds), runs every reuse policy
// (full reuse with the RoPE fix, prefix-only, epic:k, CacheBlend ratio:r)
// and every KV codec against a full prefill, and reports KL divergence,
// top-1 agreement, greedy-continuation match length and the fraction
// recomputed, as JSON, a table and a plot. `kvloom eval blend` and
// `kvloom eval codecs` are thin wrappers around it.
//
// quality imports engine, kvcache and matcher, and no other kvloom
// package. Its errors wrap engine's and kvcache's sentinels; ErrOptions
// marks invalid options.
package quality
