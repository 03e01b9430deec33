package kvcache

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// PolicyKind is a recompute policy family.
type PolicyKind uint8

const (
	// PolicyNone recomputes nothing: reused KV is used as stitched.
	PolicyNone PolicyKind = iota
	// PolicyFull recomputes every reused token (reuse saves only the load).
	PolicyFull
	// PolicyEpic recomputes the first K tokens of every non-prefix segment
	// (EPIC's LegoLink: the tokens at a chunk's start carry the attention
	// sink that the chunk's new context changes most).
	PolicyEpic
	// PolicyRatio recomputes Ratio of the reused tokens, picked by a
	// Scorer (CacheBlend's selective recompute).
	PolicyRatio
)

// Policy is a parsed recompute policy.
type Policy struct {
	Kind  PolicyKind
	K     int     // epic: tokens per chunk, >= 1
	Ratio float64 // ratio: fraction of reused tokens, in (0, 1]
}

// MaxEpicK bounds epic:k.
const MaxEpicK = 1 << 20

// ParsePolicy parses "none", "full", "epic:K" (K ≥ 1) or "ratio:R"
// (0 < R ≤ 1; "15%" is accepted for 0.15).
func ParsePolicy(s string) (Policy, error) {
	name, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	switch strings.ToLower(name) {
	case "none", "full":
		if hasArg {
			return Policy{}, fmt.Errorf("parse policy %q: %s takes no argument: %w", s, name, ErrPolicy)
		}
		if strings.EqualFold(name, "none") {
			return Policy{Kind: PolicyNone}, nil
		}
		return Policy{Kind: PolicyFull}, nil
	case "epic":
		k, err := strconv.Atoi(arg)
		if !hasArg || err != nil || k < 1 || k > MaxEpicK {
			return Policy{}, fmt.Errorf("parse policy %q: epic:K needs an integer K in 1..%d: %w", s, MaxEpicK, ErrPolicy)
		}
		return Policy{Kind: PolicyEpic, K: k}, nil
	case "ratio":
		a := strings.TrimSpace(arg)
		div := 1.0
		if strings.HasSuffix(a, "%") {
			a, div = strings.TrimSuffix(a, "%"), 100
		}
		r, err := strconv.ParseFloat(a, 64)
		r /= div
		if !hasArg || err != nil || !(r > 0 && r <= 1) {
			return Policy{}, fmt.Errorf("parse policy %q: ratio:R needs R in (0, 1] (e.g. ratio:0.15 or ratio:15%%): %w", s, ErrPolicy)
		}
		return Policy{Kind: PolicyRatio, Ratio: r}, nil
	}
	return Policy{}, fmt.Errorf("parse policy %q: want none, full, epic:K or ratio:R: %w", s, ErrPolicy)
}

// String is the form ParsePolicy reads.
func (p Policy) String() string {
	switch p.Kind {
	case PolicyNone:
		return "none"
	case PolicyFull:
		return "full"
	case PolicyEpic:
		return "epic:" + strconv.Itoa(p.K)
	case PolicyRatio:
		return "ratio:" + strconv.FormatFloat(p.Ratio, 'g', -1, 64)
	}
	return fmt.Sprintf("policy(%d)", p.Kind)
}

// ScoreInput is what a Scorer sees at one check layer.
type ScoreInput struct {
	// Layer is the check layer the scores are for.
	Layer int
	// Round is 0 for the first check layer, 1 for the next, …; Rounds is
	// how many there are.
	Round, Rounds int
	// Candidates are the prompt positions still in the running, ascending.
	Candidates []int
	// Keep is how many of them the planner will keep after this round.
	Keep int
	// Plan is the stitch plan (which segment each position came from).
	Plan *Plan
	// KV is the stitched KV the engine is about to use (read-only). It may
	// be nil when the caller plans before stitching.
	KV Target
}

// Scorer rates how much each candidate's reused KV deviates from what a
// full prefill would compute: the planner keeps the highest scores. It is
// called once per check layer, in layer order, with the candidates that
// survived the previous layer, so an engine can refine layer by layer as
// CacheBlend does (recompute the survivors through layer j, compare their
// fresh K/V with the stitched ones, score).
type Scorer interface {
	// Score returns one finite score per in.Candidates entry.
	Score(ctx context.Context, in ScoreInput) ([]float64, error)
}

// PositionalScorer is the default scorer: without looking at KV it ranks
// a non-prefix segment's tokens by closeness to the segment's start (where
// a moved chunk's attention differs most from a full prefill), breaking
// ties towards earlier segments.
type PositionalScorer struct{}

var _ Scorer = PositionalScorer{}

// Score implements Scorer.
func (PositionalScorer) Score(_ context.Context, in ScoreInput) ([]float64, error) {
	out := make([]float64, len(in.Candidates))
	segs := in.Plan.Segments
	j := 0
	for i, pos := range in.Candidates {
		for j < len(segs) && segs[j].Dst+segs[j].Len() <= pos {
			j++
		}
		if j == len(segs) || pos < segs[j].Dst {
			return nil, fmt.Errorf("positional scorer: candidate %d is not a reused position: %w", pos, ErrPolicy)
		}
		off := pos - segs[j].Dst
		out[i] = 1/float64(1+off) - float64(j)*1e-9
	}
	return out, nil
}

