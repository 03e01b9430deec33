package matcher

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// bruteCover enumerates every subset of the (sorted) matches and applies
// Cover's objective literally.
func bruteCover(ms []Match) []Match {
	ms = slices.DeleteFunc(slices.Clone(ms), func(m Match) bool { return m.Len <= 0 })
	slices.SortFunc(ms, CompareMatches)
	var best []int
	var bestV coverValue
	found := false
	for mask := 0; mask < 1<<len(ms); mask++ {
		var picks []int
		ok := true
		var v coverValue
		end := -1 << 62
		for i := range ms {
			if mask&(1<<i) == 0 {
				continue
			}
			if ms[i].ReqOff < end {
				ok = false
				break
			}
			end = ms[i].End()
			picks = append(picks, i)
			v.tokens += ms[i].Len
			v.count++
			if ms[i].Prefix {
				v.prefix += ms[i].Len
			}
		}
		if !ok {
			continue
		}
		if !found || v.better(bestV) || (v == bestV && slices.Compare(picks, best) < 0) {
			best, bestV, found = picks, v, true
		}
	}
	var out []Match
	for _, i := range best {
		out = append(out, ms[i])
	}
	return out
}

func TestCoverAgainstBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for trial := range 3000 {
		n := r.IntN(13)
		ms := make([]Match, n)
		span := 10 + r.IntN(200)
		for i := range ms {
			ms[i] = Match{ReqOff: r.IntN(span), Len: 1 + r.IntN(span/2), ChunkOff: r.IntN(5)}
			ms[i].Chunk[0] = byte(r.IntN(4))
			if r.IntN(3) == 0 {
				ms[i].Len = []int{5, 10, 20}[r.IntN(3)] // many equal lengths: ties
				ms[i].ReqOff = ms[i].ReqOff / 5 * 5
			}
		}
		if n > 0 && r.IntN(3) == 0 {
			ms[0].Prefix, ms[0].ReqOff = true, 0
		}
		got := Cover(ms)
		want := bruteCover(ms)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: Cover(%v)\n = %v\nwant %v", trial, ms, got, want)
		}
	}
}

func TestCoverCases(t *testing.T) {
	k := func(b byte) ChunkKey { return ChunkKey{b} }
	cases := []struct {
		name string
		in   []Match
		want []Match
	}{
		{"empty", nil, nil},
		{"disjoint all taken", []Match{{ReqOff: 100, Len: 50, Chunk: k(1)}, {ReqOff: 0, Len: 100, Chunk: k(2)}},
			[]Match{{ReqOff: 0, Len: 100, Chunk: k(2)}, {ReqOff: 100, Len: 50, Chunk: k(1)}}},
		{"overlap keeps the larger total", []Match{{ReqOff: 0, Len: 100, Chunk: k(1)}, {ReqOff: 50, Len: 150, Chunk: k(2)}, {ReqOff: 100, Len: 90, Chunk: k(3)}},
			[]Match{{ReqOff: 0, Len: 100, Chunk: k(1)}, {ReqOff: 100, Len: 90, Chunk: k(3)}}},
		{"prefix wins a tie on tokens", []Match{{ReqOff: 0, Len: 64, Prefix: true, Chunk: k(9)}, {ReqOff: 0, Len: 64, Chunk: k(1)}},
			[]Match{{ReqOff: 0, Len: 64, Prefix: true, Chunk: k(9)}}},
		{"longest wins a tie on tokens", []Match{{ReqOff: 0, Len: 64, Chunk: k(1)}, {ReqOff: 64, Len: 64, Chunk: k(2)}, {ReqOff: 0, Len: 128, Chunk: k(3)}},
			[]Match{{ReqOff: 0, Len: 128, Chunk: k(3)}}},
		{"same range in two chunks: smaller key", []Match{{ReqOff: 5, Len: 70, Chunk: k(7)}, {ReqOff: 5, Len: 70, Chunk: k(3)}},
			[]Match{{ReqOff: 5, Len: 70, Chunk: k(3)}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Cover(tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("Cover = %v, want %v", got, tc.want)
			}
		})
	}
	if n := Reused([]Match{{Len: 3}, {Len: 4}}); n != 7 {
		t.Fatalf("Reused = %d, want 7", n)
	}
}
