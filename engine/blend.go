package engine

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// LoadKV replaces the cache with kv: positions 0..kv.Tokens()-1 holding
// tokens, keys already rotated for these positions (the stitcher's
// output). Any kvcache dtype is accepted and converted to float32.
func (s *State) LoadKV(kv *kvcache.KV, tokens []Token) error {
	c := s.c
	sh := kv.Shape()
	if sh.Layers != c.Layers || sh.KVHeads != c.KVHeads || sh.HeadDim != c.HeadSize() {
		return fmt.Errorf("load kv: shape %s, model wants %dx%dx%d: %w", sh, c.Layers, c.KVHeads, c.HeadSize(), ErrBadInput)
	}
	n := kv.Tokens()
	if n != len(tokens) {
		return fmt.Errorf("load kv: %d positions of KV but %d tokens: %w", n, len(tokens), ErrBadInput)
	}
	if n > c.SeqLen {
		return fmt.Errorf("load kv: %d positions, seq_len is %d: %w", n, c.SeqLen, ErrContextFull)
	}
	for i, t := range tokens {
		if int(t) >= c.VocabSize {
			return fmt.Errorf("load kv: token %d at position %d, vocabulary has %d: %w", t, i, c.VocabSize, ErrBadToken)
		}
	}
	w := n * c.KVDim()
	for l := range c.Layers {
		if err := kvcache.DecodeFloat32(s.k[l][:w], sh.DType, kv.K(l), kv.Scale(l, false)); err != nil {
			return fmt.Errorf("load kv: layer %d keys: %w", l, err)
		}
		if err := kvcache.DecodeFloat32(s.v[l][:w], sh.DType, kv.V(l), kv.Scale(l, true)); err != nil {
			return fmt.Errorf("load kv: layer %d values: %w", l, err)
		}
	}
	copy(s.tokens, tokens)
	s.n = n
	return nil
}

// ExportKV returns positions [from, to) of the cache as a contiguous
// kvcache.KV of dtype dt (keys as computed, rotated for their positions).
// For FP8 each layer's K and V get the scale absmax/448.
func (s *State) ExportKV(from, to int, dt kvcache.DType) (*kvcache.KV, error) {
	c := s.c
	if from < 0 || to > s.n || from >= to {
		return nil, fmt.Errorf("export kv [%d, %d): cache holds %d positions: %w", from, to, s.n, ErrBadInput)
	}
	sh := kvcache.Shape{Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadSize(), DType: dt}
	kv, err := kvcache.NewKV(sh, to-from)
	if err != nil {
		return nil, fmt.Errorf("export kv: %w", err)
	}
	kd := c.KVDim()
	for l := range c.Layers {
		ks, vs := s.k[l][from*kd:to*kd], s.v[l][from*kd:to*kd]
		var sc kvcache.Scales
		if dt == kvcache.FP8E4M3 {
			sc = kvcache.Scales{K: absMax(ks) / kvcache.FP8E4M3Max, V: absMax(vs) / kvcache.FP8E4M3Max}
			kv.SetScales(l, sc)
		}
		if err := kvcache.EncodeFloat32(kv.K(l), dt, ks, sc.K); err != nil {
			return nil, fmt.Errorf("export kv: layer %d keys: %w", l, err)
		}
		if err := kvcache.EncodeFloat32(kv.V(l), dt, vs, sc.V); err != nil {
			return nil, fmt.Errorf("export kv: layer %d values: %w", l, err)
		}
	}
	return kv, nil
}

func absMax(x []float32) float32 {
	var m float32
	for _, v := range x {
		m = max(m, float32(math.Abs(float64(v))))
	}
	if m == 0 {
		return 1
	}
	return m
}

// SpecFor is the model's spec with KV stored as dt: the KV dtype is part
// of the fingerprint, so chunks of each dtype have their own.
func (m *Model) SpecFor(dt kvcache.DType) kvcache.ModelSpec {
	s := m.Spec
	s.DType = dt
	return s
}

// ExportChunk returns positions [from, to) of the cache as a kvcache
// chunk of dtype dt: the tokens, their KV (keys rotated for positions
// from..to-1, so BasePos is from), the fingerprint of SpecFor(dt) and
// the key matcher.ChunkKeyOf(salt, tokens); salt should come from
// SpecFor(dt).Salt. Encode it with kvcache.EncodeChunk or
// kvcache.AppendBlob and any codec.
func (s *State) ExportChunk(from, to int, dt kvcache.DType, salt matcher.Salt) (*kvcache.Chunk, error) {
	kv, err := s.ExportKV(from, to, dt)
	if err != nil {
		return nil, err
	}
	spec := s.e.m.SpecFor(dt)
	toks := slices.Clone(s.tokens[from:to])
	info := kvcache.ChunkInfo{
		Key:     matcher.ChunkKeyOf(salt, toks),
		Model:   spec.Fingerprint(),
		SaltID:  salt.ID(),
		Tokens:  toks,
		BasePos: from,
	}
	ch, err := kvcache.ChunkFromKV(kv, 0, info)
	if err != nil {
		return nil, fmt.Errorf("export chunk [%d, %d): %w", from, to, err)
	}
	return ch, nil
}