// RecomputeOptions configure PlanRecompute. Zero values are documented per
// field.
type RecomputeOptions struct {
	// Scorer ranks candidates for ratio:R; nil means PositionalScorer.
	Scorer Scorer
	// CheckLayers are the layers the scorer is consulted at, ascending
	// (CacheBlend checks layer 1). Nil means one round at layer 0.
	CheckLayers []int
	// Widen is by how much each earlier round keeps more candidates than
	// the next (gradual filtering: round j of m keeps budget×Widen^(m-1-j));
	// 0 means 2.
	Widen float64
	// Max bounds the result for every policy (an engine's limit on tokens
	// per recompute); 0 means no bound beyond the reused tokens. When it
	// cuts, the highest-priority positions stay: for full and epic the
	// ones nearest their segment's start.
	Max int
	// KV is passed to the scorer (see ScoreInput.KV).
	KV Target
}

// Recompute is a recompute plan: prompt positions among the reused tokens
// whose KV the engine must compute afresh. Positions are ascending, unique
// and within the plan's segments.
type Recompute struct {
	Policy    Policy
	Positions []int
	Reused    int // reused tokens in the plan
}

// Fraction is the share of reused tokens recomputed.
func (r *Recompute) Fraction() float64 {
	if r.Reused == 0 {
		return 0
	}
	return float64(len(r.Positions)) / float64(r.Reused)
}

// PlanRecompute picks the positions to recompute under policy. Prefix
// segments are exact and never recomputed except by full.
func PlanRecompute(ctx context.Context, policy Policy, plan *Plan, opts RecomputeOptions) (*Recompute, error) {
	if err := plan.Validate(); err != nil {
		return nil, err
	}
	if opts.Max < 0 {
		return nil, fmt.Errorf("plan recompute: max %d < 0: %w", opts.Max, ErrPolicy)
	}
	rc := &Recompute{Policy: policy, Reused: plan.Reused()}
	var cands []int
	for _, s := range plan.Segments {
		if s.Prefix && policy.Kind != PolicyFull {
			continue
		}
		n := s.Len()
		if policy.Kind == PolicyEpic {
			n = min(n, policy.K)
		}
		for i := range n {
			cands = append(cands, s.Dst+i)
		}
	}
	var budget int
	switch policy.Kind {
	case PolicyNone:
		rc.Positions = []int{}
		return rc, nil
	case PolicyFull, PolicyEpic:
		budget = len(cands)
	case PolicyRatio:
		if !(policy.Ratio > 0 && policy.Ratio <= 1) {
			return nil, fmt.Errorf("plan recompute: ratio %v outside (0, 1]: %w", policy.Ratio, ErrPolicy)
		}
		budget = min(len(cands), int(math.Ceil(policy.Ratio*float64(rc.Reused))))
	default:
		return nil, fmt.Errorf("plan recompute: policy kind %d unknown: %w", policy.Kind, ErrPolicy)
	}
	if policy.Kind == PolicyEpic && policy.K < 1 {
		return nil, fmt.Errorf("plan recompute: epic k %d < 1: %w", policy.K, ErrPolicy)
	}
	if opts.Max > 0 {
		budget = min(budget, opts.Max)
	}
	if budget == len(cands) {
		rc.Positions = cands
		return rc, nil
	}
	if budget == 0 {
		rc.Positions = []int{}
		return rc, nil
	}
	var err error
	if policy.Kind == PolicyRatio {
		rc.Positions, err = refine(ctx, plan, cands, budget, opts)
	} else {
		rc.Positions, err = selectTop(ctx, PositionalScorer{}, ScoreInput{Rounds: 1, Candidates: cands, Keep: budget, Plan: plan})
	}
	if err != nil {
		return nil, err
	}
	return rc, nil
}

// refine runs the scorer over the check layers, narrowing the candidates
// to the budget by the last one.
func refine(ctx context.Context, plan *Plan, cands []int, budget int, opts RecomputeOptions) ([]int, error) {
	scorer := opts.Scorer
	if scorer == nil {
		scorer = PositionalScorer{}
	}
	layers := opts.CheckLayers
	if layers == nil {
		layers = []int{0}
	}
	if !slices.IsSorted(layers) || len(layers) == 0 || layers[0] < 0 {
		return nil, fmt.Errorf("plan recompute: check layers %v must be ascending and >= 0: %w", layers, ErrPolicy)
	}
	widen := opts.Widen
	if widen == 0 {
		widen = 2
	}
	if !(widen >= 1) || math.IsInf(widen, 0) {
		return nil, fmt.Errorf("plan recompute: widen %v, want >= 1: %w", widen, ErrPolicy)
	}
	for j, l := range layers {
		keep := budget
		if rest := len(layers) - 1 - j; rest > 0 {
			keep = int(math.Min(float64(len(cands)), math.Ceil(float64(budget)*math.Pow(widen, float64(rest)))))
		}
		var err error
		cands, err = selectTop(ctx, scorer, ScoreInput{Layer: l, Round: j, Rounds: len(layers), Candidates: cands, Keep: keep, Plan: plan, KV: opts.KV})
		if err != nil {
			return nil, err
		}
	}
	return cands, nil
}

// selectTop keeps in.Keep of in.Candidates with the highest scores (ties to
// the earlier position) and returns them ascending.
func selectTop(ctx context.Context, s Scorer, in ScoreInput) ([]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if in.Keep >= len(in.Candidates) {
		return in.Candidates, nil
	}
	scores, err := s.Score(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("plan recompute: score layer %d: %w", in.Layer, err)
	}
	if len(scores) != len(in.Candidates) {
		return nil, fmt.Errorf("plan recompute: scorer returned %d scores for %d candidates: %w", len(scores), len(in.Candidates), ErrPolicy)
	}
	idx := make([]int, len(scores))
	for i, v := range scores {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("plan recompute: score of position %d is %v: %w", in.Candidates[i], v, ErrPolicy)
		}
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	out := make([]int, in.Keep)
	for i := range out {
		out[i] = in.Candidates[idx[i]]
	}
	slices.Sort(out)
	return out, nil
}
