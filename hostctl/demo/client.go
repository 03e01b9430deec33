package demo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/engine/quality"
	"github.com/kvloom/kvloom/hostctl"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// LogitTolerance bounds |Δlogit| between prefix-only reuse and a full
// prefill. Prefix reuse is exact in this engine (the same kernels on the
// same rows), so the demo expects 0; the bound leaves room for an engine
// whose batched kernels sum in another order.
const LogitTolerance = 1e-5

// rotTolerance bounds the difference between a reused key and the stored
// key re-rotated here, relative to the key's magnitude.
const rotTolerance = 1e-5

// storedKV is what the engine stored under one chunk key: the whole prompt
// it sent, its KV, and where the chunk starts in it.
type storedKV struct {
	toks []engine.Token
	kv   *kvcache.KV
	base int
}

// client is the inference engine: the reference engine on the real model,
// talking to the daemon through the gRPC API.
type client struct {
	e      *engine.Engine
	c      api.KVLoomClient
	model  string
	spec   kvcache.ModelSpec
	rot    *kvcache.Rotator
	shared matcher.Salt
	// stored remembers every chunk the engine stored, by key, so that each
	// reused range can be checked against what was stored.
	stored map[matcher.ChunkKey]storedKV
	// full runs reference prefills, path the runs over reused KV, greedy
	// the greedy continuations; kept holds the served run's sequence after
	// its greedy reply (what a chat engine stores).
	full, path, greedy, kept *engine.State

	rpc rpcCounts
	// kvBad counts reused ranges whose KV was not what was stored.
	kvBad int
}

// rpcCounts are the API calls the engine made, all of which succeeded (a
// failed call ends the demo).
type rpcCounts struct {
	prepares, lookups, stores, releases int
	storeChunks                         int
	storeBytes                          uint64
	lookupAgree                         int
}

func newClient(e *engine.Engine, c api.KVLoomClient, model string) (*client, error) {
	spec := e.Model().Spec
	rot, err := kvcache.NewRotator(&spec)
	if err != nil {
		return nil, err
	}
	shared, err := spec.Salt("")
	if err != nil {
		return nil, err
	}
	return &client{
		e: e, c: c, model: model, spec: spec, rot: rot, shared: shared, stored: map[matcher.ChunkKey]storedKV{},
		full: e.NewState(), path: e.NewState(), greedy: e.NewState(), kept: e.NewState(),
	}, nil
}

// store sends the KV of the sequence in st to the daemon (the prefix blocks,
// and the declared chunks) and remembers what it stored.
func (c *client) store(ctx context.Context, tenant string, shared bool, st *engine.State, chunks []*api.ChunkSpan) error {
	toks := slices.Clone(st.Tokens())
	kv, err := st.ExportKV(0, len(toks), c.spec.DType)
	if err != nil {
		return err
	}
	resp, err := hostctl.StoreKV(ctx, c.c, &api.StoreHeader{Tenant: tenant, Model: c.model, Tokens: toks, Chunks: chunks, Shared: shared}, kv, 0)
	if err != nil {
		return fmt.Errorf("store %d tokens for %s: %w", len(toks), tenant, err)
	}
	c.rpc.stores++
	c.rpc.storeChunks += int(resp.Chunks)
	c.rpc.storeBytes += resp.Bytes
	salt := c.shared
	if !shared {
		if salt, err = c.spec.Salt(tenant); err != nil {
			return err
		}
	}
	keys, err := matcher.PrefixKeys(salt, toks, chunkTokens, nil)
	if err != nil {
		return err
	}
	remember := func(k matcher.ChunkKey, base int) {
		if _, ok := c.stored[k]; !ok {
			c.stored[k] = storedKV{toks: toks, kv: kv, base: base}
		}
	}
	for i, k := range keys {
		remember(k, i*chunkTokens)
	}
	for _, sp := range chunks {
		from, n := int(sp.Start), int(sp.Length)
		remember(matcher.ChunkKeyOf(salt, toks[from:from+n]), from)
	}
	return nil
}

// prepared is a Prepare answered and its segment mapped.
type prepared struct {
	plan     *api.Plan
	done     *api.PrepareDone
	seg      *hostctl.Mapped // nil when nothing is reused
	took     time.Duration   // the call and the mapping
	released bool
}

// tokens is the segment's length: positions below it come from the daemon
// (or are recomputed inside the load).
func (p *prepared) tokens() int {
	if p.seg == nil {
		return 0
	}
	return p.seg.KV.Tokens()
}

func (p *prepared) reused() (prefix, chunk int) {
	for _, r := range p.plan.GetRanges() {
		if r.Prefix {
			prefix += int(r.Length)
		} else {
			chunk += int(r.Length)
		}
	}
	return prefix, chunk
}

