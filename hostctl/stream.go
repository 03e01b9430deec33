package hostctl

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
)

// drops tracks the planned chunks that failed after the plan was sent (a
// later layer that errs or does not arrive in time). The stitcher calls the
// readers and OnLayer from one goroutine, so drops needs no lock.
type drops struct {
	plan   *kvcache.Plan
	ranges []*api.Range // the plan's ranges as sent, one per plan segment
	at     []int        // per source: the layer it was dropped at, or -1
	errs   []error
	told   []bool
	n      int
}

func newDrops(plan *kvcache.Plan, ranges []*api.Range) *drops {
	ds := &drops{plan: plan, ranges: ranges, at: make([]int, len(plan.Keys)), errs: make([]error, len(plan.Keys)), told: make([]bool, len(plan.Keys))}
	for i := range ds.at {
		ds.at[i] = -1
	}
	return ds
}

func (ds *drops) drop(src, layer int, err error) {
	if ds.at[src] < 0 {
		ds.at[src], ds.errs[src] = layer, err
		ds.n++
	}
}

// take returns the events of the sources dropped since the last call (at
// layer l at the latest), each with the ranges that lose their KV.
func (ds *drops) take(l int) []*api.ChunkDropped {
	if ds.n == 0 {
		return nil
	}
	var out []*api.ChunkDropped
	for src, at := range ds.at {
		if at < 0 || at > l || ds.told[src] {
			continue
		}
		ds.told[src] = true
		ev := &api.ChunkDropped{Layer: int32(at), Chunk: ds.plan.Keys[src].String(), Reason: missReason(ds.errs[src])}
		for i, sg := range ds.plan.Segments {
			if sg.Source == src {
				ev.Ranges = append(ev.Ranges, ds.ranges[i])
			}
		}
		out = append(out, ev)
	}
	return out
}

// droppedTokens are the planned tokens the drops took back, by kind.
type droppedTokens struct{ prefix, chunk int }

// summary returns the tokens dropped and one reason per dropped chunk.
func (ds *drops) summary() (droppedTokens, []string) {
	var t droppedTokens
	var reasons []string
	for src, at := range ds.at {
		if at < 0 {
			continue
		}
		reasons = append(reasons, missReason(ds.errs[src]))
		for _, sg := range ds.plan.Segments {
			if sg.Source != src {
				continue
			}
			if sg.Prefix {
				t.prefix += sg.Len()
			} else {
				t.chunk += sg.Len()
			}
		}
	}
	return t, reasons
}

