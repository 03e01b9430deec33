package hostctl

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"

	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
)

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// newSimDMA is a sim DMA engine for a daemon under test (the daemon closes
// it): clock paces its copies, pool bytes bound its pinned pool.
func newSimDMA(t *testing.T, clock gpu.Clock, pool int) *gpu.SimDMA {
	t.Helper()
	sim, err := gpu.NewSim(gpu.SimOptions{Clock: clock, PoolBytes: pool, ChunkBytes: min(pool, gpu.DefaultChunkBytes), Logger: discardLogger()})
	if err != nil {
		t.Fatalf("sim DMA: %v", err)
	}
	return sim
}

// liveSegment returns the daemon's segment for a handle.
func liveSegment(t *testing.T, d *Daemon, handle string) *segment {
	t.Helper()
	d.segs.mu.Lock()
	defer d.segs.mu.Unlock()
	seg := d.segs.live[handle]
	if seg == nil {
		t.Fatalf("no live segment %q", handle)
	}
	return seg
}

// gpuLayer reads layer l of a segment's GPU buffer back.
func gpuLayer(t *testing.T, seg *segment, l int) *kvcache.KV {
	t.Helper()
	b := make([]byte, seg.buf.LayerBytes())
	if err := seg.dma.ReadLayer(t.Context(), seg.buf, l, b); err != nil {
		t.Fatalf("read GPU layer %d: %v", l, err)
	}
	return layerKV(t, b)
}

