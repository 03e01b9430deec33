package matcher

import "errors"

// Sentinel errors callers branch on. Returned errors wrap them with detail
// (the field, offset, value and limit at fault).
var (
	// ErrSaltSize: a salt or model fingerprint has the wrong number of bytes.
	ErrSaltSize = errors.New("wrong salt size")
	// ErrZeroSalt: a salt with an all-zero model fingerprint, which is what
	// an uninitialised Salt looks like.
	ErrZeroSalt = errors.New("zero salt")
	// ErrEmptyTenant: a tenant namespace is empty.
	ErrEmptyTenant = errors.New("empty tenant namespace")
	// ErrBadKey: a chunk key is not 32 hex digits.
	ErrBadKey = errors.New("malformed chunk key")
	// ErrBlockSize: a prefix block size outside [MinBlockSize, MaxBlockSize].
	ErrBlockSize = errors.New("prefix block size out of range")
	// ErrOptions: an Options or HotOptions field is out of range.
	ErrOptions = errors.New("invalid matcher options")
	// ErrEmpty: an empty prompt or chunk.
	ErrEmpty = errors.New("empty token sequence")
	// ErrTooLong: a prompt or chunk longer than Options.MaxPromptLen.
	ErrTooLong = errors.New("token sequence too long")
	// ErrTooShort: a chunk shorter than Options.MinLen, or a prefix chain
	// shorter than one block; such content could never be matched.
	ErrTooShort = errors.New("token sequence too short")
	// ErrTokenRange: a token id not below Options.Vocab.
	ErrTokenRange = errors.New("token id out of vocabulary")
	// ErrTooManyCandidates: a prompt's anchors hit more index postings than
	// Options.MaxCandidates (periodic or adversarial input); no matches are
	// returned and the caller should treat the prompt as a miss.
	ErrTooManyCandidates = errors.New("too many match candidates")
)
