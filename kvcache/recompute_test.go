package kvcache

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/matcher"
)

func TestParsePolicy(t *testing.T) {
	good := map[string]Policy{
		"none":       {Kind: PolicyNone},
		"full":       {Kind: PolicyFull},
		"FULL":       {Kind: PolicyFull},
		"epic:4":     {Kind: PolicyEpic, K: 4},
		"epic:1":     {Kind: PolicyEpic, K: 1},
		"ratio:0.15": {Kind: PolicyRatio, Ratio: 0.15},
		"ratio:1":    {Kind: PolicyRatio, Ratio: 1},
		"ratio:15%":  {Kind: PolicyRatio, Ratio: 0.15},
		" ratio:.3 ": {Kind: PolicyRatio, Ratio: 0.3},
	}
	for in, want := range good {
		got, err := ParsePolicy(in)
		if err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		again, err := ParsePolicy(got.String())
		if err != nil || again != got {
			t.Errorf("String round trip of %q: %q -> %+v, %v", in, got.String(), again, err)
		}
	}
	bad := map[string]string{
		"":               "want none, full",
		"epic":           "epic:K needs an integer",
		"epic:0":         "epic:K needs an integer",
		"epic:-3":        "epic:K needs an integer",
		"epic:2.5":       "epic:K needs an integer",
		"ratio:0":        "ratio:R needs R in (0, 1]",
		"ratio:1.5":      "ratio:R needs R in (0, 1]",
		"ratio:NaN":      "ratio:R needs R in (0, 1]",
		"ratio:abc":      "ratio:R needs R in (0, 1]",
		"ratio":          "ratio:R needs R in (0, 1]",
		"none:1":         "takes no argument",
		"cacheblend":     "want none, full, epic:K or ratio:R",
		"epic:999999999": "epic:K needs an integer",
	}
	for in, msg := range bad {
		p, err := ParsePolicy(in)
		if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), in) {
			t.Errorf("ParsePolicy(%q) = %+v, %v; want ErrPolicy naming the input and %q", in, p, err, msg)
		}
	}
}

// recomputePlan: prefix [0,32), chunk A at [40,60), chunk B at [70,75),
// chunk C at [80,120) in a 128-token prompt.
func recomputePlan() *Plan {
	return &Plan{
		Prompt: seqTokens(0, 128),
		Keys:   make([]matcher.ChunkKey, 4),
		Segments: []Segment{
			{Source: 0, SrcStart: 0, SrcEnd: 32, Dst: 0, Prefix: true},
			{Source: 1, SrcStart: 0, SrcEnd: 20, Dst: 40},
			{Source: 2, SrcStart: 3, SrcEnd: 8, Dst: 70},
			{Source: 3, SrcStart: 0, SrcEnd: 40, Dst: 80},
		},
	}
}