// prepare asks the daemon, as a router would, how much is reusable
// (Lookup), then, as the engine, for the KV itself (Prepare), and maps it.
func (c *client) prepare(ctx context.Context, tenant string, toks []engine.Token, recompute string) (*prepared, error) {
	lk, err := c.c.Lookup(ctx, &api.LookupRequest{Tenant: tenant, Model: c.model, Tokens: toks})
	if err != nil {
		return nil, fmt.Errorf("lookup %d tokens: %w", len(toks), err)
	}
	c.rpc.lookups++
	start := time.Now()
	res, err := hostctl.PrepareAll(ctx, c.c, &api.PrepareRequest{Tenant: tenant, Model: c.model, Tokens: toks, Recompute: recompute})
	if err != nil {
		return nil, fmt.Errorf("prepare %d tokens: %w", len(toks), err)
	}
	c.rpc.prepares++
	p := &prepared{plan: res.Plan, done: res.Done}
	if lk.ReusableTokens == res.Plan.ReusedTokens {
		c.rpc.lookupAgree++
	}
	if kv := res.Plan.GetKv(); kv != nil {
		if p.seg, err = hostctl.MapSegment(kv); err != nil {
			return nil, errors.Join(err, c.release(ctx, p))
		}
		if got := len(res.Layers); got != int(kv.Layers) {
			return nil, errors.Join(fmt.Errorf("prepare: %d layer events for %d layers", got, kv.Layers), c.release(ctx, p))
		}
	}
	p.took = time.Since(start)
	return p, nil
}

// release unmaps the segment and hands it back to the daemon.
func (c *client) release(ctx context.Context, p *prepared) error {
	if p.plan.GetKv() == nil || p.released {
		return nil
	}
	p.released = true
	var err error
	if p.seg != nil {
		err = p.seg.Close()
		p.seg = nil
	}
	if _, rerr := c.c.Release(ctx, &api.ReleaseRequest{Handle: p.plan.Kv.Handle}); rerr != nil {
		return errors.Join(err, fmt.Errorf("release segment: %w", rerr))
	}
	c.rpc.releases++
	return err
}

// refRun is a prompt's full prefill: the engine's time for it, the greedy
// continuation and the logits at each continuation position
// (teacher-forced), as engine/quality scores them.
type refRun struct {
	took   time.Duration
	cont   []engine.Token
	logits [][]float32
}

// reference runs the full prefill of toks in c.full and continues it for n
// tokens. c.full keeps the prompt's KV (and the continuation's).
func (c *client) reference(toks []engine.Token, n int) (*refRun, error) {
	s := c.full
	s.Reset()
	start := time.Now()
	last, err := s.Forward(toks)
	if err != nil {
		return nil, err
	}
	r := &refRun{took: time.Since(start)}
	last = slices.Clone(last)
	c.greedy.CopyFrom(s)
	if r.cont, err = c.greedy.Greedy(last, n); err != nil {
		return nil, err
	}
	c.kept.CopyFrom(c.greedy)
	if r.logits, err = quality.ContinuationLogits(s, last, r.cont); err != nil {
		return nil, err
	}
	return r, nil
}

// pathKind is how the engine uses the KV a Prepare handed it.
type pathKind int

const (
	// pathPlan recomputes what the daemon's plan lists: the positions no
	// range covers and those its recompute policy picked.
	pathPlan pathKind = iota
	// pathStitched recomputes only the positions no range covers: the
	// stitched KV as it is (RoPE-corrected, no blending).
	pathStitched
	// pathCacheBlend recomputes the positions no range covers and a ratio
	// of the reused non-prefix positions picked by CacheBlend's own KV
	// deviation scorer inside the prefill (check layers 1 and 2).
	pathCacheBlend
)

// pathRun is the engine's prefill over reused KV and what it then said.
type pathRun struct {
	took   time.Duration // LoadKV and the blended prefill
	stats  engine.BlendStats
	greedy []engine.Token
	logits [][]float32
}

// pathSpec says how to run a prefill over reused KV.
type pathSpec struct {
	kind pathKind
	// ratio is CacheBlend's budget (pathCacheBlend).
	ratio float64
	// keep leaves the sequence with the greedy reply in c.kept.
	keep bool
}

