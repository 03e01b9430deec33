package store

import "errors"

// Sentinel errors callers branch on. Returned errors wrap them with detail
// (the tier, the key, the file or address, the size and limit at fault).
var (
	// ErrNotFound: the chunk is not stored — or it was, but something about
	// it is in doubt (a checksum, the model, the key, a missing piece), so
	// it must be recomputed. Such errors also wrap the reason.
	ErrNotFound = errors.New("chunk not found")
	// ErrCorrupt: stored bytes failed verification (checksum, truncation,
	// a header that contradicts the index). The tier has quarantined them.
	ErrCorrupt = errors.New("stored chunk is corrupt")
	// ErrUnavailable: a tier cannot be reached (a Redis server down, an
	// I/O error); the tiered store serves from the others.
	ErrUnavailable = errors.New("storage tier unavailable")
	// ErrFull: no room could be made (a full disk, memory held by readers).
	ErrFull = errors.New("storage tier full")
	// ErrTooLarge: a chunk larger than a tier's capacity or blob limit.
	ErrTooLarge = errors.New("chunk too large for tier")
	// ErrNotAdmitted: the disk tier's admission filter declined a chunk
	// that has not been wanted often enough yet. Not a failure.
	ErrNotAdmitted = errors.New("chunk not admitted")
	// ErrQueueFull: the write-back queue's byte budget or depth is
	// exhausted; the chunk was not accepted.
	ErrQueueFull = errors.New("write-back queue full")
	// ErrClosed: the store, reader, prefetcher or queue is closed.
	ErrClosed = errors.New("closed")
	// ErrConfig: an invalid tier specification or option.
	ErrConfig = errors.New("invalid storage configuration")
	// ErrDeadline: a prefetch ran out of time; what arrived is usable and
	// the rest is marked for recompute.
	ErrDeadline = errors.New("prefetch deadline exceeded")
)
