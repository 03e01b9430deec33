package engine

import "errors"

var (
	// ErrTruncated means a model or tokenizer file ended before a field
	// its header promises.
	ErrTruncated = errors.New("file truncated")
	// ErrBadHeader means a checkpoint header holds a value that no model
	// can have (a zero or negative dimension, heads that do not divide the
	// model width, sizes past the limits).
	ErrBadHeader = errors.New("bad checkpoint header")
	// ErrInconsistent means a file parsed but contradicts itself or its
	// companion (trailing bytes, a non-finite weight, a tokenizer whose
	// pieces break the llama2.c conventions).
	ErrInconsistent = errors.New("inconsistent model file")
	// ErrContextFull means a sequence would run past the model's seq_len.
	ErrContextFull = errors.New("context full")
	// ErrBadToken means a token id is outside the vocabulary.
	ErrBadToken = errors.New("token out of vocabulary")
	// ErrBadInput means an argument is out of range (a recompute position
	// past the cache, a KV prefix of the wrong shape).
	ErrBadInput = errors.New("bad input")
)