// BlendOptions describes a prefill on top of injected KV.
type BlendOptions struct {
	// Recompute lists loaded positions whose KV is recomputed in every
	// layer (a kvcache recompute plan's Positions). Ascending, no
	// duplicates, each below Len().
	Recompute []int
	// AllLogits returns the logits after every new token, not only the
	// last.
	AllLogits bool
}

// BlendStats says what a blend computed.
type BlendStats struct {
	Loaded int // positions that came with injected KV
	New    int // new tokens appended
	// RowsPerLayer is the number of loaded positions computed in each
	// layer (CacheBlend's scoring rounds included).
	RowsPerLayer []int
	// Recomputed lists the loaded positions recomputed through the last
	// layer, ascending.
	Recomputed []int
}

// RecomputeFraction is the fraction of loaded positions recomputed
// through the last layer.
func (b BlendStats) RecomputeFraction() float64 {
	if b.Loaded == 0 {
		return 0
	}
	return float64(len(b.Recomputed)) / float64(b.Loaded)
}

// ComputeFraction is the work spent on loaded positions (position ×
// layer) relative to recomputing them all.
func (b BlendStats) ComputeFraction() float64 {
	if b.Loaded == 0 || len(b.RowsPerLayer) == 0 {
		return 0
	}
	sum := 0
	for _, r := range b.RowsPerLayer {
		sum += r
	}
	return float64(sum) / float64(b.Loaded*len(b.RowsPerLayer))
}

// Blend runs a prefill over KV loaded with LoadKV: the loaded positions
// in opts.Recompute are recomputed through every layer, attending over
// the whole cache (where every other loaded position keeps its injected
// K/V), then the new tokens are appended. It returns the logits after the
// last new token (after each with AllLogits).
//
// With every loaded position in Recompute the result is bit-for-bit a
// full prefill of the same tokens: the same kernels run on the same rows,
// each row's sums in the same order (TestBlendFullRecomputeEqualsPrefill).
func (s *State) Blend(newTokens []Token, opts BlendOptions) ([]float32, BlendStats, error) {
	return s.NewBlendScorer().Finish(opts.Recompute, newTokens, opts.AllLogits)
}

// BlendScorer is CacheBlend's selection run inside the prefill, exposed
// as a kvcache.Scorer: kvcache.PlanRecompute calls Score once per check
// layer with the candidates still in the running, and each call carries
// the candidates' recompute forward to that layer and returns how far
// their fresh K/V are from the injected ones there (Σ (K_new − K_cached)²
// + Σ (V_new − V_cached)², LMCache's blender, V included). Finish then
// carries the survivors through the remaining layers, so the scoring work
// is the prefill's own work, as in CacheBlend.
//
// Layers before the first check layer are computed for every candidate;
// at each check layer only the kept candidates' fresh K/V replace the
// injected ones, and only they continue. A BlendScorer belongs to one
// State and one blend; after an error the State's cache is partly
// recomputed and must be reloaded.
type BlendScorer struct {
	s       *State
	loaded  int
	rows    int
	started bool
	next    int // first layer whose QKV has not run
	pending int // layer whose QKV ran but whose K/V are not yet written; -1: none
	st      BlendStats
	devs    []float64
}

var _ kvcache.Scorer = (*BlendScorer)(nil)

// NewBlendScorer starts a blend over the KV loaded in s.
func (s *State) NewBlendScorer() *BlendScorer {
	return &BlendScorer{s: s, loaded: s.n, pending: -1, st: BlendStats{Loaded: s.n, RowsPerLayer: make([]int, s.c.Layers)}}
}

// checkPositions validates ascending unique loaded positions.
func (b *BlendScorer) checkPositions(what string, ps []int) error {
	for i, p := range ps {
		if p < 0 || p >= b.loaded || (i > 0 && p <= ps[i-1]) {
			return fmt.Errorf("blend: %s position %d (index %d) out of order or outside the %d loaded: %w", what, p, i, b.loaded, ErrBadInput)
		}
	}
	return nil
}