func rangeInts(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func checkPositions(t *testing.T, rc *Recompute, p *Plan) {
	t.Helper()
	if !slices.IsSorted(rc.Positions) || len(slices.Compact(slices.Clone(rc.Positions))) != len(rc.Positions) {
		t.Fatalf("positions not sorted and unique: %v", rc.Positions)
	}
	for _, pos := range rc.Positions {
		in := false
		for _, s := range p.Segments {
			in = in || (pos >= s.Dst && pos < s.Dst+s.Len())
		}
		if !in {
			t.Fatalf("position %d is not a reused token", pos)
		}
	}
	if len(rc.Positions) > rc.Reused {
		t.Fatalf("%d positions for %d reused tokens", len(rc.Positions), rc.Reused)
	}
}

func TestPlanRecomputePolicies(t *testing.T) {
	p := recomputePlan()
	ctx := t.Context()
	cat := func(parts ...[]int) []int { return slices.Concat(parts...) }
	tests := []struct {
		policy string
		opts   RecomputeOptions
		want   []int
	}{
		{"none", RecomputeOptions{}, []int{}},
		{"full", RecomputeOptions{}, cat(rangeInts(0, 32), rangeInts(40, 60), rangeInts(70, 75), rangeInts(80, 120))},
		{"epic:4", RecomputeOptions{}, cat(rangeInts(40, 44), rangeInts(70, 74), rangeInts(80, 84))},
		{"epic:8", RecomputeOptions{}, cat(rangeInts(40, 48), rangeInts(70, 75), rangeInts(80, 88))},
		// 97 reused; ceil(0.1×97) = 10 picked among the 65 non-prefix ones,
		// positional: offsets 0,1,2 of each chunk (9) then offset 3 of A.
		{"ratio:0.1", RecomputeOptions{}, cat(rangeInts(40, 44), rangeInts(70, 73), rangeInts(80, 83))},
		{"ratio:1", RecomputeOptions{}, cat(rangeInts(40, 60), rangeInts(70, 75), rangeInts(80, 120))},
		// Max bounds every policy, keeping segment starts first.
		{"epic:8", RecomputeOptions{Max: 6}, []int{40, 41, 70, 71, 80, 81}},
		{"full", RecomputeOptions{Max: 4}, []int{0, 40, 70, 80}},
	}
	for _, tc := range tests {
		pol, err := ParsePolicy(tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := PlanRecompute(ctx, pol, p, tc.opts)
		if err != nil {
			t.Fatalf("%s: %v", tc.policy, err)
		}
		checkPositions(t, rc, p)
		if !slices.Equal(rc.Positions, tc.want) {
			t.Errorf("%s max %d: positions %v, want %v", tc.policy, tc.opts.Max, rc.Positions, tc.want)
		}
		if rc.Reused != 97 || rc.Policy != pol {
			t.Errorf("%s: reused %d, policy %v", tc.policy, rc.Reused, rc.Policy)
		}
	}
	rc, _ := PlanRecompute(ctx, Policy{Kind: PolicyFull}, p, RecomputeOptions{})
	if math.Abs(rc.Fraction()-1) > 1e-12 {
		t.Fatalf("full fraction %v", rc.Fraction())
	}
}

// deviationScorer is a stand-in for the engine's CacheBlend scorer: the
// "deviation" of a position is a fixed function of it, and it records
// what the planner showed it.
type deviationScorer struct {
	rounds []ScoreInput
	dev    func(pos, layer int) float64
}

func (d *deviationScorer) Score(_ context.Context, in ScoreInput) ([]float64, error) {
	d.rounds = append(d.rounds, in)
	out := make([]float64, len(in.Candidates))
	for i, p := range in.Candidates {
		out[i] = d.dev(p, in.Layer)
	}
	return out, nil
}

func TestPlanRecomputeScorerRefinesLayerByLayer(t *testing.T) {
	p := recomputePlan()
	s := &deviationScorer{dev: func(pos, layer int) float64 {
		// Layer 1 favours chunk C; layer 3 reorders towards odd positions.
		v := float64(pos)
		if layer == 3 && pos%2 == 1 {
			v += 1000
		}
		return v
	}}
	kv, _ := NewKV(tinySpec(F32).Shape(), 128)
	rc, err := PlanRecompute(t.Context(), Policy{Kind: PolicyRatio, Ratio: 0.05}, p, RecomputeOptions{Scorer: s, CheckLayers: []int{1, 2, 3}, KV: kv})
	if err != nil {
		t.Fatal(err)
	}
	// Budget ceil(0.05×97) = 5; rounds keep 20, 10, 5.
	if len(s.rounds) != 3 {
		t.Fatalf("%d rounds", len(s.rounds))
	}
	keeps := []int{s.rounds[0].Keep, s.rounds[1].Keep, s.rounds[2].Keep}
	if !slices.Equal(keeps, []int{20, 10, 5}) || s.rounds[0].Layer != 1 || s.rounds[2].Layer != 3 || s.rounds[2].Round != 2 || s.rounds[0].Rounds != 3 {
		t.Fatalf("rounds %+v", keeps)
	}
	if len(s.rounds[0].Candidates) != 65 || s.rounds[0].KV != Target(kv) || s.rounds[0].Plan != p {
		t.Fatalf("first round saw %d candidates", len(s.rounds[0].Candidates))
	}
	for j := 1; j < 3; j++ {
		for _, c := range s.rounds[j].Candidates {
			if !slices.Contains(s.rounds[j-1].Candidates, c) {
				t.Fatalf("round %d candidate %d was not a survivor of round %d", j, c, j-1)
			}
		}
		if len(s.rounds[j].Candidates) != s.rounds[j-1].Keep {
			t.Fatalf("round %d got %d candidates, previous kept %d", j, len(s.rounds[j].Candidates), s.rounds[j-1].Keep)
		}
	}
	// Round 1 keeps 100..119, round 2 keeps 110..119, round 3 the five odd ones.
	if want := []int{111, 113, 115, 117, 119}; !slices.Equal(rc.Positions, want) {
		t.Fatalf("positions %v, want %v", rc.Positions, want)
	}
	checkPositions(t, rc, p)
}

type badScorer struct{ scores []float64 }

func (b badScorer) Score(context.Context, ScoreInput) ([]float64, error) { return b.scores, nil }

func TestPlanRecomputeErrors(t *testing.T) {
	p := recomputePlan()
	ctx := t.Context()
	r := Policy{Kind: PolicyRatio, Ratio: 0.1}
	cases := map[string]RecomputeOptions{
		"short scores":   {Scorer: badScorer{scores: []float64{1}}},
		"nan score":      {Scorer: badScorer{scores: slices.Repeat([]float64{math.NaN()}, 65)}},
		"unsorted check": {CheckLayers: []int{3, 1}},
		"widen < 1":      {CheckLayers: []int{1, 2}, Widen: 0.5},
		"negative max":   {Max: -1},
	}
	for name, opts := range cases {
		if _, err := PlanRecompute(ctx, r, p, opts); !errors.Is(err, ErrPolicy) {
			t.Errorf("%s: err = %v, want ErrPolicy", name, err)
		}
	}
	if _, err := PlanRecompute(ctx, Policy{Kind: PolicyRatio, Ratio: 2}, p, RecomputeOptions{}); !errors.Is(err, ErrPolicy) {
		t.Errorf("ratio 2: %v", err)
	}
	if _, err := PlanRecompute(ctx, Policy{Kind: 9}, p, RecomputeOptions{}); !errors.Is(err, ErrPolicy) {
		t.Errorf("kind 9: %v", err)
	}
	broken := *p
	broken.Segments = []Segment{{Source: 0, SrcStart: 0, SrcEnd: 500, Dst: 0}}
	if _, err := PlanRecompute(ctx, r, &broken, RecomputeOptions{}); !errors.Is(err, ErrPlan) {
		t.Errorf("invalid plan: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := PlanRecompute(cctx, r, p, RecomputeOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
