package engine

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// storyTokens returns a greedy story of n tokens after BOS, BOS included.
func storyTokens(t testing.TB, e *Engine, n int) []Token {
	t.Helper()
	s := e.NewState()
	logits, err := s.Forward([]Token{TokenBOS})
	if err != nil {
		t.Fatal(err)
	}
	gen, err := s.Greedy(logits, n)
	if err != nil {
		t.Fatal(err)
	}
	return append([]Token{TokenBOS}, gen...)
}

// prefillAll runs an ordinary prefill and returns the state and the logits
// after each of the last newN tokens.
func prefillAll(t testing.TB, e *Engine, toks []Token, newN int) (*State, []float32) {
	t.Helper()
	s := e.NewState()
	if _, err := s.Forward(toks[:len(toks)-newN]); err != nil {
		t.Fatal(err)
	}
	logits, err := s.ForwardAll(toks[len(toks)-newN:])
	if err != nil {
		t.Fatal(err)
	}
	return s, slices.Clone(logits)
}

// noisyKV exports s's first n positions as f32 KV with Gaussian noise of
// scale sigma added at the listed layers (every layer when layers is nil).
func noisyKV(t testing.TB, s *State, n int, sigma float64, layers []int, positions []int) *kvcache.KV {
	t.Helper()
	kv, err := s.ExportKV(0, n, kvcache.F32)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	kd := s.c.KVDim()
	for l := range s.c.Layers {
		if layers != nil && !slices.Contains(layers, l) {
			continue
		}
		for _, half := range []bool{false, true} {
			buf := make([]float32, n*kd)
			src := kv.K(l)
			if half {
				src = kv.V(l)
			}
			if err := kvcache.DecodeFloat32(buf, kvcache.F32, src, 1); err != nil {
				t.Fatal(err)
			}
			for _, p := range positions {
				for j := range kd {
					buf[p*kd+j] += float32(r.NormFloat64() * sigma)
				}
			}
			if err := kvcache.EncodeFloat32(src, kvcache.F32, buf, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	return kv
}

func allPositions(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	return p
}

func equalCaches(t *testing.T, a, b *State) {
	t.Helper()
	if a.Len() != b.Len() {
		t.Fatalf("cache lengths %d and %d", a.Len(), b.Len())
	}
	for l := range a.c.Layers {
		ka, va := a.Layer(l)
		kb, vb := b.Layer(l)
		if !slices.Equal(ka, kb) || !slices.Equal(va, vb) {
			t.Fatalf("layer %d KV differs", l)
		}
	}
	if !slices.Equal(a.Tokens(), b.Tokens()) {
		t.Fatal("tokens differ")
	}
}

// onePlan is a stitch plan over n loaded positions: optionally a prefix
// segment [0, prefix), then one non-prefix segment to n.
func onePlan(toks []Token, n, prefix int) *kvcache.Plan {
	p := &kvcache.Plan{Prompt: toks, Keys: []matcher.ChunkKey{{1}, {2}}}
	if prefix > 0 {
		p.Segments = append(p.Segments, kvcache.Segment{Source: 0, SrcStart: 0, SrcEnd: prefix, Dst: 0, Prefix: true})
	}
	p.Segments = append(p.Segments, kvcache.Segment{Source: 1, SrcStart: 0, SrcEnd: n - prefix, Dst: prefix})
	return p
}

// TestBlendFullRecomputeEqualsPrefill: recomputing every loaded position
// over arbitrary injected KV is a full prefill, bit for bit (tolerance 0),
// whether straight or through CacheBlend's scoring rounds.
func TestBlendFullRecomputeEqualsPrefill(t *testing.T) {
	e, _ := openStories(t)
	toks := storyTokens(t, e, 120)
	const newN = 9
	loaded := len(toks) - newN
	ref, want := prefillAll(t, e, toks, newN)
	allPos := allPositions(loaded)
	for _, tc := range []struct {
		name   string
		layers []int // scoring rounds before Finish
	}{
		{"recompute all", nil},
		{"scored at layer 1", []int{1}},
		{"scored at layers 0, 2, 4", []int{0, 2, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.NewState()
			// garbage KV: every layer far from the truth
			if err := s.LoadKV(noisyKV(t, ref, loaded, 3, nil, allPos), toks[:loaded]); err != nil {
				t.Fatal(err)
			}
			sc := s.NewBlendScorer()
			for _, l := range tc.layers {
				d, err := sc.Score(t.Context(), kvcache.ScoreInput{Layer: l, Candidates: allPos, Plan: onePlan(toks, loaded, 0)})
				if err != nil || len(d) != loaded {
					t.Fatalf("score layer %d: %d scores, %v", l, len(d), err)
				}
			}
			got, st, err := sc.Finish(allPos, toks[loaded:], true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatal("logits differ from the full prefill")
			}
			equalCaches(t, s, ref)
			if st.RecomputeFraction() != 1 || st.ComputeFraction() != 1 || st.New != newN {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	// and through kvcache's planner: policy full, and ratio 100%
	for _, pol := range []string{"full", "ratio:100%"} {
		s := e.NewState()
		if err := s.LoadKV(noisyKV(t, ref, loaded, 3, nil, allPos), toks[:loaded]); err != nil {
			t.Fatal(err)
		}
		p, err := kvcache.ParsePolicy(pol)
		if err != nil {
			t.Fatal(err)
		}
		sc := s.NewBlendScorer()
		rc, err := kvcache.PlanRecompute(t.Context(), p, onePlan(toks, loaded, 0), kvcache.RecomputeOptions{Scorer: sc, CheckLayers: []int{1}})
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := sc.Finish(rc.Positions, toks[loaded:], true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: logits differ from the full prefill", pol)
		}
	}
}

// TestBlendExactPrefixNoRecompute: reusing the exact KV of a prefix with no
// recompute is a full prefill too.
func TestBlendExactPrefixNoRecompute(t *testing.T) {
	e, _ := openStories(t)
	toks := storyTokens(t, e, 80)
	const newN = 5
	loaded := len(toks) - newN
	ref, want := prefillAll(t, e, toks, newN)
	s := e.NewState()
	if err := s.LoadKV(noisyKV(t, ref, loaded, 0, nil, nil), toks[:loaded]); err != nil {
		t.Fatal(err)
	}
	got, st, err := s.Blend(toks[loaded:], BlendOptions{AllLogits: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("logits differ from the full prefill")
	}
	equalCaches(t, s, ref)
	if st.ComputeFraction() != 0 || len(st.Recomputed) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestBlendScorerSelectsDeviatingPositions: through kvcache's ratio
// planner, the positions whose injected KV is wrong from layer 1 on are
// exactly the ones CacheBlend keeps (every other candidate deviates by
// zero there, since layer 0 is recomputed exactly), with one check layer
// and with gradual filtering over two.
func TestBlendScorerSelectsDeviatingPositions(t *testing.T) {
	e, _ := openStories(t)
	toks := storyTokens(t, e, 100)
	const newN = 4
	loaded := len(toks) - newN
	ref, want := prefillAll(t, e, toks, newN)
	bad := []int{7, 19, 20, 33, 50, 61, 62, 90}
	ratio := (float64(len(bad)) - 0.5) / float64(loaded) // ceil(ratio × reused) = len(bad)
	pol := kvcache.Policy{Kind: kvcache.PolicyRatio, Ratio: ratio}
	for _, tc := range []struct {
		name   string
		layers []int
		rows   []int
	}{
		{"check layer 1", []int{1}, []int{loaded - 1, loaded - 1, len(bad), len(bad), len(bad)}},
		{"gradual 1, 2", []int{1, 2}, []int{loaded - 1, loaded - 1, 2 * len(bad), len(bad), len(bad)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.NewState()
			if err := s.LoadKV(noisyKV(t, ref, loaded, 1, []int{1, 2, 3, 4}, bad), toks[:loaded]); err != nil {
				t.Fatal(err)
			}
			sc := s.NewBlendScorer()
			plan := onePlan(toks, loaded, 1) // BOS is an exact prefix
			rc, err := kvcache.PlanRecompute(t.Context(), pol, plan, kvcache.RecomputeOptions{Scorer: sc, CheckLayers: tc.layers, Widen: 2})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(rc.Positions, bad) {
				t.Fatalf("selected %v, want %v", rc.Positions, bad)
			}
			got, st, err := sc.Finish(rc.Positions, toks[loaded:], true)
			if err != nil {
				t.Fatal(err)
			}
			// the noisy positions were recomputed at layers 1..4 and the
			// others were exact: this is the full prefill again
			if !slices.Equal(got, want) {
				t.Fatal("logits differ from the full prefill")
			}
			if !slices.Equal(st.RowsPerLayer, tc.rows) || !slices.Equal(st.Recomputed, bad) {
				t.Fatalf("rows per layer %v (want %v), recomputed %v", st.RowsPerLayer, tc.rows, st.Recomputed)
			}
		})
	}
}

func TestBlendErrors(t *testing.T) {
	e, _ := openStories(t)
	toks := storyTokens(t, e, 20)
	ref, _ := prefillAll(t, e, toks, 1)
	kv := noisyKV(t, ref, 10, 0, nil, nil)
	s := e.NewState()
	if err := s.LoadKV(kv, toks[:9]); err == nil {
		t.Fatal("token count mismatch accepted")
	}
	if err := s.LoadKV(kv, toks[:10]); err != nil {
		t.Fatal(err)
	}
	for _, rec := range [][]int{{3, 3}, {10}, {-1}, {4, 2}} {
		if _, _, err := s.Blend([]Token{5}, BlendOptions{Recompute: rec}); !errors.Is(err, ErrBadInput) {
			t.Errorf("recompute %v: %v", rec, err)
		}
	}
	if _, _, err := s.Blend(nil, BlendOptions{}); !errors.Is(err, ErrBadInput) {
		t.Error("no new tokens accepted")
	}
	sc := s.NewBlendScorer()
	if _, err := sc.Score(t.Context(), kvcache.ScoreInput{Layer: 2, Candidates: []int{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	for _, in := range []kvcache.ScoreInput{
		{Layer: 1, Candidates: []int{1, 2}},                              // layers go forward
		{Layer: 5, Candidates: []int{1, 2}},                              // past the last layer
		{Layer: 3, Candidates: []int{1, 4}},                              // 4 was never a candidate
		{Layer: 3, Candidates: []int{1}, Plan: onePlan(toks[2:], 10, 0)}, // other tokens
	} {
		if _, err := sc.Score(t.Context(), in); !errors.Is(err, ErrBadInput) {
			t.Errorf("score %+v: %v", in, err)
		}
	}
	if _, _, err := sc.Finish([]int{2, 3, 7}, []Token{5}, false); !errors.Is(err, ErrBadInput) {
		t.Errorf("finish with a position that was dropped: %v", err)
	}
}

func TestExportChunk(t *testing.T) {
	e, _ := openStories(t)
	toks := storyTokens(t, e, 30)
	s, _ := prefillAll(t, e, toks, 1)
	for _, dt := range []kvcache.DType{kvcache.F32, kvcache.F16, kvcache.BF16, kvcache.FP8E4M3} {
		spec := e.Model().SpecFor(dt)
		salt, err := spec.Salt("tenant-a")
		if err != nil {
			t.Fatal(err)
		}
		ch, err := s.ExportChunk(5, 25, dt, salt)
		if err != nil {
			t.Fatal(err)
		}
		if ch.BasePos != 5 || !slices.Equal(ch.Tokens, toks[5:25]) || ch.Key != matcher.ChunkKeyOf(salt, toks[5:25]) || ch.Model != spec.Fingerprint() || ch.SaltID != salt.ID() {
			t.Fatalf("%s: chunk info %+v", dt, ch.ChunkInfo)
		}
		cg, err := kvcache.NewCacheGen(2)
		if err != nil {
			t.Fatal(err)
		}
		codecs, err := kvcache.NewCodecs(kvcache.FP8{}, cg)
		if err != nil {
			t.Fatal(err)
		}
		for _, codec := range []kvcache.Codec{kvcache.Raw{}, kvcache.FP8{}, cg} {
			blob, err := kvcache.AppendBlob(nil, ch, codec)
			if err != nil {
				t.Fatal(err)
			}
			back, err := kvcache.DecodeChunk(blob, kvcache.DecodeOptions{Model: &spec, Salt: &salt, Codecs: codecs})
			if err != nil {
				t.Fatalf("%s %s: %v", dt, codec.Name(), err)
			}
			if !slices.Equal(back.Tokens, ch.Tokens) || back.BasePos != 5 {
				t.Fatalf("%s %s: decoded info %+v", dt, codec.Name(), back.ChunkInfo)
			}
			if codec.ID() == kvcache.CodecRaw {
				for l := range ch.Layers {
					if !slices.Equal(back.Layers[l], ch.Layers[l]) {
						t.Fatalf("%s raw: layer %d differs", dt, l)
					}
				}
			}
		}
	}
	// f32 chunk bytes are the cache's values
	salt, err := e.Model().Spec.Salt("")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.ExportChunk(0, 30, kvcache.F32, salt)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := s.Layer(3)
	got := make([]float32, 30*32)
	if err := kvcache.DecodeFloat32(got, kvcache.F32, ch.Layers[3][:30*32*4], 1); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, k[:30*32]) {
		t.Fatal("exported keys differ from the cache")
	}
}