// narrow makes the active rows exactly ps, which must be among them (in
// order) once the pass has started, and starts the pass otherwise.
func (b *BlendScorer) narrow(what string, ps []int) error {
	if err := b.checkPositions(what, ps); err != nil {
		return err
	}
	s := b.s
	if !b.started {
		s.grow(max(len(ps), 1))
		for i, p := range ps {
			s.pos[i], s.toks[i], s.want[i] = p, s.tokens[p], false
		}
		if _, err := s.embed(len(ps)); err != nil {
			return fmt.Errorf("blend: %w", err)
		}
		b.rows, b.started = len(ps), true
		return nil
	}
	keep := make([]int, 0, len(ps))
	i := 0
	for _, p := range ps {
		for i < b.rows && s.pos[i] < p {
			i++
		}
		if i == b.rows || s.pos[i] != p {
			return fmt.Errorf("blend: %s position %d was dropped earlier or never computed: %w", what, p, ErrBadInput)
		}
		keep = append(keep, i)
		i++
	}
	b.rows = s.keepRows(keep)
	return nil
}

// advance finishes the pending layer and runs whole layers up to (not
// including) stop.
func (b *BlendScorer) advance(stop int) {
	s := b.s
	if b.pending >= 0 {
		s.layerRest(b.pending, b.rows)
		b.pending = -1
	}
	for ; b.next < stop; b.next++ {
		s.layerQKV(b.next, b.rows)
		b.st.RowsPerLayer[b.next] = b.rows
		s.layerRest(b.next, b.rows)
	}
}

// Score implements kvcache.Scorer. in.Candidates are prompt positions
// among the loaded ones; in.Plan, when given, must hold the loaded
// tokens; in.KV is not read (the State holds the stitched KV).
func (b *BlendScorer) Score(ctx context.Context, in kvcache.ScoreInput) ([]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := b.s
	if in.Layer < b.next || in.Layer >= s.c.Layers {
		return nil, fmt.Errorf("blend score: check layer %d, want %d..%d (ascending): %w", in.Layer, b.next, s.c.Layers-1, ErrBadInput)
	}
	if in.Plan != nil && (len(in.Plan.Prompt) < b.loaded || !slices.Equal(in.Plan.Prompt[:b.loaded], s.tokens[:b.loaded])) {
		return nil, fmt.Errorf("blend score: the plan's prompt is not the loaded tokens: %w", ErrBadInput)
	}
	if err := b.narrow("candidate", in.Candidates); err != nil {
		return nil, err
	}
	b.advance(in.Layer)
	s.layerQKV(in.Layer, b.rows)
	b.st.RowsPerLayer[in.Layer] = b.rows
	b.pending, b.next = in.Layer, in.Layer+1
	b.devs = b.devs[:0]
	for i := range b.rows {
		b.devs = append(b.devs, s.deviation(in.Layer, i))
	}
	return slices.Clone(b.devs), nil
}

// Finish recomputes positions (the plan's; after scoring, a subset of the
// last candidates) through the remaining layers, then appends newTokens
// and returns the logits after the last (after each with allLogits).
func (b *BlendScorer) Finish(positions []int, newTokens []Token, allLogits bool) ([]float32, BlendStats, error) {
	s := b.s
	if len(newTokens) == 0 {
		return nil, b.st, fmt.Errorf("blend: no new tokens: %w", ErrBadInput)
	}
	if b.loaded+len(newTokens) > s.c.SeqLen {
		return nil, b.st, fmt.Errorf("blend %d new tokens after %d loaded: seq_len is %d: %w", len(newTokens), b.loaded, s.c.SeqLen, ErrContextFull)
	}
	if s.n != b.loaded {
		return nil, b.st, fmt.Errorf("blend: the cache changed from %d to %d positions since the blend began: %w", b.loaded, s.n, ErrBadInput)
	}
	if err := b.narrow("recompute", positions); err != nil {
		return nil, b.st, err
	}
	b.advance(s.c.Layers)
	b.st.Recomputed = slices.Clone(positions)
	if b.st.Recomputed == nil {
		b.st.Recomputed = []int{}
	}
	logits, err := s.appendTokens(newTokens, allLogits)
	if err != nil {
		return nil, b.st, fmt.Errorf("blend: %w", err)
	}
	b.st.New = len(newTokens)
	return logits, b.st, nil
}

// deviation is Σ (K_new − K_cached)² + Σ (V_new − V_cached)² of row i at
// layer l, before the row's fresh K/V overwrite the cache.
func (s *State) deviation(l, i int) float64 {
	kd := s.c.KVDim()
	p := s.pos[i]
	kn, vn := s.kb[i*kd:(i+1)*kd], s.vb[i*kd:(i+1)*kd]
	kc, vc := s.k[l][p*kd:(p+1)*kd], s.v[l][p*kd:(p+1)*kd]
	var d float64
	for j := range kn {
		a := float64(kn[j] - kc[j])
		b := float64(vn[j] - vc[j])
		d += a*a + b*b
	}
	return d
}
