package demo

import "errors"

var (
	// ErrOptions means demo options are out of range.
	ErrOptions = errors.New("invalid demo options")
	// ErrCheck means the demo ran but one of its checks failed (output
	// equality, the KV of a reused range, the daemon's counters, the
	// shutdown); Summary.Failures says which.
	ErrCheck = errors.New("demo check failed")
)
