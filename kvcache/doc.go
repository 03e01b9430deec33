// Package kvcache owns what a model's KV cache looks like and how it moves:
//
//   - ModelSpec: the shape of a model's KV (layers, KV heads, head dim,
//     dtype, RoPE) with its fingerprint, loaded from a Hugging Face
//     config.json, from GGUF metadata, from a llama2.c checkpoint header, or
//     from built-in presets;
//   - the KV layout (layer-major; per layer K then V, each
//     [tokens][kv_heads][head_dim]) in f32, f16, bf16 or fp8-e4m3, and the
//     paged layout engines use (blocks of B tokens and a block table);
//   - the chunk blob (docs/formats.md), its codecs, and ChunkReader, which
//     gives one layer at a time without decoding the others;
//   - the stitcher, which assembles chunks into a contiguous or paged prefix
//     layer by layer, re-rotating RoPE keys that moved;
//   - recompute plans (none, full, epic:k, ratio:r with a Scorer).
//
// kvcache imports only the standard library, matcher and a few well-kept
// modules (gguf-parser-go for GGUF metadata, golang.org/x/sys/cpu for CPU
// features). It must not import store, gpu,
// engine, sim, hostctl or any other kvloom package above it.
//
// Errors callers branch on are the sentinels of errors.go: ErrInvalidSpec,
// ErrUnsupported, ErrUnknownPreset for model descriptions; ErrNotBlob,
// ErrTruncated, ErrOversized, ErrVersion, ErrChecksum, ErrModelMismatch,
// ErrSaltMismatch, ErrMalformed, ErrUnknownCodec, ErrLayerRange for blobs
// and readers; ErrShape for buffers that do not match a shape; ErrPlan and
// ErrPolicy for stitch and recompute plans. Returned errors wrap them with the
// field, offset, value and limit that were wrong.
//
// The bf16 RoPE rotation, the CRC32C of blob payloads, the bulk dtype
// conversions and the codecs' quantize/dequantize loops have amd64 AVX-512
// kernels (rope_amd64.s, crc_amd64.s, dtype_amd64.s) chosen at run time from
// the CPU's features; the pure-Go paths (and the purego build tag) give the
// same bits, which the tests check.
package kvcache
