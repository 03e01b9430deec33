package kvcache

import (
	"context"
	"fmt"
	"slices"

	"github.com/kvloom/kvloom/matcher"
)

// Segment places tokens [SrcStart, SrcEnd) of plan source Source at prompt
// positions [Dst, Dst+SrcEnd-SrcStart).
type Segment struct {
	Source   int // index into Plan.Keys and the sources given to Stitch
	SrcStart int
	SrcEnd   int
	Dst      int
	// Prefix marks KV computed with exactly the prompt's preceding tokens
	// (a prefix block): it needs no recompute.
	Prefix bool
}

// Len is the number of tokens the segment places.
func (s Segment) Len() int { return s.SrcEnd - s.SrcStart }

// MaxSegments bounds a plan; a 1M-token prompt in 16-token blocks stays
// inside it.
const MaxSegments = 1 << 16

// Plan says where reused KV goes in a prompt.
type Plan struct {
	// Prompt is the request's tokens; target position i holds token
	// Prompt[i]. The stitcher checks every segment's source tokens against
	// it: KV is never placed under tokens it was not computed for.
	Prompt []matcher.Token
	// Keys are the source chunks' keys; Segment.Source indexes them.
	Keys []matcher.ChunkKey
	// Segments are sorted by Dst and do not overlap.
	Segments []Segment
}

// PlanOptions say how prefix matches were keyed.
type PlanOptions struct {
	// Salt is the request's salt (a prefix match with Shared set uses its
	// Shared() salt).
	Salt matcher.Salt
	// BlockSize is the index's prefix block size; 0 means
	// matcher.DefaultBlockSize.
	BlockSize int
}

