package kvcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/kvloom/kvloom/matcher"
)

// synth is a synthetic model whose "true" KV is known: token t's raw key
// and value at layer l are fixed random vectors, and its cached key at
// position p is the raw key rotated at p. A chunk computed at base position
// b therefore holds rotate(raw, b+i), and the correctly stitched prompt KV
// at position q holds rotate(raw, q).
type synth struct {
	spec ModelSpec
	rot  *Rotator
	raw  map[[2]int][]float32 // (layer, token)→ [K | V] floats of one row each
}

func newSynth(t testing.TB, spec ModelSpec) *synth {
	t.Helper()
	rot, err := NewRotator(&spec)
	if err != nil {
		t.Fatal(err)
	}
	return &synth{spec: spec, rot: rot, raw: map[[2]int][]float32{}}
}

func (s *synth) rawRow(l int, tok matcher.Token) []float32 {
	k := [2]int{l, int(tok)}
	if r, ok := s.raw[k]; ok {
		return r
	}
	n := s.spec.KVHeads * s.spec.HeadDim
	r := rand.New(rand.NewPCG(uint64(l), uint64(tok)))
	row := make([]float32, 2*n)
	for i := range row {
		row[i] = float32(r.NormFloat64())
	}
	s.raw[k] = row
	return row
}

// kvAt returns the KV of tokens placed at positions pos, pos+1, … in the
// spec's dtype.
func (s *synth) kvAt(t testing.TB, toks []matcher.Token, pos int) *KV {
	t.Helper()
	kv, err := NewKV(s.spec.Shape(), len(toks))
	if err != nil {
		t.Fatal(err)
	}
	n := s.spec.KVHeads * s.spec.HeadDim
	f32 := s.spec
	f32.DType = F32
	frot, _ := NewRotator(&f32)
	rb := kv.Shape().RowBytes()
	buf := make([]byte, 4*n)
	for l := range s.spec.Layers {
		for i, tok := range toks {
			row := s.rawRow(l, tok)
			_ = EncodeFloat32(buf, F32, row[:n], 1)
			_ = frot.Rotate(buf, F32, pos+i, 1)
			k := make([]float32, n)
			_ = DecodeFloat32(k, F32, buf, 1)
			_ = EncodeFloat32(kv.K(l)[i*rb:(i+1)*rb], s.spec.DType, k, 1)
			_ = EncodeFloat32(kv.V(l)[i*rb:(i+1)*rb], s.spec.DType, row[n:], 1)
		}
	}
	return kv
}

