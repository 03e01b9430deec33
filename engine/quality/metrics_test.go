package quality

import (
	"math"
	"slices"
	"testing"

	"github.com/kvloom/kvloom/engine"
)

func TestCompare(t *testing.T) {
	ref := Continuation{
		Tokens: []engine.Token{5, 6, 7, 8},
		Logits: [][]float32{{1, 2, 3}, {3, 2, 1}, {0, 4, 1}},
	}
	if a := Compare(ref, ref); a != (Agreement{KL: 0, Top1: 3, Match: 4}) {
		t.Fatalf("Compare(ref, ref) = %+v, want KL 0, all 3 argmaxes, all 4 tokens", a)
	}
	got := Continuation{
		Tokens: []engine.Token{5, 6, 9, 8}, // differs at the third token: the match stops there
		Logits: [][]float32{{1, 2, 3}, {1, 2, 3}, {0, 4, 1}},
	}
	a := Compare(ref, got)
	want := KL(ref.Logits[1], got.Logits[1]) / 3
	if math.Abs(a.KL-want) > 1e-15 || a.Top1 != 2 || a.Match != 2 {
		t.Fatalf("Compare = %+v, want KL %v, 2 argmaxes, 2 tokens", a, want)
	}
	// A shorter greedy continuation (the model stopped) matches its length at most.
	got.Tokens = ref.Tokens[:1]
	if a := Compare(ref, got); a.Match != 1 {
		t.Fatalf("match %d against a 1-token continuation", a.Match)
	}
}

func TestMeanStdErr(t *testing.T) {
	for _, c := range []struct {
		x        []float64
		mean, se float64
	}{
		{nil, 0, 0},
		{[]float64{4}, 4, 0},
		// sample sd of {1, 2, 3, 4} is sqrt(5/3); se = sd / 2
		{[]float64{1, 2, 3, 4}, 2.5, math.Sqrt(5.0/3) / 2},
	} {
		m, se := MeanStdErr(c.x)
		if math.Abs(m-c.mean) > 1e-12 || math.Abs(se-c.se) > 1e-12 {
			t.Errorf("MeanStdErr(%v) = %v, %v; want %v, %v", c.x, m, se, c.mean, c.se)
		}
	}
}

// TestContinuationLogits checks against the model: the logits after each
// teacher-forced token are those a fresh prefill of prompt+prefix ends with.
func TestContinuationLogits(t *testing.T) {
	e, tok := openStories(t)
	prompt := tok.Encode("Once upon a time", true, false)
	s := e.NewState()
	last, err := s.Forward(prompt)
	if err != nil {
		t.Fatal(err)
	}
	last = slices.Clone(last)
	cont := []engine.Token{prompt[1], prompt[2], prompt[3]}
	got, err := ContinuationLogits(s, last, cont)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cont) {
		t.Fatalf("%d positions, want %d", len(got), len(cont))
	}
	for i := range cont {
		fresh := e.NewState()
		want, err := fresh.Forward(append(slices.Clone(prompt), cont[:i]...))
		if err != nil {
			t.Fatal(err)
		}
		for j := range want {
			if d := math.Abs(float64(want[j] - got[i][j])); d > 1e-4 {
				t.Fatalf("position %d logit %d: %v, a fresh prefill gives %v", i, j, got[i][j], want[j])
			}
		}
	}
}
