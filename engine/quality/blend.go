package quality

import (
	"context"
	"fmt"
	"slices"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/kvcache"
)

// BlendOptions configures EvalBlend. Zero values take the defaults in
// brackets.
type BlendOptions struct {
	Set      SetOptions
	Policies []Policy // [DefaultPolicies]
	// CheckLayers are CacheBlend's selecting layers, ascending [1, 2]:
	// every candidate is recomputed before the first, and each check
	// layer keeps the candidates whose K/V deviate most.
	CheckLayers []int
	// Widen is CacheBlend's gradual filtering: each check layer keeps
	// Widen times more candidates than the next, down to the budget at
	// the last [2] (kvcache.RecomputeOptions.Widen).
	Widen float64
}

// PolicyResult is one policy's quality over the evaluation set.
type PolicyResult struct {
	Policy string `json:"policy"`
	// MeanKL is the mean over prompts of the mean KL(full‖policy), in nats,
	// of the next-token distributions over the continuation positions.
	MeanKL float64 `json:"mean_kl"`
	// KLStdErr is the standard error of MeanKL across prompts.
	KLStdErr float64 `json:"kl_stderr"`
	// Top1 is the fraction of continuation positions whose argmax equals
	// the full prefill's.
	Top1 float64 `json:"top1_agreement"`
	// MatchLen is the mean length of the greedy continuation that equals
	// the full prefill's, in tokens (at most SetOptions.Continue).
	MatchLen float64 `json:"greedy_match_len"`
	// Recomputed is the mean fraction of prompt tokens whose KV is
	// computed through every layer (recomputed reused tokens plus the
	// tokens no cache held: the cue, and everything after the first
	// document for prefix).
	Recomputed float64 `json:"recomputed_frac"`
	// Compute is the mean prefill work (token × layer) relative to a full
	// prefill of the prompt: CacheBlend pays for its full layers before
	// the check layer here.
	Compute float64 `json:"compute_frac"`
	// PromptKL is each prompt's mean KL, in set order.
	PromptKL []float64 `json:"prompt_kl"`
}

// BlendReport is the result of EvalBlend.
type BlendReport struct {
	Model        string         `json:"model"`
	Fingerprint  string         `json:"model_fingerprint"`
	Set          SetOptions     `json:"set"`
	CheckLayers  []int          `json:"check_layers"`
	Widen        float64        `json:"widen"`
	PromptTokens float64        `json:"mean_prompt_tokens"`
	Positions    int            `json:"scored_positions"`
	Results      []PolicyResult `json:"results"`
}

// Result returns the result of the named policy.
func (r *BlendReport) Result(policy string) (PolicyResult, bool) {
	for _, x := range r.Results {
		if x.Policy == policy {
			return x, true
		}
	}
	return PolicyResult{}, false
}

// EvalBlend builds the evaluation set and compares every policy with a full
// prefill on each prompt.
func EvalBlend(ctx context.Context, e *engine.Engine, tok *engine.Tokenizer, opts BlendOptions) (*BlendReport, error) {
	if len(opts.Policies) == 0 {
		opts.Policies = DefaultPolicies()
	}
	if opts.CheckLayers == nil {
		opts.CheckLayers = []int{1, 2}
	}
	if opts.Widen == 0 {
		opts.Widen = 2
	}
	for i, l := range opts.CheckLayers {
		if l < 1 || l >= e.Config().Layers || (i > 0 && l <= opts.CheckLayers[i-1]) {
			return nil, fmt.Errorf("eval blend: check layers %v: want ascending layers in 1..%d (layer 0's K/V depend only on token and position): %w", opts.CheckLayers, e.Config().Layers-1, ErrOptions)
		}
	}
	if !(opts.Widen >= 1) {
		return nil, fmt.Errorf("eval blend: widen %v, want >= 1: %w", opts.Widen, ErrOptions)
	}
	set, err := NewSet(ctx, e, tok, opts.Set)
	if err != nil {
		return nil, fmt.Errorf("eval blend: %w", err)
	}
	spec := e.Model().Spec
	fp := spec.Fingerprint()
	rep := &BlendReport{Model: spec.Name, Fingerprint: fmt.Sprintf("%x", fp[:8]), Set: set.Options, CheckLayers: opts.CheckLayers, Widen: opts.Widen}
	b, err := newBench(e, set)
	if err != nil {
		return nil, fmt.Errorf("eval blend: %w", err)
	}
	acc := make([]accum, len(opts.Policies))
	for pi, p := range set.Prompts {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("eval blend: %w", err)
		}
		ref, err := b.reference(p)
		if err != nil {
			return nil, fmt.Errorf("eval blend: prompt %d: %w", pi, err)
		}
		rep.PromptTokens += float64(len(ref.prompt)) / float64(len(set.Prompts))
		rep.Positions += len(ref.cont)
		for i, pol := range opts.Policies {
			run, err := b.runPolicy(ctx, ref, p, pol, opts)
			if err != nil {
				return nil, fmt.Errorf("eval blend: prompt %d policy %s: %w", pi, pol, err)
			}
			acc[i].add(ref, run)
		}
	}
	for i, pol := range opts.Policies {
		rep.Results = append(rep.Results, acc[i].result(pol.String()))
	}
	return rep, nil
}

// bench holds what every prompt reuses (the documents' chunks) and
// scratch states.
type bench struct {
	e     *engine.Engine
	set   *Set
	store *chunkStore
	s, s2 *engine.State
}

func newBench(e *engine.Engine, set *Set) (*bench, error) {
	store, err := newChunkStore(e, set)
	if err != nil {
		return nil, err
	}
	return &bench{e: e, set: set, store: store, s: e.NewState(), s2: e.NewState()}, nil
}