func (s *synth) chunk(t testing.TB, toks []matcher.Token, basePos int) *Chunk {
	t.Helper()
	c, err := ChunkFromKV(s.kvAt(t, toks, basePos), 0, ChunkInfo{Key: matcher.ChunkKeyOf(matcher.Salt{}, toks), Model: s.spec.Fingerprint(), Tokens: toks, BasePos: basePos})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func seqTokens(from, n int) []matcher.Token {
	out := make([]matcher.Token, n)
	for i := range out {
		out[i] = matcher.Token(from + i)
	}
	return out
}

// maxRelDiff compares two KV buffers of dtype dt head by head, relative to
// each head's norm, over the token positions in covered.
func maxRelDiff(t *testing.T, got, want *KV, covered func(int) bool) float64 {
	t.Helper()
	sh := got.Shape()
	rb := sh.RowBytes()
	n := sh.KVHeads * sh.HeadDim
	a := make([]float32, n)
	b := make([]float32, n)
	worst := 0.0
	for l := range sh.Layers {
		for _, v := range []bool{false, true} {
			for tok := range got.Tokens() {
				if !covered(tok) {
					continue
				}
				_ = DecodeFloat32(a, sh.DType, got.Rows(l, v, tok)[:rb], 1)
				_ = DecodeFloat32(b, sh.DType, want.Rows(l, v, tok)[:rb], 1)
				for h := 0; h < n; h += sh.HeadDim {
					var norm, diff float64
					for i := h; i < h+sh.HeadDim; i++ {
						norm += float64(b[i]) * float64(b[i])
						diff = max(diff, math.Abs(float64(a[i]-b[i])))
					}
					worst = max(worst, diff/math.Sqrt(norm))
				}
			}
		}
	}
	return worst
}

// A prompt: [system 0..23 as a prefix][filler][doc A][filler][doc B]; doc A
// was computed at base 500 and doc B at base 0 in other prompts.
func stitchScenario(t *testing.T, s *synth) (*Plan, []ChunkReader, *KV) {
	t.Helper()
	sys := seqTokens(1000, 24)
	docA := seqTokens(2000, 19)
	docB := seqTokens(3000, 30)
	var prompt []matcher.Token
	prompt = append(prompt, sys...)
	prompt = append(prompt, 7, 7, 7)
	aAt := len(prompt)
	prompt = append(prompt, docA...)
	prompt = append(prompt, 8)
	bAt := len(prompt)
	prompt = append(prompt, docB...)
	prompt = append(prompt, 9, 9)
	cs := s.chunk(t, sys, 0)
	ca := s.chunk(t, append(seqTokens(1, 3), docA...), 497) // doc A sits at offset 3 of its chunk, base 497 → A at 500
	cb := s.chunk(t, docB, 0)
	plan := &Plan{
		Prompt: prompt,
		Keys:   []matcher.ChunkKey{cs.Key, ca.Key, cb.Key},
		Segments: []Segment{
			{Source: 0, SrcStart: 0, SrcEnd: 24, Dst: 0, Prefix: true},
			{Source: 1, SrcStart: 3, SrcEnd: 3 + 19, Dst: aAt},
			{Source: 2, SrcStart: 5, SrcEnd: 30, Dst: bAt + 5}, // a sub-range of doc B
		},
	}
	return plan, []ChunkReader{cs, ca, cb}, s.kvAt(t, prompt, 0)
}

func TestStitchReRotatesAndCopies(t *testing.T) {
	for _, dt := range []DType{F32, BF16, F16} {
		for _, style := range []RotationStyle{RotateHalf, RotateInterleaved} {
			t.Run(fmt.Sprintf("%v/%v", dt, style), func(t *testing.T) {
				spec := tinySpec(dt)
				spec.RoPE.Style = style
				spec.RoPE.Scaling = RoPEScaling{Type: ScalingLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 64}
				s := newSynth(t, spec)
				plan, srcs, want := stitchScenario(t, s)
				st, err := NewStitcher(&spec)
				if err != nil {
					t.Fatal(err)
				}
				dst, _ := NewKV(spec.Shape(), len(plan.Prompt)+4)
				var layersSeen []int
				stats, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: srcs, Target: dst, OnLayer: func(_ context.Context, l int) error {
					layersSeen = append(layersSeen, l)
					// Layer l is complete; layer l+1 is untouched.
					if l+1 < spec.Layers && !allZero(dst.Layer(l+1)) {
						t.Errorf("layer %d already written when layer %d was handed over", l+1, l)
					}
					if allZero(dst.K(l)[:dst.Shape().RowBytes()]) {
						t.Errorf("layer %d handed over before it was written", l)
					}
					return nil
				}})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(layersSeen, []int{0, 1, 2}) {
					t.Fatalf("OnLayer saw %v", layersSeen)
				}
				if stats.Tokens != plan.Reused() || stats.RotatedTokens != 19+25 || stats.Segments != 3 || stats.Layers != 3 {
					t.Fatalf("stats %+v", stats)
				}
				covered := func(p int) bool {
					for _, sg := range plan.Segments {
						if p >= sg.Dst && p < sg.Dst+sg.Len() {
							return true
						}
					}
					return false
				}
				tol := map[DType]float64{F32: 1e-5, BF16: 1.2e-2, F16: 2e-3}[dt]
				trimmed := sliceKV(t, dst, len(plan.Prompt))
				if d := maxRelDiff(t, trimmed, want, covered); d > tol {
					t.Fatalf("stitched KV differs from the prompt's true KV by %g (tolerance %g)", d, tol)
				}
				// Uncovered positions stay zero.
				rb := spec.Shape().RowBytes()
				if !allZero(dst.K(1)[24*rb : 27*rb]) {
					t.Fatal("an uncovered position was written")
				}
				// Negative control: a chunk whose base position is misreported
				// is not re-rotated, and the comparison catches it.
				liar := *srcs[1].(*Chunk)
				liar.BasePos = plan.Segments[1].Dst - plan.Segments[1].SrcStart
				bad, _ := NewKV(spec.Shape(), len(plan.Prompt))
				if _, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: []ChunkReader{srcs[0], &liar, srcs[2]}, Target: bad}); err != nil {
					t.Fatal(err)
				}
				if d := maxRelDiff(t, bad, want, covered); d < 10*tol {
					t.Fatalf("un-rotated chunk differs by only %g: the comparison is blind", d)
				}
			})
		}
	}
}