// layerKV wraps one layer of stories260K KV.
func layerKV(t *testing.T, b []byte) *kvcache.KV {
	t.Helper()
	spec, err := kvcache.Preset("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	sh := spec.Shape()
	sh.Layers = 1
	kv, err := kvcache.WrapKV(sh, len(b)/sh.LayerBytes(1), b)
	if err != nil {
		t.Fatalf("wrap layer: %v", err)
	}
	return kv
}

// TestPrepareGPUZeroCopy: with gpu, each layer is stitched straight into a
// pinned buffer from the DMA backend's pool and handed to the DMA with no
// staging copy, and the copy of layer l overlaps the stitching of layer
// l+1: on a clock that does not move, every layer gets stitched and handed
// over while no copy has finished (a stitcher that waited for each copy
// would hold one buffer for ever). Once the copies land, each layer is
// reported on the GPU, the GPU buffer and the host segment hold the
// engine's own KV, and every pool buffer is back.
func TestPrepareGPUZeroCopy(t *testing.T) {
	m := loadModel260K(t)
	clock := gpu.NewManualClock()
	sim := newSimDMA(t, clock, 0)
	dt := startDaemonOpts(t, testConfig(t), Options{DMA: sim})
	toks := m.prompt(story)
	kv := m.prefill(t, toks)
	if _, err := StoreKV(t.Context(), dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, kv, 0); err != nil {
		t.Fatal(err)
	}
	stream, err := dt.c.Prepare(t.Context(), &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none", Gpu: true})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	p := ev.GetPlan()
	if g := p.GetKv().GetGpu(); g == nil || !g.ZeroCopy || g.Backend != "sim" {
		t.Fatalf("plan's GPU buffer %v, want the sim backend's, zero copy", g)
	}
	layers := kv.Shape().Layers
	testutil.Eventually(t, "every layer stitched and handed to the DMA while no copy has finished", func() bool {
		// Allocated is not enough: the last buffer may still be being
		// stitched, and its copy would start after the clock moved.
		return sim.Pool().InUse() == layers && counterValue(t, dt.d.m.dmaLayers.WithLabelValues("pinned")) == float64(layers)
	})
	clock.Advance(time.Second)
	for l := range layers {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ly := ev.GetLayer(); ly == nil || int(ly.Layer) != l || !ly.OnGpu {
			t.Fatalf("event %v, want layer %d ready on the GPU", ev, l)
		}
	}
	if ev, err := stream.Recv(); err != nil || ev.GetDone() == nil {
		t.Fatalf("want done: %v %v", ev, err)
	}
	seg := liveSegment(t, dt.d, p.Kv.Handle)
	for l := range layers {
		got := gpuLayer(t, seg, l)
		for _, r := range p.Ranges {
			for pos := r.Start; pos < r.Start+r.Length; pos++ {
				for _, v := range []bool{false, true} {
					if !bytes.Equal(got.Row(0, v, int(pos)), kv.Row(l, v, int(pos))) {
						t.Fatalf("WRONG KV on the GPU: layer %d v=%v position %d", l, v, pos)
					}
				}
			}
		}
		if !bytes.Equal(got.Layer(0), seg.kv.Layer(l)) {
			t.Fatalf("layer %d: the host segment differs from the GPU buffer", l)
		}
	}
	verifyPlan(t, p, kv)
	testutil.Eventually(t, "every pinned buffer back in the pool", func() bool { return sim.Pool().InUse() == 0 })
	if n := counterValue(t, dt.d.m.dmaLayers.WithLabelValues("pinned")); n != float64(layers) {
		t.Fatalf("kvloom_dma_layers_total{path=pinned} = %v, want %d", n, layers)
	}
}

// TestPrepareGPUBuffersReturned: a Prepare cut while its layers are in
// flight (the client cancels, or its deadline passes, with the stitch
// waiting for pool room) gives back the pinned buffer it held at once;
// the copies already handed over return theirs when they land. The
// segment is deleted and the daemon keeps serving.
func TestPrepareGPUBuffersReturned(t *testing.T) {
	m := loadModel260K(t)
	clock := gpu.NewManualClock()
	// Room for two layer buffers: layers 0 and 1 go in flight, layer 2
	// waits for one of them to land, which the clock never lets happen.
	sim := newSimDMA(t, clock, 2*gpu.DefaultPoolPage)
	dt := startDaemonOpts(t, testConfig(t), Options{DMA: sim})
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	for _, tc := range []struct {
		name string
		code codes.Code
	}{{"cancel", codes.Canceled}, {"deadline", codes.DeadlineExceeded}} {
		t.Run(tc.name, func(t *testing.T) {
			var ctx context.Context
			var cancel context.CancelFunc
			if tc.code == codes.DeadlineExceeded {
				ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
			} else {
				ctx, cancel = context.WithCancel(t.Context())
			}
			defer cancel()
			handed := func() float64 { return counterValue(t, dt.d.m.dmaLayers.WithLabelValues("pinned")) }
			before := handed()
			stream, err := dt.c.Prepare(ctx, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none", Gpu: true})
			if err != nil {
				t.Fatal(err)
			}
			if ev, err := stream.Recv(); err != nil || ev.GetPlan() == nil {
				t.Fatalf("want the plan: %v %v", ev, err)
			}
			// Both buffers handed over to the DMA, not one of them still
			// being stitched (that one would go back at the cut).
			testutil.Eventually(t, "two layers in flight", func() bool { return sim.Pool().InUse() == 2 && handed() == before+2 })
			if tc.code == codes.Canceled {
				cancel()
			}
			for {
				if _, err = stream.Recv(); err != nil {
					break
				}
			}
			wantCode(t, err, tc.code, "")
			testutil.Eventually(t, "the Prepare to end", func() bool { return dt.d.inflight() == 0 })
			testutil.Eventually(t, "its segment deleted", func() bool { n, _ := dt.d.segs.stats(); return n == 0 })
			if n := sim.Pool().InUse(); n != 2 {
				t.Fatalf("%d pool buffers out, want the 2 copies in flight", n)
			}
			clock.Advance(time.Second)
			testutil.Eventually(t, "every pinned buffer back in the pool", func() bool { return sim.Pool().InUse() == 0 })
		})
	}
	checkExactPrefix(t, dt, m, "acme", toks)
}

// TestPrepareGPUOnly: gpu_only leaves the KV in the GPU buffer alone (no
// host segment, no file); pinned buffers are reused from the pool, so the
// positions no range covers are zeroed in each (another request's KV never
// shows through).
func TestPrepareGPUOnly(t *testing.T) {
	m := loadModel260K(t)
	sim := newSimDMA(t, gpu.NewVirtualClock(), 0)
	cfg := testConfig(t)
	dt := startDaemonOpts(t, cfg, Options{DMA: sim})
	ctx := t.Context()
	doc := m.prompt("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy.")[1:]
	head := m.prompt("Tom had a red ball.")
	toks := append(slices.Clone(head), doc...)
	storePrompt(t, dt.c, m, "acme", toks, &api.ChunkSpan{Start: int32(len(head)), Length: int32(len(doc))})
	// Dirty the pool: a whole prompt's KV through the pinned buffers.
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none", Gpu: true, GpuOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Plan
	if p.Kv.Path != "" || p.Kv.Size != 0 || p.Kv.Gpu == nil || !p.Kv.Gpu.ZeroCopy {
		t.Fatalf("gpu_only segment %v, want no host copy and a zero-copy GPU buffer", p.Kv)
	}
	if _, err := MapSegment(p.Kv); err == nil || !strings.Contains(err.Error(), "no host copy") {
		t.Fatalf("MapSegment of a gpu_only segment: %v", err)
	}
	if ents, err := os.ReadDir(cfg.Limits.SegmentDir); err != nil || len(ents) != 0 {
		t.Fatalf("segment directory holds %d files (%v), want none", len(ents), err)
	}
	kv := m.prefill(t, toks)
	seg := liveSegment(t, dt.d, p.Kv.Handle)
	for l := range kv.Shape().Layers {
		got := gpuLayer(t, seg, l)
		for pos := range int(p.Kv.Tokens) {
			if !bytes.Equal(got.Row(0, true, pos), kv.Row(l, true, pos)) {
				t.Fatalf("WRONG KV on the GPU: layer %d position %d", l, pos)
			}
		}
	}
	if _, err := dt.c.Release(ctx, &api.ReleaseRequest{Handle: p.Kv.Handle}); err != nil {
		t.Fatalf("release: %v", err)
	}
	// The document elsewhere: the positions before it are no range's.
	head2 := m.prompt("Once upon a time there was a girl who liked to read stories about animals.")
	toks2 := append(slices.Clone(head2), doc...)
	res, err = PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks2, Recompute: "none", Gpu: true, GpuOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Plan.Ranges; len(r) != 1 || r[0].Start != int32(len(head2)) {
		t.Fatalf("ranges %v, want the document at %d", r, len(head2))
	}
	seg = liveSegment(t, dt.d, res.Plan.Kv.Handle)
	zero := make([]byte, kv.Shape().RowBytes())
	for l := range kv.Shape().Layers {
		got := gpuLayer(t, seg, l)
		for pos := range len(head2) {
			if !bytes.Equal(got.Row(0, false, pos), zero) || !bytes.Equal(got.Row(0, true, pos), zero) {
				t.Fatalf("layer %d position %d, which no range covers, is not zero on the GPU", l, pos)
			}
		}
	}
	testutil.Eventually(t, "every pinned buffer back in the pool", func() bool { return sim.Pool().InUse() == 0 })
}

// TestPrepareGPUPageableFallback: a layer larger than the whole pinned
// pool cannot be stitched into it; it goes through the DMA's staging copy
// (CopyLayer) from the host segment instead, and still lands whole.
func TestPrepareGPUPageableFallback(t *testing.T) {
	m := loadModel260K(t)
	sim := newSimDMA(t, gpu.NewVirtualClock(), gpu.DefaultPoolPage)
	dt := startDaemonOpts(t, testConfig(t), Options{DMA: sim})
	toks := m.prompt(strings.Repeat(story+" ", 5))
	kv := m.prefill(t, toks)
	if lb := kv.Shape().LayerBytes(len(toks) / 16 * 16); lb <= gpu.DefaultPoolPage {
		t.Fatalf("a %d-byte layer fits the %d-byte pool: make the prompt longer", lb, gpu.DefaultPoolPage)
	}
	if _, err := StoreKV(t.Context(), dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, kv, 0); err != nil {
		t.Fatal(err)
	}
	// gpu_only cannot be honoured without the pinned path: the host
	// segment is written.
	res, err := PrepareAll(t.Context(), dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none", Gpu: true, GpuOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	g := res.Plan.Kv.GetGpu()
	if g == nil || g.ZeroCopy || res.Plan.Kv.Path == "" {
		t.Fatalf("segment %v, want a host copy and a staged GPU buffer", res.Plan.Kv)
	}
	for _, l := range res.Layers {
		if !l.OnGpu {
			t.Fatalf("layer %d reported before its copy", l.Layer)
		}
	}
	seg := liveSegment(t, dt.d, res.Plan.Kv.Handle)
	for l := range kv.Shape().Layers {
		if !bytes.Equal(gpuLayer(t, seg, l).Layer(0), seg.kv.Layer(l)) {
			t.Fatalf("layer %d on the GPU differs from the segment", l)
		}
	}
	verifyPlan(t, res.Plan, kv)
	if n := counterValue(t, dt.d.m.dmaLayers.WithLabelValues("pageable")); n != float64(kv.Shape().Layers) {
		t.Fatalf("kvloom_dma_layers_total{path=pageable} = %v", n)
	}
}
