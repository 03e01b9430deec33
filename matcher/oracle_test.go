package matcher

import (
	"slices"
	"testing"
)

// oracle is FindAll's definition (docs/hashing.md) computed by brute force:
// no anchors, no hashing beyond the keys it must report, every diagonal of
// every eligible chunk walked token by token.
type oracle struct {
	opts    Options // resolved
	entries map[ChunkKey]Entry
	order   []ChunkKey
}

func newOracle(t testing.TB, opts Options) *oracle {
	t.Helper()
	o, err := opts.resolved()
	if err != nil {
		t.Fatalf("oracle options: %v", err)
	}
	return &oracle{opts: o, entries: map[ChunkKey]Entry{}}
}

func (o *oracle) add(e Entry) ChunkKey {
	toks := e.Tokens
	var k ChunkKey
	if e.Prefix {
		toks = toks[:len(toks)/o.opts.BlockSize*o.opts.BlockSize]
		keys, _ := PrefixKeys(e.Salt, toks, o.opts.BlockSize, nil)
		k = keys[len(keys)-1]
	} else {
		k = ChunkKeyOf(e.Salt, toks)
	}
	if _, ok := o.entries[k]; !ok {
		o.entries[k] = Entry{Salt: e.Salt, Tokens: slices.Clone(toks), Prefix: e.Prefix}
		o.order = append(o.order, k)
	}
	return k
}

func (o *oracle) remove(k ChunkKey) {
	if _, ok := o.entries[k]; ok {
		delete(o.entries, k)
		o.order = slices.DeleteFunc(o.order, func(x ChunkKey) bool { return x == k })
	}
}

// find returns the expected result, or tooMany when the candidate count
// exceeds MaxCandidates.
func (o *oracle) find(salt Salt, prompt []Token) (res Result, tooMany bool) {
	eligible := []Salt{salt}
	if !salt.IsShared() {
		eligible = append(eligible, salt.Shared())
	}
	isEligible := func(s Salt) bool { return slices.Contains(eligible, s) }

	// Candidates: Σ over prompt anchors of eligible postings with that FP.
	p := o.opts.anchorParams()
	pa := p.Anchors(prompt, nil)
	anyChunk := slices.ContainsFunc(o.order, func(k ChunkKey) bool { return !o.entries[k].Prefix && isEligible(o.entries[k].Salt) })
	if len(prompt) >= o.opts.MinLen && anyChunk {
		res.Anchors = len(pa)
		count := map[uint64]int{}
		for _, k := range o.order {
			e := o.entries[k]
			if e.Prefix || !isEligible(e.Salt) {
				continue
			}
			for _, a := range p.Anchors(e.Tokens, nil) {
				count[a.FP]++
			}
		}
		for _, a := range pa {
			res.Candidates += count[a.FP]
		}
		if res.Candidates > o.opts.MaxCandidates {
			return Result{}, true
		}
	}

	// The prefix match.
	b := o.opts.BlockSize
	var best *Match
	for _, es := range eligible {
		n := 0
		for _, k := range o.order {
			e := o.entries[k]
			if !e.Prefix || e.Salt != es {
				continue
			}
			l := 0
			for l < len(e.Tokens) && l < len(prompt) && e.Tokens[l] == prompt[l] {
				l++
			}
			n = max(n, l/b*b)
		}
		if n > 0 && (best == nil || n > best.Len) {
			keys, _ := PrefixKeys(es, prompt[:n], b, nil)
			best = &Match{Len: n, Chunk: keys[len(keys)-1], Prefix: true, Shared: es.IsShared()}
		}
	}
	if best != nil {
		res.Matches = append(res.Matches, *best)
	}

	// Chunk matches: maximal runs on every diagonal.
	var found []Match
	for _, k := range o.order {
		e := o.entries[k]
		if e.Prefix || !isEligible(e.Salt) {
			continue
		}
		c := e.Tokens
		for d := -(len(c) - 1); d < len(prompt); d++ {
			// prompt index i pairs with chunk index i-d
			lo := max(0, d)
			hi := min(len(prompt), len(c)+d)
			run := 0
			for i := lo; i <= hi; i++ {
				if i < hi && prompt[i] == c[i-d] {
					run++
					continue
				}
				if run >= o.opts.MinLen {
					found = append(found, Match{ReqOff: i - run, Len: run, Chunk: k, ChunkOff: i - run - d, Shared: e.Salt.IsShared()})
				}
				run = 0
			}
		}
	}
	slices.SortFunc(found, CompareMatches)
	if len(found) > o.opts.MaxMatches {
		found = found[:o.opts.MaxMatches]
		res.Truncated = true
	}
	res.Matches = append(res.Matches, found...)
	return res, false
}

// checkAgainstOracle runs Find and compares everything it reports.
func checkAgainstOracle(t testing.TB, ix *Index, o *oracle, salt Salt, prompt []Token, label string) {
	t.Helper()
	want, tooMany := o.find(salt, prompt)
	got, err := ix.Find(salt, prompt, nil)
	if tooMany {
		if err == nil {
			t.Fatalf("%s: oracle exceeds MaxCandidates but Find returned %d matches and no error", label, len(got.Matches))
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: Find: %v", label, err)
	}
	if !slices.Equal(got.Matches, want.Matches) || got.Truncated != want.Truncated {
		t.Fatalf("%s: Find returned %d matches (truncated %v), oracle %d (truncated %v)\n got: %v\nwant: %v",
			label, len(got.Matches), got.Truncated, len(want.Matches), want.Truncated, brief(got.Matches), brief(want.Matches))
	}
	if got.Candidates != want.Candidates || got.Anchors != want.Anchors {
		t.Fatalf("%s: Find counted %d anchors / %d candidates, oracle %d / %d", label, got.Anchors, got.Candidates, want.Anchors, want.Candidates)
	}
}

type briefMatch struct {
	Req, Len, Off int
	Key           string
	Prefix        bool
}

func brief(ms []Match) []briefMatch {
	var out []briefMatch
	for i, m := range ms {
		if i == 12 {
			break
		}
		out = append(out, briefMatch{m.ReqOff, m.Len, m.ChunkOff, m.Chunk.String()[:6], m.Prefix})
	}
	return out
}
