package matcher

import "errors"

// Sentinel errors callers branch on. Returned errors wrap them with detail.
var (
	// ErrSaltSize: a salt or model fingerprint has the wrong number of bytes.
	ErrSaltSize = errors.New("wrong salt size")
	// ErrEmptyTenant: a tenant namespace is empty.
	ErrEmptyTenant = errors.New("empty tenant namespace")
	// ErrBadKey: a chunk key is not 32 hex digits.
	ErrBadKey = errors.New("malformed chunk key")
)