// sliceKV returns the first n tokens of kv as a new contiguous KV.
func sliceKV(t *testing.T, kv *KV, n int) *KV {
	t.Helper()
	out, _ := NewKV(kv.Shape(), n)
	rb := kv.Shape().RowBytes()
	for l := range kv.Shape().Layers {
		copy(out.K(l), kv.K(l)[:n*rb])
		copy(out.V(l), kv.V(l)[:n*rb])
	}
	return out
}

func TestStitchPagedEqualsContiguous(t *testing.T) {
	spec := tinySpec(BF16)
	s := newSynth(t, spec)
	plan, srcs, _ := stitchScenario(t, s)
	st, _ := NewStitcher(&spec)
	n := len(plan.Prompt)
	cont, _ := NewKV(spec.Shape(), n)
	if _, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: srcs, Target: cont}); err != nil {
		t.Fatal(err)
	}
	for _, bs := range []int{1, 4, 16, 64} {
		blocks := (n + bs - 1) / bs
		table := make([]int32, blocks)
		perm := rand.New(rand.NewPCG(uint64(bs), 1)).Perm(blocks + 2) // scattered over a larger pool
		for i := range table {
			table[i] = int32(perm[i])
		}
		paged, err := NewPaged(spec.Shape(), n, PagedOptions{BlockSize: bs, Table: table, NumBlocks: blocks + 2})
		if err != nil {
			t.Fatalf("block size %d: %v", bs, err)
		}
		if _, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: srcs, Target: paged}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(paged.Contiguous().Bytes(), cont.Bytes()) {
			t.Fatalf("block size %d: paged stitch differs from contiguous", bs)
		}
	}
}

func TestStitchFromBlobsAndConversions(t *testing.T) {
	spec := tinySpec(F32)
	s := newSynth(t, spec)
	plan, srcs, want := stitchScenario(t, s)
	// Sources as stream readers over real blobs.
	var readers []ChunkReader
	for _, src := range srcs {
		blob, err := AppendBlob(nil, src.(*Chunk), nil)
		if err != nil {
			t.Fatal(err)
		}
		sr, err := NewStreamReader(bytes.NewReader(blob), DecodeOptions{Model: &spec})
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, sr)
	}
	st, _ := NewStitcher(&spec)
	// f32 chunks into a bf16 target and an fp8 one: converted on the way.
	for _, dt := range []DType{BF16, FP8E4M3} {
		sh := spec.Shape()
		sh.DType = dt
		dst, _ := NewKV(sh, len(plan.Prompt))
		for l := range sh.Layers {
			dst.SetScales(l, Scales{K: 1.0 / 64, V: 1.0 / 64})
		}
		if _, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: readers, Target: dst}); err != nil {
			t.Fatal(err)
		}
		wantConv, _ := NewKV(sh, len(plan.Prompt))
		f := make([]float32, len(want.Bytes())/4)
		_ = DecodeFloat32(f, F32, want.Bytes(), 1)
		_ = EncodeFloat32(wantConv.Bytes(), dt, f, 1.0/64)
		covered := func(p int) bool { return p < 24 || (p >= 27 && p < 46) || (p >= 52 && p < 77) }
		var worst float64
		sc := dst.Scale(0, false)
		a := make([]float32, sh.KVHeads*sh.HeadDim)
		b := make([]float32, len(a))
		for l := range sh.Layers {
			for tok := range len(plan.Prompt) {
				if !covered(tok) {
					continue
				}
				_ = DecodeFloat32(a, dt, dst.Row(l, false, tok), sc)
				_ = DecodeFloat32(b, dt, wantConv.Row(l, false, tok), sc)
				for i := range a {
					worst = max(worst, math.Abs(float64(a[i]-b[i])))
				}
			}
		}
		if lim := map[DType]float64{BF16: 0.05, FP8E4M3: 0.6}[dt]; worst > lim {
			t.Fatalf("%v target: max abs diff %g > %g", dt, worst, lim)
		}
	}
}