// recompute is the final recompute set: base (the plan's, ascending) and
// every position of a dropped range.
func (ds *drops) recompute(base []int32) []int32 {
	if ds.n == 0 {
		return base
	}
	out := slices.Clone(base)
	for _, sg := range ds.plan.Segments {
		if ds.at[sg.Source] < 0 {
			continue
		}
		for p := sg.Dst; p < sg.Dst+sg.Len(); p++ {
			out = append(out, int32(p))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// dropReader is a planned source whose failure after the plan drops the
// chunk instead of failing the Prepare: a layer that errs (a tier died, a
// checksum failed, the stream's grace ran out) is recorded and read as
// zeros from then on, and the stream reports the chunk as dropped before
// that layer is marked ready. Only the request's own end (ctx) is an error.
type dropReader struct {
	kvcache.ChunkReader
	idx  int
	ds   *drops
	zero []byte
}

var _ kvcache.ChunkReader = (*dropReader)(nil)

func (r *dropReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if at := r.ds.at[r.idx]; at < 0 || l < at {
		b, err := r.ChunkReader.Layer(ctx, l)
		if err == nil {
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		r.ds.drop(r.idx, l, err)
	}
	if r.zero == nil {
		info := r.Info()
		r.zero = make([]byte, 2*len(info.Tokens)*info.Shape.RowBytes())
	}
	return r.zero, nil
}

// gpuPath is how a Prepare's layers reach its GPU buffer, when it has one:
// stitched straight into pinned buffers from the DMA backend's pool and
// handed over with no staging copy (pin), or, for layers larger than the
// pool, stitched into the host segment and copied through the staging path.
type gpuPath struct {
	dma gpu.DMA
	buf *gpu.Buffer
	pin *pinnedTarget
}

// gpuPath gives a Prepare that asks for it a GPU buffer and, where a layer
// fits the DMA's pinned pool, the first pinned layer buffer. Without a DMA
// backend, or when the device has no room, the request is served from host
// memory alone.
func (d *Daemon) gpuPath(ctx context.Context, shape kvcache.Shape, tokens int, plan *kvcache.Plan, want bool) (*gpuPath, error) {
	gp := &gpuPath{}
	if !want || d.dma.dma == nil {
		return gp, nil
	}
	lb := shape.LayerBytes(tokens)
	buf, err := d.dma.dma.Alloc(ctx, shape.Layers, int64(lb))
	if err != nil {
		d.log.Warn("gpu_alloc_failed", "error", err)
		return gp, nil
	}
	gp.dma, gp.buf = d.dma.dma, buf
	pin := newPinnedTarget(d.dma.dma, shape, tokens, plan)
	if err := pin.next(ctx, 0); err != nil {
		if errors.Is(err, gpu.ErrBadRequest) {
			// A layer larger than the whole pool: the staging path
			// copies it in pool-sized chunks.
			d.log.Debug("dma_layer_exceeds_pool", "layer_bytes", lb, "error", err)
			return gp, nil
		}
		gp.free()
		return nil, fmt.Errorf("pinned buffer for layer 0: %w", err)
	}
	gp.pin = pin
	return gp, nil
}

// copyLayer hands layer l, just stitched, to the DMA: the pinned buffer it
// was stitched into, or the host segment's layer through the staging
// path. It returns the copy in flight (nil without a GPU buffer).
func (gp *gpuPath) copyLayer(ctx context.Context, l int, host *kvcache.KV) (*gpu.Transfer, error) {
	switch {
	case gp.pin != nil:
		return gp.pin.hand(ctx, l, gp.buf)
	case gp.buf != nil:
		return gp.dma.CopyLayer(ctx, gp.buf, l, host.Layer(l))
	}
	return nil, nil
}

// nextLayer readies layer l for stitching after layer l-1 was handed
// over: with the pinned path it takes l's buffer, waiting for room in the
// pool (bounded by ctx) while the copies in flight land.
func (gp *gpuPath) nextLayer(ctx context.Context, l int) error {
	if gp.pin == nil || l >= gp.pin.shape.Layers {
		return nil
	}
	if err := gp.pin.next(ctx, l); err != nil {
		return fmt.Errorf("pinned buffer for layer %d: %w", l, err)
	}
	return nil
}

func (gp *gpuPath) path() string {
	if gp.pin != nil {
		return "pinned"
	}
	return "pageable"
}

// release gives back a pinned buffer the stitch still holds (cancelled,
// failed); buffers handed to copies come back when the copies end.
func (gp *gpuPath) release() {
	if gp.pin != nil {
		gp.pin.release()
	}
}

// free releases the GPU buffer before a segment owns it.
func (gp *gpuPath) free() {
	if gp.buf != nil {
		_ = gp.dma.Free(gp.buf)
		gp.buf = nil
	}
}

// pinnedTarget is a stitch target whose current layer is a pinned buffer
// from the DMA backend's pool: the stitcher writes layer l there, hand
// gives it to the DMA (no staging copy) and takes the buffer for layer l+1,
// so the copy of l overlaps the stitching of l+1. The stitcher touches one
// layer at a time, in order (kvcache.StitchRequest.OnLayer), which is what
// lets each layer live in its own buffer.
type pinnedTarget struct {
	dma    gpu.DMA
	shape  kvcache.Shape
	one    kvcache.Shape // one layer of shape
	tokens int
	lb     int
	gaps   [][2]int    // positions no segment covers: zeroed in each buffer
	host   *kvcache.KV // the host segment, or nil (gpu_only)

	layer int
	hb    *gpu.HostBuffer
	cur   *kvcache.KV // hb as a one-layer KV
}

var _ kvcache.Target = (*pinnedTarget)(nil)

func newPinnedTarget(dma gpu.DMA, shape kvcache.Shape, tokens int, plan *kvcache.Plan) *pinnedTarget {
	one := shape
	one.Layers = 1
	covered := make([]bool, tokens)
	for _, sg := range plan.Segments {
		for p := sg.Dst; p < sg.Dst+sg.Len(); p++ {
			covered[p] = true
		}
	}
	var gaps [][2]int
	for p := 0; p < tokens; {
		if covered[p] {
			p++
			continue
		}
		q := p
		for q < tokens && !covered[q] {
			q++
		}
		gaps = append(gaps, [2]int{p, q})
		p = q
	}
	return &pinnedTarget{dma: dma, shape: shape, one: one, tokens: tokens, lb: shape.LayerBytes(tokens), gaps: gaps, layer: -1}
}

// next takes the pinned buffer layer l is stitched into, waiting for room
// in the pool (bounded by ctx). Pool memory is reused, so the positions no
// segment covers are zeroed: they must never show another request's KV.
func (p *pinnedTarget) next(ctx context.Context, l int) error {
	hb, err := p.dma.AllocHost(ctx, p.lb)
	if err != nil {
		return err
	}
	b := hb.Bytes()
	if len(b) < p.lb {
		hb.Release()
		return fmt.Errorf("pinned buffer of %d bytes for a %d-byte layer: %w", len(b), p.lb, gpu.ErrBadRequest)
	}
	b = b[:p.lb]
	kv, err := kvcache.WrapKV(p.one, p.tokens, b)
	if err != nil {
		hb.Release()
		return fmt.Errorf("pinned layer buffer: %w", err)
	}
	rb := p.shape.RowBytes()
	for _, g := range p.gaps {
		clear(b[g[0]*rb : g[1]*rb])                       // K rows
		clear(b[(p.tokens+g[0])*rb : (p.tokens+g[1])*rb]) // V rows
	}
	p.layer, p.hb, p.cur = l, hb, kv
	return nil
}

// hand gives layer l's pinned buffer to the DMA; next takes the buffer of
// layer l+1 once the layer's events are queued. With a host segment the layer is copied there first (the only copy the
// host side makes; gpu_only skips it).
func (p *pinnedTarget) hand(ctx context.Context, l int, buf *gpu.Buffer) (*gpu.Transfer, error) {
	if l != p.layer || p.hb == nil {
		return nil, fmt.Errorf("layer %d finished, the pinned buffer holds layer %d: %w", l, p.layer, kvcache.ErrPlan)
	}
	if p.host != nil {
		copy(p.host.Layer(l), p.cur.Layer(0))
	}
	hb := p.hb
	p.hb, p.cur = nil, nil
	return p.dma.CopyHost(ctx, buf, l, hb) // takes hb, whatever happens
}

// release gives back the buffer the stitch holds, if any.
func (p *pinnedTarget) release() {
	if p.hb != nil {
		p.hb.Release()
		p.hb, p.cur = nil, nil
	}
}

// Shape implements kvcache.Target.
func (p *pinnedTarget) Shape() kvcache.Shape { return p.shape }

// Tokens implements kvcache.Target.
func (p *pinnedTarget) Tokens() int { return p.tokens }

// Rows implements kvcache.Target: layer l must be the one being stitched.
func (p *pinnedTarget) Rows(l int, v bool, t int) []byte {
	if l != p.layer || p.cur == nil {
		return nil // the stitcher reports no room: never a write elsewhere
	}
	return p.cur.Rows(0, v, t)
}

// Scale implements kvcache.Target: the host segment's scales (1 unless
// set), so both copies hold the same bytes.
func (p *pinnedTarget) Scale(l int, v bool) float32 {
	if p.host != nil {
		return p.host.Scale(l, v)
	}
	return 1
}

// Layer implements kvcache.Target.
func (p *pinnedTarget) Layer(l int) []byte {
	if l != p.layer || p.cur == nil {
		return nil
	}
	return p.cur.Layer(0)
}
