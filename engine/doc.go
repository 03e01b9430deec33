// Package engine is kvloom's reference CPU inference engine for a tiny real
// Llama model in llama2.c format (the stories260K checkpoint under
// ../shared/testdata/models). It stands in for the serving engine in tests,
// in the quality evaluation and in the demo.
//
// It owns:
//   - loaders for llama2.c checkpoints (ParseCheckpoint) and their
//     SentencePiece-derived tokenizer files (ParseTokenizer), strict about
//     truncated and inconsistent input;
//   - a float32 forward pass that mirrors llama2.c's run.c operation by
//     operation (same summation order in every dot product, no fused
//     multiply-add), so that greedy decoding reproduces run.c's output;
//   - per-layer K/V (keys after RoPE) in kvcache's layer-major layout,
//     exported as kvcache chunk blobs;
//   - prefill on top of injected KV with a recompute set (CacheBlend/EPIC
//     style non-prefix reuse) and CacheBlend's KV-deviation scores;
//   - greedy and temperature sampling with llama2.c's own seeded RNG.
//
// engine may import kvcache and matcher, and nothing else from kvloom.
//
// Errors: ErrTruncated, ErrBadHeader, ErrInconsistent (loaders),
// ErrContextFull (a sequence would exceed the model's seq_len),
// ErrBadToken (a token id outside the vocabulary) and ErrBadInput (bad
// arguments); each is wrapped with the field, offset, value and limit.
package engine
