package nic

import (
	"fmt"
	"math"

	"github.com/kvloom/kvloom/matcher"
)

// EntryLimits are the bounds a device holds index entries to: the
// geometry registers of a card (Geometry.EntryLimits), the matcher options
// and table limit of a software backend.
type EntryLimits struct {
	// MaxTokens is the longest entry the device stores; 0 means no limit.
	MaxTokens int
	// MinMatch is the shortest match the device reports: a chunk shorter
	// than it could never match.
	MinMatch int
	// BlockTokens is the prefix block size: a prefix chain needs one full
	// block, and its key is the last full block's key (EntryKey).
	BlockTokens int
}

// CheckEntry reports what a device with limits lim would refuse in e, so
// that a backend refuses a bad update before it touches the device: no
// tokens, too many, a NaN rank, a zero salt, a chain or chunk too short to
// ever match, or a key that is not EntryKey's. Every error wraps
// ErrBadRequest (and matcher.ErrZeroSalt for a zero salt). Backends with
// further rules (a vocabulary) check them on top.
func CheckEntry(e Entry, lim EntryLimits) error {
	switch {
	case len(e.Tokens) == 0:
		return fmt.Errorf("no tokens: %w", ErrBadRequest)
	case lim.MaxTokens > 0 && len(e.Tokens) > lim.MaxTokens:
		return fmt.Errorf("%d tokens, device limit is %d: %w", len(e.Tokens), lim.MaxTokens, ErrBadRequest)
	case math.IsNaN(e.Rank):
		return fmt.Errorf("rank is NaN: %w", ErrBadRequest)
	case e.Salt.Model == [8]byte{}:
		return fmt.Errorf("%w: %w", ErrBadRequest, matcher.ErrZeroSalt)
	case e.Prefix && len(e.Tokens) < lim.BlockTokens:
		return fmt.Errorf("prefix chain of %d tokens is shorter than one block (%d): %w", len(e.Tokens), lim.BlockTokens, ErrBadRequest)
	case !e.Prefix && len(e.Tokens) < lim.MinMatch:
		return fmt.Errorf("chunk of %d tokens is shorter than the minimum match %d and could never match: %w", len(e.Tokens), lim.MinMatch, ErrBadRequest)
	}
	if want := EntryKey(e, lim.BlockTokens); want != e.Key {
		return fmt.Errorf("key is not the key of its salt and tokens (%s): %w", want, ErrBadRequest)
	}
	return nil
}

// EntryKey returns the key e must carry: ChunkKeyOf for a chunk, the last
// full block's prefix key for a prefix chain of blockSize-token blocks
// (the zero key when it has no full block).
func EntryKey(e Entry, blockSize int) matcher.ChunkKey {
	if !e.Prefix {
		return matcher.ChunkKeyOf(e.Salt, e.Tokens)
	}
	keys, err := matcher.PrefixKeys(e.Salt, e.Tokens, blockSize, nil)
	if err != nil || len(keys) == 0 {
		return matcher.ChunkKey{}
	}
	return keys[len(keys)-1]
}
