package kvcache

import (
	"errors"
	"strings"
)

// Sentinel errors callers branch on. Returned errors wrap them with detail
// (field, offset, value, limit).
var (
	// ErrInvalidSpec: a model description is inconsistent or out of range.
	ErrInvalidSpec = errors.New("invalid model spec")
	// ErrUnsupported: a model file asks for something kvcache does not
	// implement (an unknown RoPE scaling type, architecture or dtype).
	ErrUnsupported = errors.New("unsupported")
	// ErrUnknownPreset: no built-in preset has that name.
	ErrUnknownPreset = errors.New("unknown model preset")

	// ErrNotBlob: the bytes do not start with the chunk blob magic.
	ErrNotBlob = errors.New("not a kvloom chunk blob")
	// ErrTruncated: the blob ends before its header says it does.
	ErrTruncated = errors.New("truncated chunk blob")
	// ErrOversized: the blob is longer than its header says, or declares
	// more than the decoder's limits allow.
	ErrOversized = errors.New("oversized chunk blob")
	// ErrVersion: the blob's format version is not one this build reads.
	ErrVersion = errors.New("unsupported chunk blob version")
	// ErrChecksum: a CRC32C over the header or a layer does not match.
	ErrChecksum = errors.New("chunk blob checksum mismatch")
	// ErrModelMismatch: the blob was computed by another model (fingerprint
	// or KV shape differs from the one expected).
	ErrModelMismatch = errors.New("chunk blob is for another model")
	// ErrSaltMismatch: the blob belongs to another tenant salt.
	ErrSaltMismatch = errors.New("chunk blob is for another salt")
	// ErrMalformed: header fields contradict each other (offsets overlap,
	// lengths disagree with the shape, unknown dtype).
	ErrMalformed = errors.New("malformed chunk blob")
	// ErrUnknownCodec: the blob names a codec id that is not registered.
	ErrUnknownCodec = errors.New("unknown codec")
	// ErrLayerRange: a layer outside the reader's range was asked for.
	ErrLayerRange = errors.New("layer out of range")

	// ErrPlan: a stitch plan is inconsistent with its chunks or target.
	ErrPlan = errors.New("invalid stitch plan")
	// ErrPolicy: a recompute policy string or scorer result is invalid.
	ErrPolicy = errors.New("invalid recompute policy")
	// ErrShape: buffers do not match the shape they are used with.
	ErrShape = errors.New("kv shape mismatch")
)

// joinedErrors reports several problems on one line; errors.Is sees each.
type joinedErrors []error

func (j joinedErrors) Error() string {
	msgs := make([]string, len(j))
	for i, e := range j {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func (j joinedErrors) Unwrap() []error { return j }

func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return joinedErrors(errs)
}