func TestStitchRejectsWrongKV(t *testing.T) {
	spec := tinySpec(F32)
	s := newSynth(t, spec)
	plan, srcs, _ := stitchScenario(t, s)
	st, _ := NewStitcher(&spec)
	dst, _ := NewKV(spec.Shape(), len(plan.Prompt))
	other := spec
	other.WeightsID = "other"
	foreign := newSynth(t, other).chunk(t, seqTokens(1000, 24), 0)
	tests := []struct {
		name   string
		mutate func(p *Plan, srcs []ChunkReader) []ChunkReader
		want   error
	}{
		{"tokens differ", func(p *Plan, srcs []ChunkReader) []ChunkReader {
			p.Prompt = slices.Clone(p.Prompt)
			p.Prompt[30]++
			return srcs
		}, ErrPlan},
		{"other model", func(p *Plan, srcs []ChunkReader) []ChunkReader {
			return []ChunkReader{foreign, srcs[1], srcs[2]}
		}, ErrModelMismatch},
		{"key swapped", func(p *Plan, srcs []ChunkReader) []ChunkReader { return []ChunkReader{srcs[0], srcs[2], srcs[1]} }, ErrPlan},
		{"too few sources", func(p *Plan, srcs []ChunkReader) []ChunkReader { return srcs[:2] }, ErrPlan},
		{"overlap", func(p *Plan, srcs []ChunkReader) []ChunkReader {
			p.Segments = slices.Clone(p.Segments)
			p.Segments[1].Dst = 20
			return srcs
		}, ErrPlan},
		{"past the chunk", func(p *Plan, srcs []ChunkReader) []ChunkReader {
			p.Segments = slices.Clone(p.Segments)
			p.Segments[2].SrcEnd = 31
			return srcs
		}, ErrPlan},
		{"past the prompt", func(p *Plan, srcs []ChunkReader) []ChunkReader {
			p.Segments = slices.Clone(p.Segments)
			p.Segments[2].Dst = 60
			return srcs
		}, ErrPlan},
		{"bad source index", func(p *Plan, srcs []ChunkReader) []ChunkReader {
			p.Segments = slices.Clone(p.Segments)
			p.Segments[0].Source = 3
			return srcs
		}, ErrPlan},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := *plan
			sources := tc.mutate(&p, slices.Clone(srcs))
			clear(dst.Bytes())
			_, err := st.Stitch(t.Context(), StitchRequest{Plan: &p, Sources: sources, Target: dst})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !allZero(dst.Bytes()) {
				t.Fatal("a rejected plan wrote KV")
			}
		})
	}
	stop := errors.New("dma failed")
	calls := 0
	_, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: srcs, Target: dst, OnLayer: func(context.Context, int) error { calls++; return stop }})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("OnLayer error: %v after %d calls", err, calls)
	}
	small, _ := NewKV(spec.Shape(), 10)
	if _, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: srcs, Target: small}); !errors.Is(err, ErrShape) {
		t.Fatalf("small target: %v", err)
	}
}

