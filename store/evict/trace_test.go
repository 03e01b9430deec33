package evict

import (
	"bytes"
	"testing"
)

func TestReplayPrefixSemantics(t *testing.T) {
	tr := &Trace{BlockTokens: 512, Requests: []Request{
		{InputLength: 1500, Blocks: []uint64{1, 2, 3}},
		{InputLength: 1100, Blocks: []uint64{1, 2, 9}}, // hits 1, 2
		{InputLength: 1100, Blocks: []uint64{7, 2, 3}}, // 2, 3 resident but after a miss: no hit
	}}
	res := Replay(tr, NewLRU[uint64](100))
	if res.HitTokens != 1024 || res.BlockHits != 2 || res.Tokens != 3700 {
		t.Fatalf("replay %+v: want 1024 hit tokens from 2 prefix blocks", res)
	}
}

// fuzzBlockTokens is the block size of the traces FuzzReplay builds: small,
// so that the last block's remainder varies.
const fuzzBlockTokens = 4

// fuzzTrace builds a consistent trace from fuzz bytes: 0xff ends a request,
// every other byte is a block whose id is its low 6 bits (few ids, so that
// prefixes repeat); the top 2 bits of a request's last byte give its last
// block 1 to 4 tokens.
func fuzzTrace(b []byte) *Trace {
	tr := &Trace{BlockTokens: fuzzBlockTokens}
	for seg := range bytes.SplitSeq(b, []byte{0xff}) {
		if len(seg) == 0 {
			continue
		}
		ids := make([]uint64, len(seg))
		for i, c := range seg {
			ids[i] = uint64(c & 0x3f)
		}
		in := (len(seg)-1)*fuzzBlockTokens + 1 + int(seg[len(seg)-1]>>6)
		tr.Requests = append(tr.Requests, Request{InputLength: in, Blocks: ids})
	}
	return tr
}

// FuzzReplay: no trace panics a replay under any policy; the counts add up;
// no policy serves more prefix tokens than an unbounded cache would, and
// LRU large enough to hold every block serves exactly that.
func FuzzReplay(f *testing.F) {
	f.Add([]byte{1, 2, 3, 0xff, 1, 2, 9, 0xff, 7, 2, 3}, uint8(2))
	f.Add([]byte{0, 1, 0xc2, 0xff, 0, 1, 2, 0xff, 0, 0xff, 0, 1}, uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, c uint8) {
		tr := fuzzTrace(b)
		var tokens, accesses, unbounded int64
		seen := map[uint64]bool{}
		for _, r := range tr.Requests {
			tokens += int64(r.InputLength)
			accesses += int64(len(r.Blocks))
			prefix := true
			for i, id := range r.Blocks {
				if prefix = prefix && seen[id]; prefix {
					unbounded += int64(r.BlockTokens(i, tr.BlockTokens))
				}
				seen[id] = true
			}
		}
		capacity := 1 + int64(c%16)
		for _, name := range Names() {
			res, err := ReplayPolicy(tr, name, capacity)
			if err != nil {
				t.Fatalf("%s at %d blocks: %v", name, capacity, err)
			}
			if res.Requests != len(tr.Requests) || res.Tokens != tokens || res.BlockAccesses != accesses ||
				res.BlockHits > accesses || res.HitTokens < 0 || res.HitTokens > unbounded {
				t.Fatalf("%s at %d blocks: %+v; trace has %d tokens in %d blocks, an unbounded cache hits %d",
					name, capacity, res, tokens, accesses, unbounded)
			}
			if tokens > 0 && res.TokenHitRatio != float64(res.HitTokens)/float64(tokens) {
				t.Fatalf("%s: ratio %v for %d of %d tokens", name, res.TokenHitRatio, res.HitTokens, tokens)
			}
		}
		if all, err := ReplayPolicy(tr, LRU, int64(len(seen))+1); err != nil || all.HitTokens != unbounded || all.Evictions != 0 {
			t.Fatalf("lru holding all %d blocks: %+v, %v; want %d hit tokens, no evictions", len(seen), all, err, unbounded)
		}
	})
}