// PlanFromMatches turns the matcher's cover into a plan. A chunk match
// becomes one segment of its chunk; a prefix match becomes one segment per
// prefix block, whose blob holds that block's tokens (base position
// i×BlockSize) under key matcher.PrefixKeys(...)[i].
func PlanFromMatches(prompt []matcher.Token, cover []matcher.Match, opts PlanOptions) (*Plan, error) {
	bs := opts.BlockSize
	if bs == 0 {
		bs = matcher.DefaultBlockSize
	}
	p := &Plan{Prompt: prompt}
	index := map[matcher.ChunkKey]int{}
	source := func(k matcher.ChunkKey) int {
		if i, ok := index[k]; ok {
			return i
		}
		index[k] = len(p.Keys)
		p.Keys = append(p.Keys, k)
		return len(p.Keys) - 1
	}
	for _, m := range cover {
		if m.Len <= 0 || m.ReqOff < 0 || m.End() > len(prompt) {
			return nil, fmt.Errorf("plan: match [%d, %d) outside the %d-token prompt: %w", m.ReqOff, m.End(), len(prompt), ErrPlan)
		}
		if !m.Prefix {
			p.Segments = append(p.Segments, Segment{Source: source(m.Chunk), SrcStart: m.ChunkOff, SrcEnd: m.ChunkOff + m.Len, Dst: m.ReqOff})
			continue
		}
		if m.ReqOff != 0 || m.Len%bs != 0 {
			return nil, fmt.Errorf("plan: prefix match [%d, %d) is not whole %d-token blocks from 0: %w", m.ReqOff, m.End(), bs, ErrPlan)
		}
		salt := opts.Salt
		if m.Shared {
			salt = salt.Shared()
		}
		keys, err := matcher.PrefixKeys(salt, prompt[:m.Len], bs, nil)
		if err != nil {
			return nil, fmt.Errorf("plan: prefix keys: %w: %w", ErrPlan, err)
		}
		if keys[len(keys)-1] != m.Chunk {
			return nil, fmt.Errorf("plan: prefix match's last block key %v is not the key of the prompt's block %d under the given salt: %w", m.Chunk, len(keys)-1, ErrPlan)
		}
		for i, k := range keys {
			p.Segments = append(p.Segments, Segment{Source: source(k), SrcStart: 0, SrcEnd: bs, Dst: i * bs, Prefix: true})
		}
	}
	slices.SortFunc(p.Segments, func(a, b Segment) int { return a.Dst - b.Dst })
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate checks the plan's structure: segments in range, sorted, not
// overlapping, referring to existing sources, at most MaxSegments.
func (p *Plan) Validate() error {
	if len(p.Segments) > MaxSegments {
		return fmt.Errorf("plan: %d segments, limit %d: %w", len(p.Segments), MaxSegments, ErrPlan)
	}
	end := 0
	for i, s := range p.Segments {
		if s.Source < 0 || s.Source >= len(p.Keys) {
			return fmt.Errorf("plan: segment %d source %d, plan has %d: %w", i, s.Source, len(p.Keys), ErrPlan)
		}
		if s.SrcStart < 0 || s.SrcEnd <= s.SrcStart {
			return fmt.Errorf("plan: segment %d source range [%d, %d) is empty or negative: %w", i, s.SrcStart, s.SrcEnd, ErrPlan)
		}
		if s.Dst < end {
			return fmt.Errorf("plan: segment %d at %d overlaps or precedes the previous one ending at %d: %w", i, s.Dst, end, ErrPlan)
		}
		end = s.Dst + s.Len()
		if end > len(p.Prompt) {
			return fmt.Errorf("plan: segment %d ends at %d, past the %d-token prompt: %w", i, end, len(p.Prompt), ErrPlan)
		}
	}
	return nil
}

// Reused is the number of prompt tokens the plan fills from stored KV.
func (p *Plan) Reused() int {
	n := 0
	for _, s := range p.Segments {
		n += s.Len()
	}
	return n
}

// Stitcher assembles stored chunks into a prompt's KV. It is immutable and
// safe for concurrent use.
type Stitcher struct {
	spec  ModelSpec
	fp    [FingerprintSize]byte
	rot   *Rotator
	shape Shape
}

// NewStitcher builds the stitcher of a model.
func NewStitcher(spec *ModelSpec) (*Stitcher, error) {
	rot, err := NewRotator(spec)
	if err != nil {
		return nil, fmt.Errorf("new stitcher: %w", err)
	}
	return &Stitcher{spec: *spec, fp: spec.Fingerprint(), rot: rot, shape: spec.Shape()}, nil
}

// StitchRequest is one stitch: a plan, the readers of its sources (in
// Plan.Keys order), where to put the KV, and whom to tell.
type StitchRequest struct {
	Plan    *Plan
	Sources []ChunkReader
	Target  Target
	// OnLayer, if set, is called when layer l of the target is complete
	// (layers in ascending order), before layer l+1 is started: hand the
	// layer to DMA there and return, so the copy overlaps the next layer's
	// stitching. An error stops the stitch.
	OnLayer func(ctx context.Context, layer int) error
}

// StitchStats describes a finished stitch.
type StitchStats struct {
	Layers        int
	Segments      int
	Tokens        int   // prompt tokens filled from stored KV
	RotatedTokens int   // of which had their keys re-rotated
	Bytes         int64 // KV bytes written into the target
}

// segmentPlan is a segment with what the stitch loop needs precomputed.
type segmentPlan struct {
	Segment
	src     ChunkReader
	n       int // source chunk's tokens
	angles  *Angles
	convert bool // dtype or FP8 scale differ: go through float32
}

// Stitch fills req.Target layer by layer: for each layer, every segment's
// rows are copied from its source (V as is, K re-rotated by
// Dst−SrcStart−BasePos positions when that is not zero), then OnLayer
// runs. Before any byte moves it checks the plan, each source's model
// fingerprint and shape (ErrModelMismatch), key and tokens (ErrPlan).
// Target positions no segment covers are left as they were.
func (st *Stitcher) Stitch(ctx context.Context, req StitchRequest) (StitchStats, error) {
	var stats StitchStats
	plan := req.Plan
	if plan == nil || req.Target == nil {
		return stats, fmt.Errorf("stitch: nil plan or target: %w", ErrPlan)
	}
	if err := plan.Validate(); err != nil {
		return stats, err
	}
	if len(req.Sources) != len(plan.Keys) {
		return stats, fmt.Errorf("stitch: %d sources for %d plan keys: %w", len(req.Sources), len(plan.Keys), ErrPlan)
	}
	tsh := req.Target.Shape()
	if tsh.Layers != st.shape.Layers || tsh.KVHeads != st.shape.KVHeads || tsh.HeadDim != st.shape.HeadDim {
		return stats, fmt.Errorf("stitch: target shape %v, model %s has %v: %w", tsh, st.spec.Name, st.shape, ErrShape)
	}
	if len(plan.Prompt) > req.Target.Tokens() {
		return stats, fmt.Errorf("stitch: %d-token prompt, target holds %d: %w", len(plan.Prompt), req.Target.Tokens(), ErrShape)
	}
	for i, src := range req.Sources {
		info := src.Info()
		if info.Model != st.fp {
			return stats, fmt.Errorf("stitch: source %d (%v) fingerprint %x…, model %s is %x…: %w", i, info.Key, info.Model[:8], st.spec.Name, st.fp[:8], ErrModelMismatch)
		}
		if s := info.Shape; s.Layers != st.shape.Layers || s.KVHeads != st.shape.KVHeads || s.HeadDim != st.shape.HeadDim {
			return stats, fmt.Errorf("stitch: source %d (%v) shape %v, model %v: %w", i, info.Key, s, st.shape, ErrModelMismatch)
		}
		if info.Key != plan.Keys[i] {
			return stats, fmt.Errorf("stitch: source %d is chunk %v, plan expects %v: %w", i, info.Key, plan.Keys[i], ErrPlan)
		}
		if av := src.Available(); av.Start > 0 || av.End < st.shape.Layers {
			return stats, fmt.Errorf("stitch: source %d (%v) has layers [%d, %d), the stitch needs all %d: %w", i, info.Key, av.Start, av.End, st.shape.Layers, ErrPlan)
		}
	}
	segs := make([]segmentPlan, len(plan.Segments))
	angles := map[int]*Angles{}
	for i, s := range plan.Segments {
		src := req.Sources[s.Source]
		info := src.Info()
		n := len(info.Tokens)
		if s.SrcEnd > n {
			return stats, fmt.Errorf("stitch: segment %d reads tokens [%d, %d) of a %d-token chunk %v: %w", i, s.SrcStart, s.SrcEnd, n, info.Key, ErrPlan)
		}
		if !slices.Equal(info.Tokens[s.SrcStart:s.SrcEnd], plan.Prompt[s.Dst:s.Dst+s.Len()]) {
			return stats, fmt.Errorf("stitch: segment %d: chunk %v tokens [%d, %d) differ from the prompt's [%d, %d): %w",
				i, info.Key, s.SrcStart, s.SrcEnd, s.Dst, s.Dst+s.Len(), ErrPlan)
		}
		delta := s.Dst - s.SrcStart - info.BasePos
		a, ok := angles[delta]
		if !ok {
			a = st.rot.Angles(delta)
			angles[delta] = a
		}
		segs[i] = segmentPlan{Segment: s, src: src, n: n, angles: a, convert: info.Shape.DType != tsh.DType}
		stats.Tokens += s.Len()
		if delta != 0 {
			stats.RotatedTokens += s.Len()
		}
	}
	stats.Segments = len(segs)
	trb := tsh.RowBytes()
	// A stitch is written once and read later by DMA or the engine: past a
	// cache's worth, bypass the cache as memmove does for large copies.
	large := int64(stats.Tokens)*int64(2*trb*st.shape.Layers) >= ntCopyMin
	var scratch []float32
	for l := range st.shape.Layers {
		for i := range segs {
			sg := &segs[i]
			payload, err := sg.src.Layer(ctx, l)
			if err != nil {
				return stats, fmt.Errorf("stitch: layer %d of chunk %v: %w", l, sg.src.Info().Key, err)
			}
			sinfo := sg.src.Info()
			srb := sinfo.Shape.RowBytes()
			if len(payload) != 2*sg.n*srb {
				return stats, fmt.Errorf("stitch: layer %d of chunk %v has %d bytes, want %d: %w", l, sinfo.Key, len(payload), 2*sg.n*srb, ErrShape)
			}
			for _, v := range []bool{false, true} {
				half := payload[:sg.n*srb]
				if v {
					half = payload[sg.n*srb:]
				}
				srcScale := sinfo.LayerInfo(l).Scales.pick(v)
				dstScale := req.Target.Scale(l, v)
				conv := sg.convert || (tsh.DType == FP8E4M3 && srcScale != dstScale)
				for t := 0; t < sg.Len(); {
					rows := req.Target.Rows(l, v, sg.Dst+t)
					k := min(len(rows)/trb, sg.Len()-t)
					if k <= 0 {
						return stats, fmt.Errorf("stitch: target gives no room at token %d of layer %d: %w", sg.Dst+t, l, ErrShape)
					}
					src := half[(sg.SrcStart+t)*srb : (sg.SrcStart+t+k)*srb]
					dst := rows[:k*trb]
					switch {
					case conv:
						scratch = st.convertRows(dst, tsh.DType, dstScale, src, sinfo.Shape.DType, srcScale, v, sg.angles, scratch)
					case v || sg.angles.delta == 0:
						copyLarge(dst, src, large)
					default:
						if err := sg.angles.Apply(dst, src, tsh.DType, dstScale); err != nil {
							return stats, fmt.Errorf("stitch: %w", err)
						}
					}
					stats.Bytes += int64(len(dst))
					t += k
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		if req.OnLayer != nil {
			if err := req.OnLayer(ctx, l); err != nil {
				return stats, fmt.Errorf("stitch: layer %d handler: %w", l, err)
			}
		}
		stats.Layers++
	}
	return stats, nil
}

// convertRows is the slow path for a source whose dtype (or FP8 scale)
// differs from the target's: rows go through float32, rotated when they
// are keys.
func (st *Stitcher) convertRows(dst []byte, dt DType, dscale float32, src []byte, sdt DType, sscale float32, v bool, a *Angles, scratch []float32) []float32 {
	n := len(src) / sdt.Size()
	if cap(scratch) < n {
		scratch = make([]float32, n)
	}
	f := scratch[:n]
	_ = DecodeFloat32(f, sdt, src, sscale)
	if !v && a.delta != 0 {
		rotateFloat32(a, f)
	}
	_ = EncodeFloat32(dst, dt, f, dscale)
	return scratch
}

// Subset returns the plan without the segments of sources keep rejects
// (chunks that missed a deadline or failed a check): their tokens become
// ordinary prompt tokens for the engine to compute. Sources are renumbered.
func (p *Plan) Subset(keep func(source int) bool) *Plan {
	q := &Plan{Prompt: p.Prompt}
	renum := make(map[int]int)
	for _, s := range p.Segments {
		if !keep(s.Source) {
			continue
		}
		n, ok := renum[s.Source]
		if !ok {
			n = len(q.Keys)
			renum[s.Source] = n
			q.Keys = append(q.Keys, p.Keys[s.Source])
		}
		s.Source = n
		q.Segments = append(q.Segments, s)
	}
	return q
}
