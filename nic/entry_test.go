package nic_test

import (
	"errors"
	"math"
	"testing"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// TestCheckEntry: the rules every backend refuses an index entry by, each
// case alone, wrapping ErrBadRequest; entries within the limits pass.
func TestCheckEntry(t *testing.T) {
	salt, err := matcher.NewSalt([]byte("0123456789abcdef"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	lim := nic.Geometry{MaxEntryTokens: 64, MinMatchTokens: 8, BlockTokens: 16}.EntryLimits()
	if want := (nic.EntryLimits{MaxTokens: 64, MinMatch: 8, BlockTokens: 16}); lim != want {
		t.Fatalf("Geometry.EntryLimits = %+v, want %+v", lim, want)
	}
	toks := func(n int) []matcher.Token {
		out := make([]matcher.Token, n)
		for i := range out {
			out[i] = matcher.Token(100 + 7*i)
		}
		return out
	}
	entry := func(n int, prefix bool, rank float64) nic.Entry {
		e := nic.Entry{Salt: salt, Tokens: toks(n), Prefix: prefix, Rank: rank}
		e.Key = nic.EntryKey(e, lim.BlockTokens)
		return e
	}
	wrongKey := entry(8, false, 1)
	wrongKey.Key[3] ^= 1
	zeroSalt := nic.Entry{Tokens: toks(8), Rank: 1}
	zeroSalt.Key = nic.EntryKey(zeroSalt, lim.BlockTokens)
	for _, c := range []struct {
		name string
		e    nic.Entry
		lim  nic.EntryLimits
		ok   bool
		also error
	}{
		{name: "chunk of MinMatch", e: entry(8, false, 1), lim: lim, ok: true},
		{name: "chunk at the limit", e: entry(64, false, 1), lim: lim, ok: true},
		{name: "prefix chain of one block", e: entry(16, true, 1), lim: lim, ok: true},
		{name: "prefix chain with a partial block", e: entry(40, true, 1), lim: lim, ok: true},
		{name: "no limit", e: entry(200, false, 1), lim: nic.EntryLimits{MinMatch: 8, BlockTokens: 16}, ok: true},
		{name: "no tokens", e: nic.Entry{Salt: salt, Rank: 1}, lim: lim},
		{name: "over the limit", e: entry(65, false, 1), lim: lim},
		{name: "NaN rank", e: entry(8, false, math.NaN()), lim: lim},
		{name: "zero salt", e: zeroSalt, lim: lim, also: matcher.ErrZeroSalt},
		{name: "prefix chain under one block", e: entry(15, true, 1), lim: lim},
		{name: "chunk under MinMatch", e: entry(7, false, 1), lim: lim},
		{name: "key not of its tokens", e: wrongKey, lim: lim},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := nic.CheckEntry(c.e, c.lim)
			switch {
			case c.ok && err != nil:
				t.Fatalf("CheckEntry = %v, want nil", err)
			case c.ok:
			case !errors.Is(err, nic.ErrBadRequest):
				t.Fatalf("CheckEntry = %v, want ErrBadRequest", err)
			case c.also != nil && !errors.Is(err, c.also):
				t.Fatalf("CheckEntry = %v, want it to wrap %v too", err, c.also)
			}
		})
	}
}