// refRun is a prompt's full prefill: its tokens, the greedy continuation
// and the logits at each continuation position (teacher-forced).
type refRun struct {
	prompt []engine.Token
	cont   []engine.Token
	logits [][]float32
}

func (b *bench) reference(p Prompt) (*refRun, error) {
	r := &refRun{prompt: b.set.Tokens(p)}
	s := b.s
	s.Reset()
	last, err := s.Forward(r.prompt)
	if err != nil {
		return nil, err
	}
	last = slices.Clone(last)
	b.s2.CopyFrom(s)
	if r.cont, err = b.s2.Greedy(last, b.set.Options.Continue); err != nil {
		return nil, err
	}
	if len(r.cont) == 0 {
		return nil, fmt.Errorf("the model ended the story right after the prompt: %w", ErrOptions)
	}
	r.logits, err = ContinuationLogits(s, last, r.cont)
	return r, err
}

// continuation is the reference's continuation, as Compare takes it.
func (r *refRun) continuation() Continuation { return Continuation{Tokens: r.cont, Logits: r.logits} }

// policyRun is one policy's outcome on one prompt.
type policyRun struct {
	logits     [][]float32
	greedy     []engine.Token
	recomputed float64
	compute    float64
}

func (b *bench) runPolicy(ctx context.Context, ref *refRun, p Prompt, pol Policy, opts BlendOptions) (*policyRun, error) {
	e, s := b.e, b.s
	layers := e.Config().Layers
	P := len(ref.prompt)
	plan, sources := b.store.plan(b.set, p)
	loaded := len(plan.Prompt)
	var (
		last []float32
		st   engine.BlendStats
	)
	if pol.Kind == Prefix {
		// only BOS and the first document come from the cache
		firstLen := plan.Segments[1].Dst + plan.Segments[1].Len()
		pre := &kvcache.Plan{Prompt: plan.Prompt[:firstLen], Keys: plan.Keys[:2], Segments: plan.Segments[:2]}
		kv, err := b.store.stitch(ctx, pre, sources[:2])
		if err != nil {
			return nil, err
		}
		if err := s.LoadKV(kv, pre.Prompt); err != nil {
			return nil, err
		}
		if last, st, err = s.Blend(ref.prompt[firstLen:], engine.BlendOptions{}); err != nil {
			return nil, err
		}
	} else {
		kv, err := b.store.stitch(ctx, plan, sources)
		if err != nil {
			return nil, err
		}
		if err := s.LoadKV(kv, plan.Prompt); err != nil {
			return nil, err
		}
		var kp kvcache.Policy
		switch pol.Kind {
		case Full:
			kp = kvcache.Policy{Kind: kvcache.PolicyFull}
		case Reuse:
			kp = kvcache.Policy{Kind: kvcache.PolicyNone}
		case Epic:
			kp = kvcache.Policy{Kind: kvcache.PolicyEpic, K: pol.K}
		case Ratio:
			kp = kvcache.Policy{Kind: kvcache.PolicyRatio, Ratio: pol.Ratio}
		default:
			return nil, fmt.Errorf("unknown policy %v: %w", pol, ErrOptions)
		}
		sc := s.NewBlendScorer()
		if kp.Kind == kvcache.PolicyRatio && kp.Ratio == 0 {
			kp = kvcache.Policy{Kind: kvcache.PolicyNone}
		}
		rc, err := kvcache.PlanRecompute(ctx, kp, plan, kvcache.RecomputeOptions{Scorer: sc, CheckLayers: opts.CheckLayers, Widen: opts.Widen})
		if err != nil {
			return nil, err
		}
		if last, st, err = sc.Finish(rc.Positions, ref.prompt[loaded:], false); err != nil {
			return nil, err
		}
	}
	run, err := b.follow(last, ref)
	if err != nil {
		return nil, err
	}
	run.recomputed = float64(st.New+len(st.Recomputed)) / float64(P)
	work := float64(st.New * layers)
	for _, r := range st.RowsPerLayer {
		work += float64(r)
	}
	run.compute = work / float64(P*layers)
	return run, nil
}

// follow continues the prompt in b.s from its last logits, as the
// reference did: greedily (in b.s2) for as many tokens as ref's
// continuation, and teacher-forced along that continuation in b.s.
func (b *bench) follow(last []float32, ref *refRun) (*policyRun, error) {
	last = slices.Clone(last)
	run := &policyRun{}
	b.s2.CopyFrom(b.s)
	var err error
	if run.greedy, err = b.s2.Greedy(last, len(ref.cont)); err != nil {
		return nil, err
	}
	if run.logits, err = ContinuationLogits(b.s, last, ref.cont); err != nil {
		return nil, err
	}
	return run, nil
}

// accum gathers one policy's results over prompts.
type accum struct {
	promptKL             []float64
	top1, n              int
	match, recomp, compu float64
}

func (a *accum) add(ref *refRun, run *policyRun) {
	ag := Compare(ref.continuation(), Continuation{Tokens: run.greedy, Logits: run.logits})
	a.promptKL = append(a.promptKL, ag.KL)
	a.top1 += ag.Top1
	a.n += len(ref.logits)
	a.match += float64(ag.Match)
	a.recomp += run.recomputed
	a.compu += run.compute
}

func (a *accum) result(name string) PolicyResult {
	mean, se := MeanStdErr(a.promptKL)
	n := float64(len(a.promptKL))
	return PolicyResult{
		Policy: name, MeanKL: mean, KLStdErr: se, Top1: float64(a.top1) / float64(a.n),
		MatchLen: a.match / n, Recomputed: a.recomp / n, Compute: a.compu / n, PromptKL: a.promptKL,
	}
}