// run loads the segment into c.path and prefills the rest of toks the way
// spec says, then continues: greedily for len(ref.cont) tokens and
// teacher-forced along ref.cont.
func (c *client) run(ctx context.Context, p *prepared, toks []engine.Token, ref *refRun, spec pathSpec) (*pathRun, error) {
	s := c.path
	T := p.tokens()
	start := time.Now()
	if err := s.LoadKV(p.seg.KV, toks[:T]); err != nil {
		return nil, err
	}
	loaded := T
	if loaded == len(toks) {
		// The engine needs the logits after the last token: it computes
		// that position itself.
		loaded--
		if err := s.Truncate(loaded); err != nil {
			return nil, err
		}
	}
	fixed, planned := c.recomputeSets(p, loaded)
	var (
		last []float32
		st   engine.BlendStats
		err  error
	)
	switch spec.kind {
	case pathPlan:
		last, st, err = s.Blend(toks[loaded:], engine.BlendOptions{Recompute: planned})
	case pathStitched:
		last, st, err = s.Blend(toks[loaded:], engine.BlendOptions{Recompute: fixed})
	case pathCacheBlend:
		last, st, err = c.cacheBlend(ctx, p, toks[:loaded], toks[loaded:], fixed, spec.ratio)
	}
	if err != nil {
		return nil, fmt.Errorf("prefill over %d reused positions: %w", loaded, err)
	}
	r := &pathRun{took: time.Since(start), stats: st}
	last = slices.Clone(last)
	c.greedy.CopyFrom(s)
	if r.greedy, err = c.greedy.Greedy(last, len(ref.cont)); err != nil {
		return nil, err
	}
	if spec.keep {
		c.kept.CopyFrom(c.greedy)
	}
	if r.logits, err = quality.ContinuationLogits(s, last, ref.cont); err != nil {
		return nil, err
	}
	return r, nil
}

// recomputeSets returns, among the loaded positions, those no range covers
// (they hold no KV) and those the daemon's plan lists (a superset).
func (c *client) recomputeSets(p *prepared, loaded int) (fixed, planned []int) {
	covered := make([]bool, loaded)
	for _, r := range p.plan.Ranges {
		for q := int(r.Start); q < int(r.Start+r.Length) && q < loaded; q++ {
			covered[q] = true
		}
	}
	for q := range loaded {
		if !covered[q] {
			fixed = append(fixed, q)
		}
	}
	for _, q := range p.plan.Recompute {
		if int(q) < loaded {
			planned = append(planned, int(q))
		}
	}
	return fixed, planned
}

// cacheBlend is CacheBlend run by the engine over the daemon's ranges:
// kvcache plans the recompute with the engine's BlendScorer, which
// recomputes the candidates through the check layers and keeps those
// whose fresh K/V deviate most from the reused ones.
// The KV of loaded is in c.path; newToks follow it.
func (c *client) cacheBlend(ctx context.Context, p *prepared, loaded, newToks []engine.Token, fixed []int, ratio float64) ([]float32, engine.BlendStats, error) {
	plan := &kvcache.Plan{Prompt: loaded}
	for _, r := range p.plan.Ranges {
		start, end := int(r.Start), min(int(r.Start+r.Length), len(loaded))
		if end <= start {
			continue
		}
		key, err := matcher.ParseChunkKey(r.Chunk)
		if err != nil {
			return nil, engine.BlendStats{}, fmt.Errorf("range at %d: %w", r.Start, err)
		}
		plan.Keys = append(plan.Keys, key)
		off := int(r.ChunkOffset)
		plan.Segments = append(plan.Segments, kvcache.Segment{Source: len(plan.Keys) - 1, SrcStart: off, SrcEnd: off + end - start, Dst: start, Prefix: r.Prefix})
	}
	var check []int
	for _, l := range []int{1, 2} {
		if l < c.e.Config().Layers {
			check = append(check, l)
		}
	}
	sc := c.path.NewBlendScorer()
	rc, err := kvcache.PlanRecompute(ctx, kvcache.Policy{Kind: kvcache.PolicyRatio, Ratio: ratio}, plan,
		kvcache.RecomputeOptions{Scorer: withFixed{sc, fixed}, CheckLayers: check})
	if err != nil {
		return nil, engine.BlendStats{}, err
	}
	return sc.Finish(union(rc.Positions, fixed), newToks, false)
}

// withFixed scores candidates with a BlendScorer while keeping the
// positions no range covers in its computation at every round: they hold
// no reused KV, so they are computed in every layer whatever the scores.
type withFixed struct {
	b     *engine.BlendScorer
	fixed []int
}

var _ kvcache.Scorer = withFixed{}

func (w withFixed) Score(ctx context.Context, in kvcache.ScoreInput) ([]float64, error) {
	all := union(in.Candidates, w.fixed)
	in2 := in
	in2.Candidates = all
	scores, err := w.b.Score(ctx, in2)
	if err != nil {
		return nil, err
	}
	out := make([]float64, 0, len(in.Candidates))
	j := 0
	for i, q := range all {
		if j < len(in.Candidates) && in.Candidates[j] == q {
			out = append(out, scores[i])
			j++
		}
	}
	return out, nil
}