func TestPlanFromMatches(t *testing.T) {
	spec := tinySpec(F32)
	salt, _ := spec.Salt("t")
	prompt := seqTokens(100, 80)
	const bs = 16
	keys, err := matcher.PrefixKeys(salt, prompt[:32], bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	doc := matcher.ChunkKey{9}
	cover := []matcher.Match{
		{ReqOff: 0, Len: 32, Chunk: keys[1], Prefix: true},
		{ReqOff: 40, Len: 20, Chunk: doc, ChunkOff: 5},
		{ReqOff: 64, Len: 8, Chunk: doc, ChunkOff: 0},
	}
	p, err := PlanFromMatches(prompt, cover, PlanOptions{Salt: salt, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []matcher.ChunkKey{keys[0], keys[1], doc}
	wantSegs := []Segment{
		{Source: 0, SrcStart: 0, SrcEnd: 16, Dst: 0, Prefix: true},
		{Source: 1, SrcStart: 0, SrcEnd: 16, Dst: 16, Prefix: true},
		{Source: 2, SrcStart: 5, SrcEnd: 25, Dst: 40},
		{Source: 2, SrcStart: 0, SrcEnd: 8, Dst: 64},
	}
	if !slices.Equal(p.Keys, wantKeys) || !slices.Equal(p.Segments, wantSegs) || p.Reused() != 60 {
		t.Fatalf("plan = %+v", p)
	}
	// A prefix match whose key is not the prompt's under this salt is refused.
	other, _ := spec.Salt("u")
	if _, err := PlanFromMatches(prompt, cover, PlanOptions{Salt: other, BlockSize: bs}); !errors.Is(err, ErrPlan) {
		t.Fatalf("wrong salt: %v", err)
	}
	if _, err := PlanFromMatches(prompt[:50], cover, PlanOptions{Salt: salt, BlockSize: bs}); !errors.Is(err, ErrPlan) {
		t.Fatalf("match past the prompt: %v", err)
	}
	overlapping := append(slices.Clone(cover), matcher.Match{ReqOff: 50, Len: 5, Chunk: doc})
	if _, err := PlanFromMatches(prompt, overlapping, PlanOptions{Salt: salt, BlockSize: bs}); !errors.Is(err, ErrPlan) {
		t.Fatalf("overlapping matches: %v", err)
	}
}

// Stitching real stories260K KV: the prompt's tokens 1..4 computed at
// positions 1..4, moved to positions 0..3 and to 10..13, give layer 0 keys
// equal to the raw keys (from the weights) rotated at the new positions.
func TestStitchStories260K(t *testing.T) {
	ref := loadStoriesReference(t)
	spec, _ := Preset("stories260K")
	raw0 := rawLayer0Keys(t, ref.PromptTokens)
	kv, _ := NewKV(spec.Shape(), len(ref.PromptTokens))
	for l := range spec.Layers {
		for p := range ref.PromptTokens {
			k := make([]float32, 32)
			v := make([]float32, 32)
			for i := range k {
				k[i] = float32(ref.KeyCache[l][p][i])
				v[i] = float32(ref.ValueCache[l][p][i])
			}
			_ = EncodeFloat32(kv.Row(l, false, p), F32, k, 1)
			_ = EncodeFloat32(kv.Row(l, true, p), F32, v, 1)
		}
	}
	toks := make([]matcher.Token, 4)
	for i := range toks {
		toks[i] = matcher.Token(ref.PromptTokens[1+i])
	}
	c, err := ChunkFromKV(kv, 1, ChunkInfo{Key: matcher.ChunkKey{1}, Model: spec.Fingerprint(), Tokens: toks, BasePos: 1})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := NewStitcher(&spec)
	rot, _ := NewRotator(&spec)
	for _, at := range []int{0, 10, 300} {
		prompt := make([]matcher.Token, at+4)
		copy(prompt[at:], toks)
		plan := &Plan{Prompt: prompt, Keys: []matcher.ChunkKey{c.Key}, Segments: []Segment{{Source: 0, SrcStart: 0, SrcEnd: 4, Dst: at}}}
		dst, _ := NewKV(spec.Shape(), len(prompt))
		if _, err := st.Stitch(t.Context(), StitchRequest{Plan: plan, Sources: []ChunkReader{c}, Target: dst}); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			want := make([]float32, 32)
			for j := range want {
				want[j] = float32(raw0[1+i][j])
			}
			buf := make([]byte, 128)
			_ = EncodeFloat32(buf, F32, want, 1)
			_ = rot.Rotate(buf, F32, at+i, 1)
			_ = DecodeFloat32(want, F32, buf, 1)
			got := make([]float32, 32)
			_ = DecodeFloat32(got, F32, dst.Row(0, false, at+i), 1)
			for j := range got {
				if math.Abs(float64(got[j]-want[j])) > 1e-5*max(1, math.Abs(float64(want[j]))) {
					t.Fatalf("at %d token %d elem %d: %g, want %g", at, i, j, got[j], want[j])
				}
			}
			// Values are copied untouched.
			for l := range spec.Layers {
				if !bytes.Equal(dst.Row(l, true, at+i), kv.Row(l, true, 1+i)) {
					t.Fatalf("layer %d value of token %d changed", l, i)
				}
			}
		}
	}
}

func TestPlanSubset(t *testing.T) {
	spec := tinySpec(F32)
	s := newSynth(t, spec)
	plan, srcs, want := stitchScenario(t, s)
	// Chunk A (source 1) missed its deadline.
	sub := plan.Subset(func(i int) bool { return i != 1 })
	if len(sub.Keys) != 2 || len(sub.Segments) != 2 || sub.Keys[1] != plan.Keys[2] || sub.Segments[1].Source != 1 || sub.Reused() != plan.Reused()-19 {
		t.Fatalf("subset %+v", sub)
	}
	st, _ := NewStitcher(&spec)
	dst, _ := NewKV(spec.Shape(), len(plan.Prompt))
	if _, err := st.Stitch(t.Context(), StitchRequest{Plan: sub, Sources: []ChunkReader{srcs[0], srcs[2]}, Target: dst}); err != nil {
		t.Fatal(err)
	}
	covered := func(p int) bool { return p < 24 || (p >= 52 && p < 77) }
	if d := maxRelDiff(t, dst, want, covered); d > 1e-5 {
		t.Fatalf("subset stitch differs by %g", d)
	}
	if !allZero(dst.K(0)[27*spec.Shape().RowBytes() : 46*spec.Shape().RowBytes()]) {
		t.Fatal("the dropped chunk's positions were written")
	}
}
