package matcher

import (
	"errors"
	"fmt"
)

// Limits on Options values.
const (
	DefaultMaxPromptLen  = 1 << 20
	MaxMaxPromptLen      = 1<<31 - 1 // offsets are stored in 32 bits
	DefaultMaxMatches    = 1024
	DefaultMaxCandidates = 1 << 20
	MaxMinLen            = 1 << 16
)

// Options configure an Index. The zero value of every field selects its
// default; New reports every out-of-range field at once.
type Options struct {
	// MinLen is the shortest chunk match FindAll reports. Zero means 64;
	// MinAnchorK..MaxMinLen.
	MinLen int
	// AnchorK is the k-gram length of anchors. Zero means min(32, MinLen).
	// Between MinAnchorK and min(MaxAnchorK, MinLen). The winnowing window
	// is W = min(MinLen-AnchorK+1, MaxAnchorW), so every common run of
	// MinLen tokens shares an anchor.
	AnchorK int
	// BlockSize is the prefix block size in tokens. Zero means 256;
	// otherwise MinBlockSize..MaxBlockSize.
	BlockSize int
	// MaxPromptLen bounds the tokens of a prompt and of an indexed entry.
	// Zero means 1<<20; at most 1<<31-1.
	MaxPromptLen int
	// Vocab, when positive, is the vocabulary size: every token of a prompt
	// or entry must be below it. Zero means no bound is checked.
	Vocab int
	// MaxMatches bounds the chunk matches FindAll returns (the first ones in
	// its documented order; Find reports the truncation). Zero means 1024.
	MaxMatches int
	// MaxCandidates bounds the index postings a prompt's anchors may hit
	// before FindAll gives up with ErrTooManyCandidates. Zero means 1<<20.
	MaxCandidates int
}

// resolved returns o with defaults filled in, and every problem found.
func (o Options) resolved() (Options, error) {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrOptions)...))
	}
	if o.MinLen == 0 {
		o.MinLen = DefaultMinLen
	}
	if o.AnchorK == 0 {
		o.AnchorK = min(DefaultAnchorK, max(o.MinLen, MinAnchorK))
	}
	if o.MinLen < MinAnchorK || o.MinLen > MaxMinLen {
		bad("MinLen %d outside [%d, %d]", o.MinLen, MinAnchorK, MaxMinLen)
	} else if o.AnchorK < MinAnchorK || o.AnchorK > min(MaxAnchorK, o.MinLen) {
		bad("AnchorK %d outside [%d, %d]", o.AnchorK, MinAnchorK, min(MaxAnchorK, o.MinLen))
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if err := CheckBlockSize(o.BlockSize); err != nil {
		bad("BlockSize %d outside [%d, %d]", o.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if o.MaxPromptLen == 0 {
		o.MaxPromptLen = DefaultMaxPromptLen
	}
	if o.MaxPromptLen < 1 || o.MaxPromptLen > MaxMaxPromptLen {
		bad("MaxPromptLen %d outside [1, %d]", o.MaxPromptLen, MaxMaxPromptLen)
	}
	if o.Vocab < 0 {
		bad("Vocab %d is negative", o.Vocab)
	}
	if o.MaxMatches == 0 {
		o.MaxMatches = DefaultMaxMatches
	}
	if o.MaxMatches < 1 {
		bad("MaxMatches %d below 1", o.MaxMatches)
	}
	if o.MaxCandidates == 0 {
		o.MaxCandidates = DefaultMaxCandidates
	}
	if o.MaxCandidates < 1 {
		bad("MaxCandidates %d below 1", o.MaxCandidates)
	}
	return o, errors.Join(errs...)
}

// anchorParams returns the anchor parameters the options imply.
func (o Options) anchorParams() AnchorParams { return anchorParamsFor(o.MinLen, o.AnchorK) }

// checkTokens validates a prompt or entry: what names it in errors, min is
// the shortest allowed length.
func (o *Options) checkTokens(what string, toks []Token, minLen int) error {
	if len(toks) == 0 {
		return fmt.Errorf("%s: %w", what, ErrEmpty)
	}
	if len(toks) > o.MaxPromptLen {
		return fmt.Errorf("%s: %d tokens, limit MaxPromptLen %d: %w", what, len(toks), o.MaxPromptLen, ErrTooLong)
	}
	if len(toks) < minLen {
		return fmt.Errorf("%s: %d tokens, need at least %d: %w", what, len(toks), minLen, ErrTooShort)
	}
	if o.Vocab > 0 {
		v := Token(o.Vocab)
		for i, t := range toks {
			if t >= v {
				return fmt.Errorf("%s: token %d at offset %d not below vocabulary size %d: %w", what, t, i, o.Vocab, ErrTokenRange)
			}
		}
	}
	return nil
}

func checkSalt(what string, s Salt) error {
	if s.Model == [8]byte{} {
		return fmt.Errorf("%s: salt %s has a zero model fingerprint: %w", what, s, ErrZeroSalt)
	}
	return nil
}
