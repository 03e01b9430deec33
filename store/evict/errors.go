package evict

import "errors"

// Sentinel errors callers branch on; returned errors wrap them with detail.
var (
	// ErrPolicy: an unknown policy name or an invalid capacity.
	ErrPolicy = errors.New("invalid eviction policy")
)
