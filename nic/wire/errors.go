package wire

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on. Decoding errors are *DecodeError values
// that wrap one of them.
var (
	// ErrTruncated: the data ends before the header or the entries it declares.
	ErrTruncated = errors.New("kvlp message truncated")
	// ErrMagic: the first two bytes are not "KV".
	ErrMagic = errors.New("kvlp bad magic")
	// ErrVersion: the version is not one this package speaks.
	ErrVersion = errors.New("kvlp unsupported version")
	// ErrType: the message type is unknown.
	ErrType = errors.New("kvlp unknown message type")
	// ErrLength: the length field disagrees with the data or with the entry count.
	ErrLength = errors.New("kvlp bad length")
	// ErrCount: the entry count is zero or above MaxEntries.
	ErrCount = errors.New("kvlp bad entry count")
	// ErrFragment: the fragment index is not below the fragment count.
	ErrFragment = errors.New("kvlp bad fragment numbering")
	// ErrFlags: a flag bit this version does not define is set.
	ErrFlags = errors.New("kvlp unknown flags")
	// ErrReserved: a field that must be zero (or consistent) is not.
	ErrReserved = errors.New("kvlp reserved field misused")
	// ErrNotKVLP: a frame is not UDP traffic on the KVLP port.
	ErrNotKVLP = errors.New("not a kvlp frame")
	// ErrMismatch: a reply does not answer the hint it is paired with.
	ErrMismatch = errors.New("kvlp reply does not match hint")
	// ErrNotSupported: packet capture is not available on this platform.
	ErrNotSupported = errors.New("not supported on this platform")
)

// DecodeError says which field of a message was wrong, where it sits, what
// it held and what the limit was.
type DecodeError struct {
	Field  string
	Offset int
	Value  uint64
	Limit  string
	Err    error // one of the sentinels above
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decode kvlp: field %s at offset %d: value %d, want %s: %v", e.Field, e.Offset, e.Value, e.Limit, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }
