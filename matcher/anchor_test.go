package matcher

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvloom/kvloom/internal/benchutil"
)

// refAnchors is the definition of Anchors, written the slow obvious way.
func refAnchors(p AnchorParams, toks []Token) []Anchor {
	n := len(toks)
	if n < p.MinLen() {
		return nil
	}
	fps := make([]uint64, n-p.K+1)
	for j := range fps {
		fps[j] = Fingerprint(toks[j : j+p.K])
	}
	var out []Anchor
	last := -1
	for s := 0; s+p.W <= len(fps); s++ {
		best := s
		for j := s; j < s+p.W; j++ {
			if fps[j] <= fps[best] {
				best = j
			}
		}
		if best != last {
			out = append(out, Anchor{Off: best, FP: fps[best]})
			last = best
		}
	}
	return out
}

func randTokens(r *rand.Rand, n, vocab int) []Token {
	t := make([]Token, n)
	for i := range t {
		t[i] = Token(r.IntN(vocab))
	}
	return t
}

func TestAnchorsMatchDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	params := []AnchorParams{{K: 4, W: 1}, {K: 4, W: 5}, {K: 8, W: 13}, DefaultAnchorParams(), {K: 64, W: 63}, {K: 5, W: 63}}
	inputs := map[string][]Token{
		"random":      randTokens(r, 3000, 50000),
		"small-vocab": randTokens(r, 3000, 3),
		"constant":    slices.Repeat([]Token{7}, 500),
		"period-3":    slices.Repeat([]Token{1, 2, 3}, 300),
		"period-17":   slices.Repeat(randTokens(r, 17, 100), 60),
		"short":       randTokens(r, 10, 100),
		"empty":       nil,
	}
	for _, p := range params {
		for name, toks := range inputs {
			got := p.Anchors(toks, nil)
			want := refAnchors(p, toks)
			if !slices.Equal(got, want) {
				t.Errorf("%+v %s: Anchors gave %d anchors, definition %d; first difference at %d", p, name, len(got), len(want), firstDiff(got, want))
			}
		}
	}
}

func firstDiff[T comparable](a, b []T) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestAnchorGuarantee checks the property FindAll relies on: a run of
// MinLen tokens shared by two sequences, in different contexts, contains an
// anchor selected in both at the same offset relative to the run.
func TestAnchorGuarantee(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, p := range []AnchorParams{DefaultAnchorParams(), {K: 4, W: 3}, {K: 8, W: 40}} {
		for trial := range 300 {
			vocab := []int{2, 5, 1000, 100000}[trial%4]
			run := randTokens(r, p.MinLen()+r.IntN(5), vocab)
			a := slices.Concat(randTokens(r, r.IntN(200), vocab), run, randTokens(r, r.IntN(200), vocab))
			b := slices.Concat(randTokens(r, r.IntN(200), vocab), run, randTokens(r, r.IntN(200), vocab))
			offA := indexOf(a, run)
			offB := indexOf(b, run)
			inA := map[int]bool{}
			for _, an := range p.Anchors(a, nil) {
				inA[an.Off-offA] = true
			}
			found := false
			for _, an := range p.Anchors(b, nil) {
				rel := an.Off - offB
				if rel >= 0 && rel+p.K <= len(run) && inA[rel] {
					found = true
					break
				}
			}
			if !found {
				t.Fatalf("%+v trial %d: no shared anchor inside a common run of %d tokens", p, trial, len(run))
			}
		}
	}
}

func indexOf(hay, needle []Token) int {
	for i := 0; i+len(needle) <= len(hay); i++ {
		if slices.Equal(hay[i:i+len(needle)], needle) {
			return i
		}
	}
	return -1
}

func TestAnchorParamsValidate(t *testing.T) {
	for _, tc := range []struct {
		p  AnchorParams
		ok bool
	}{
		{DefaultAnchorParams(), true},
		{AnchorParams{K: 3, W: 10}, false},
		{AnchorParams{K: 65, W: 10}, false},
		{AnchorParams{K: 16, W: 0}, false},
		{AnchorParams{K: 16, W: MaxAnchorW + 1}, false},
		{AnchorParams{K: 16, W: MaxAnchorW}, true},
	} {
		if err := tc.p.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.p, err, tc.ok)
		}
	}
	if p := DefaultAnchorParams(); p.MinLen() != DefaultMinLen {
		t.Errorf("default MinLen = %d, want %d", p.MinLen(), DefaultMinLen)
	}
}

func TestAnchorsNoAllocWithCapacity(t *testing.T) {
	toks := randTokens(rand.New(rand.NewPCG(5, 6)), 4096, 100000)
	p := DefaultAnchorParams()
	dst := make([]Anchor, 0, len(toks))
	allocs := testing.AllocsPerRun(20, func() { dst = p.Anchors(toks, dst[:0]) })
	if allocs != 0 {
		t.Fatalf("Anchors with a large enough dst allocated %v times per call", allocs)
	}
}

func BenchmarkAnchors(b *testing.B) {
	toks := randTokens(rand.New(rand.NewPCG(7, 8)), 32<<10, 100000)
	p := DefaultAnchorParams()
	dst := make([]Anchor, 0, len(toks))
	b.ReportAllocs()
	b.SetBytes(int64(4 * len(toks)))
	for b.Loop() {
		dst = p.Anchors(toks, dst[:0])
	}
	benchutil.ReportRate(b, "tokens/s", float64(len(toks)))
}
