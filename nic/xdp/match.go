//go:build linux

package xdp

import (
	"fmt"
	"slices"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic/wire"
)

// probe is one entry of the hints a request sends: an anchor of the prompt
// or one of its prefix block keys, under one eligible salt.
type probe struct {
	key   slotKey
	off   int // anchor: token offset in the prompt; block: block index
	block bool
	bkey  matcher.ChunkKey // block: the full block key
}

// plan is what a request asks the device: per eligible salt (the request's,
// then its model's shared salt unless it is shared itself) the probes, in
// the order they go into the hints.
type plan struct {
	salts    []matcher.Salt
	probes   [][]probe
	nAnchors int // each salt's probes start with the prompt's anchors
}

// plan builds the probes of a prompt: anchors when the table holds chunks
// and the prompt is long enough to match one, prefix block keys when it
// holds prefix chains.
func (t *table) plan(salt matcher.Salt, prompt []matcher.Token, minLen int) *plan {
	pl := &plan{salts: []matcher.Salt{salt}}
	if !salt.IsShared() {
		pl.salts = append(pl.salts, salt.Shared())
	}
	var anchors []matcher.Anchor
	if t.chunks > 0 && len(prompt) >= minLen {
		anchors = t.params.Anchors(prompt, nil)
	}
	pl.nAnchors = len(anchors)
	for _, s := range pl.salts {
		id := s.ID()
		ps := make([]probe, 0, len(anchors))
		for _, a := range anchors {
			ps = append(ps, probe{key: slotKey{id, a.FP}, off: a.Off})
		}
		if t.prefixes > 0 {
			var parent matcher.ChunkKey
			b := t.blockSize
			for i := 0; (i+1)*b <= len(prompt); i++ {
				parent = matcher.PrefixBlockKey(s, parent, prompt[i*b:(i+1)*b])
				ps = append(ps, probe{key: slotKey{id, blockFP(parent)}, off: i, block: true, bkey: parent})
			}
		}
		pl.probes = append(pl.probes, ps)
	}
	return pl
}

// hint turns salt si's probes into a wire.Hint.
func (pl *plan) hint(si int, requestID uint64, blockSize int) wire.Hint {
	ps := pl.probes[si]
	h := wire.Hint{RequestID: requestID, SaltID: pl.salts[si].ID(), Anchors: make([]wire.HintEntry, len(ps))}
	for i, p := range ps {
		off := p.off
		if p.block {
			off *= blockSize
		}
		h.Anchors[i] = wire.HintEntry{Fingerprint: p.key.fp, TokenOffset: uint32(off)}
	}
	return h
}

// result is what the host side makes of a request's hits.
type result struct {
	matches   []matcher.Match // prefix match first, then chunk matches in CompareMatches order
	truncated bool
}

// match verifies the probes the device found on the tokens the control
// plane pushed and extends them to maximal runs, with matcher.FindAll's
// rules: the longest verified block-aligned prefix (the tenant's own salt
// on a tie), and every maximal common run of at least MinLen tokens through
// a found anchor on the same diagonal of a chunk, sorted and cut at
// MaxMatches. hit(si, i) says whether probe i of salt si was found. Only
// found probes are looked at, so an entry the device does not hold is never
// reported.
func (t *table) match(salt matcher.Salt, prompt []matcher.Token, pl *plan, hit func(si, i int) bool, opts matcher.Options) (result, error) {
	var res result
	if m, ok := t.matchPrefix(prompt, pl, hit); ok {
		res.matches = append(res.matches, m)
	}

	// Candidate pairs in the matcher's order: prompt anchors in order, each
	// under the request's salt, then the shared one.
	type pair struct {
		pos, off int
		e        *hostEntry
	}
	var pairs []pair
	nAnchors := pl.nAnchors
	for ai := range nAnchors {
		for si := range pl.probes {
			if !hit(si, ai) {
				continue
			}
			p := pl.probes[si][ai]
			s := t.slots[p.key]
			if s == nil {
				continue
			}
			for _, po := range s.postings {
				if len(pairs) == opts.MaxCandidates {
					return result{}, fmt.Errorf("prompt of %d tokens has %d anchors hitting more than MaxCandidates %d index postings: %w", len(prompt), nAnchors, opts.MaxCandidates, matcher.ErrTooManyCandidates)
				}
				pairs = append(pairs, pair{pos: p.off, off: po.off, e: po.e})
			}
		}
	}

	type diag struct {
		e *hostEntry
		d int
	}
	ends := map[diag]int{}
	shared := salt.Shared()
	var found []matcher.Match
	for _, p := range pairs {
		if p.e.Salt != salt && p.e.Salt != shared {
			continue
		}
		dk := diag{p.e, p.pos - p.off}
		if end, ok := ends[dk]; ok && p.pos < end {
			continue // inside a run already found on this diagonal
		}
		left := matcher.CommonSuffix(prompt[:p.pos], p.e.Tokens[:p.off])
		right := matcher.CommonPrefix(prompt[p.pos:], p.e.Tokens[p.off:])
		r, n := p.pos-left, left+right
		ends[dk] = r + n
		if n < opts.MinLen {
			continue
		}
		found = append(found, matcher.Match{ReqOff: r, Len: n, Chunk: p.e.Key, ChunkOff: p.off - left, Shared: p.e.Salt.IsShared()})
	}
	slices.SortFunc(found, matcher.CompareMatches)
	if len(found) > opts.MaxMatches {
		found = found[:opts.MaxMatches]
		res.truncated = true
	}
	res.matches = append(res.matches, found...)
	return res, nil
}

// matchPrefix walks each eligible salt's chain of found block keys and
// verifies the deepest one a prefix chain holds.
func (t *table) matchPrefix(prompt []matcher.Token, pl *plan, hit func(si, i int) bool) (matcher.Match, bool) {
	var best matcher.Match
	ok := false
	b := t.blockSize
	for si, ps := range pl.probes {
		es := pl.salts[si]
		var chain []probe
		for i, p := range ps {
			if !p.block {
				continue
			}
			if !hit(si, i) || !t.holdsBlock(p) {
				break
			}
			chain = append(chain, p)
		}
		for i := len(chain) - 1; i >= 0; i-- {
			n := (i + 1) * b
			if ok && n <= best.Len {
				break
			}
			if t.verifyPrefix(chain[i], es, prompt[:n]) {
				best = matcher.Match{ReqOff: 0, Len: n, Chunk: chain[i].bkey, Prefix: true, Shared: es.IsShared()}
				ok = true
				break
			}
		}
	}
	return best, ok
}

// holdsBlock reports whether some resident prefix chain has block key p.bkey.
func (t *table) holdsBlock(p probe) bool {
	s := t.slots[p.key]
	if s == nil {
		return false
	}
	return slices.ContainsFunc(s.blocks, func(r blockRef) bool { return r.key == p.bkey })
}

func (t *table) verifyPrefix(p probe, salt matcher.Salt, want []matcher.Token) bool {
	s := t.slots[p.key]
	if s == nil {
		return false
	}
	for _, r := range s.blocks {
		e := r.e
		if r.key != p.bkey || r.block != p.off || e.Salt != salt || len(e.Tokens) < len(want) {
			continue
		}
		if slices.Equal(e.Tokens[:len(want)], want) {
			return true
		}
	}
	return false
}