// union merges two ascending position lists.
func union(a, b []int) []int {
	out := make([]int, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i] < b[j]):
			out = append(out, a[i])
			i++
		case i == len(a) || b[j] < a[i]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// verifyKV checks every reused range of a Prepare against what the engine
// stored under its key: the same tokens, V rows identical, K rows the
// stored keys re-rotated to their new positions; and a prefix range's rows
// identical to the engine's own prefill of this prompt (c.full holds it).
// It returns one line per problem.
func (c *client) verifyKV(p *prepared, toks []engine.Token) []string {
	if p.seg == nil {
		return nil
	}
	var bad []string
	kv := p.seg.KV
	ref, err := c.full.ExportKV(0, min(kv.Tokens(), c.full.Len()), c.spec.DType)
	if err != nil {
		return []string{fmt.Sprintf("export reference KV: %v", err)}
	}
	for _, r := range p.plan.Ranges {
		where := fmt.Sprintf("range [%d,%d) of a %d-token prompt", r.Start, r.Start+r.Length, len(toks))
		key, err := matcher.ParseChunkKey(r.Chunk)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: chunk key: %v", where, err))
			continue
		}
		sk, ok := c.stored[key]
		if !ok {
			bad = append(bad, fmt.Sprintf("%s: chunk %s was never stored by this engine", where, r.Chunk))
			continue
		}
		for i := range int(r.Length) {
			dst, src := int(r.Start)+i, sk.base+int(r.ChunkOffset)+i
			if dst >= kv.Tokens() || src >= len(sk.toks) || toks[dst] != sk.toks[src] {
				bad = append(bad, fmt.Sprintf("%s: position %d does not hold the stored chunk's token", where, dst))
				break
			}
			if msg := c.checkRow(kv, sk.kv, dst, src); msg != "" {
				bad = append(bad, fmt.Sprintf("%s: position %d: %s", where, dst, msg))
				break
			}
			if r.Prefix && dst < ref.Tokens() {
				if msg := sameRows(kv, ref, dst, dst); msg != "" {
					bad = append(bad, fmt.Sprintf("%s: prefix position %d differs from the engine's prefill: %s", where, dst, msg))
					break
				}
			}
		}
	}
	c.kvBad += len(bad)
	return bad
}

// checkRow compares position dst of the stitched KV with position src of
// the stored KV in every layer: V identical, K rotated by dst-src.
func (c *client) checkRow(got, stored *kvcache.KV, dst, src int) string {
	if dst == src {
		return sameRows(got, stored, dst, src)
	}
	shape := got.Shape()
	row := make([]float32, shape.KVHeads*shape.HeadDim)
	want := make([]float32, len(row))
	for l := range shape.Layers {
		if string(got.Row(l, true, dst)) != string(stored.Row(l, true, src)) {
			return fmt.Sprintf("layer %d: V differs from the stored chunk's", l)
		}
		dt := shape.DType
		k := slices.Clone(stored.Row(l, false, src))
		if err := c.rot.Rotate(k, dt, dst-src, stored.Scale(l, false)); err != nil {
			return err.Error()
		}
		if err := kvcache.DecodeFloat32(want, dt, k, stored.Scale(l, false)); err != nil {
			return err.Error()
		}
		if err := kvcache.DecodeFloat32(row, dt, got.Row(l, false, dst), got.Scale(l, false)); err != nil {
			return err.Error()
		}
		for j := range row {
			if d := math.Abs(float64(row[j] - want[j])); d > rotTolerance*math.Max(1, math.Abs(float64(want[j]))) {
				return fmt.Sprintf("layer %d: K[%d] = %g, the stored key rotated by %d is %g", l, j, row[j], dst-src, want[j])
			}
		}
	}
	return ""
}

// sameRows reports whether position a of x and b of y hold the same bytes
// in every layer.
func sameRows(x, y *kvcache.KV, a, b int) string {
	for l := range x.Shape().Layers {
		for _, v := range []bool{false, true} {
			if string(x.Row(l, v, a)) != string(y.Row(l, v, b)) {
				what := "K"
				if v {
					what = "V"
				}
				return fmt.Sprintf("layer %d: %s differs", l, what)
			}
		}
	}
	return ""
}

// score compares a run with the reference: mean KL over the continuation
// positions, how many argmaxes agree, how long the greedy continuations
// agree, and the largest logit difference.
func score(ref *refRun, run *pathRun) (kl float64, top1, match int, maxDiff float64) {
	a := quality.Compare(quality.Continuation{Tokens: ref.cont, Logits: ref.logits}, quality.Continuation{Tokens: run.greedy, Logits: run.logits})
	for i, l := range ref.logits {
		for j := range l {
			maxDiff = math.Max(maxDiff, math.Abs(float64(l[j]-run.logits[i][j])))
		}
	}
	return a.KL, a.Top1, a.Match, maxDiff
}
