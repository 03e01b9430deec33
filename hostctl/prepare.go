package hostctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvloom/kvloom/gpu"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/store"
)

// resolve checks a request's model, tenant and tokens and returns the model
// and the tenant's salt.
func (d *Daemon) resolve(tenant, modelName string, toks []uint32, shared bool) (*model, matcher.Salt, error) {
	m, err := d.models.get(modelName)
	if err != nil {
		return nil, matcher.Salt{}, err
	}
	if err := m.checkTokens(toks, d.cfg.Limits.MaxPromptTokens); err != nil {
		return nil, matcher.Salt{}, err
	}
	salt, err := d.models.salt(m, tenant, shared)
	if err != nil {
		return nil, matcher.Salt{}, err
	}
	return m, salt, nil
}

// cover matches a prompt against the index and picks the reuse cover. A
// prompt whose anchors hit too many candidates (periodic or adversarial
// input) is a miss, not an error.
//
// Cover uses matches whole, so a chunk that overlaps the prefix match and
// is longer than it displaces the exact prefix KV for the sake of a few
// tokens (the control loop's chunks of spans found in stored prompts do,
// when a prompt holds such a span a little past its stored prefix). Such a
// chunk is also offered cut at the prefix's end (a part of a chunk is as
// good a source as the whole), so the cover can keep the exact prefix and
// take the rest of the chunk: at least as many tokens reused, more of them
// exact. A chunk the prefix outweighs is offered cut too when the rest is
// at least a chunk match long (min_chunk_tokens): worth its fetch, where a
// few tokens past the prefix are cheaper to compute than to load.
func (d *Daemon) cover(salt matcher.Salt, toks []matcher.Token) ([]matcher.Match, error) {
	res, err := d.index.Find(salt, toks, nil)
	if errors.Is(err, matcher.ErrTooManyCandidates) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("match prompt: %w", err)
	}
	ms := res.Matches
	end := 0
	for _, m := range ms {
		if m.Prefix {
			end = max(end, m.End())
		}
	}
	if end > 0 {
		for _, m := range ms {
			if !m.Prefix && m.ReqOff < end && m.End() > end && (m.Len > end || m.End()-end >= d.cfg.MinChunkTokens) {
				cut := end - m.ReqOff
				m.ReqOff, m.ChunkOff, m.Len = end, m.ChunkOff+cut, m.Len-cut
				ms = append(ms, m)
			}
		}
	}
	return matcher.Cover(ms), nil
}

// fetched is one plan source: its reader and where it came from.
type fetched struct {
	r     kvcache.ChunkReader
	where string
}

// load fetches a plan's sources through the prefetcher (layer 0 of every
// chunk first) and returns, for each, a reader to plan with or none, and
// the function that ends the fetch once the stitch is done with the readers.
//
// If every chunk still in the running has its header and layer 0 by the
// load deadline (loadCtx), they are all planned and the stitcher consumes
// their later layers as they arrive, so the layer events track the load
// itself. Otherwise the chunks whose layer 0 made it are planned and the
// rest are left to recompute: a late chunk is never waited for, and the
// chunks that arrived are still served (partial results over late ones).
// Their later layers must then arrive within grace; a chunk whose layer
// does not is dropped from the stream (dropReader).
func (d *Daemon) load(ctx, loadCtx context.Context, plan *kvcache.Plan, deadline, grace time.Duration) ([]fetched, func(), error) {
	where := d.locate(plan.Keys)
	f, err := d.st.pf.FetchPlan(ctx, plan, store.FetchOptions{NoShed: true, Timeout: deadline + grace})
	if err != nil {
		return nil, nil, fmt.Errorf("prefetch: %w", err)
	}
	out := make([]fetched, len(plan.Keys))
	done := func() { f.Close() }
	if f.WaitLayer(loadCtx, 0) == nil {
		var res *store.Result
		for i := range plan.Keys {
			if r := f.Reader(i); r != nil {
				out[i] = fetched{r: r, where: where[i]}
				continue
			}
			if res == nil {
				r := f.Wait(expired())
				res = &r
			}
			d.m.chunkMisses.WithLabelValues(missReason(errAt(res.Errs, i))).Inc()
		}
		return out, done, nil
	}
	// The deadline passed with some first layers still out.
	now := expired()
	res := f.Wait(now)
	var keep []int
	for i := range plan.Keys {
		if r := f.Reader(i); r != nil {
			if _, err := r.Layer(now, 0); err == nil {
				keep = append(keep, i)
				continue
			}
		}
		e := errAt(res.Errs, i)
		if e == nil {
			e = store.ErrDeadline
		}
		d.m.chunkMisses.WithLabelValues(missReason(e)).Inc()
	}
	if len(keep) == 0 {
		f.Close()
		return out, func() {}, nil
	}
	// The request that started the chunks' reads paces them layer by
	// layer behind its slowest chunk: a late one would hold the planned
	// ones at layer 0. So a second request takes over the planned chunks
	// (joining their reads, keeping what arrived), and the first lets go
	// of everything, the late chunks with it.
	keys := make([]matcher.ChunkKey, len(keep))
	for j, i := range keep {
		keys[j] = plan.Keys[i]
	}
	f2, err := d.st.pf.Fetch(ctx, keys, store.FetchOptions{NoShed: true, Timeout: grace})
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("prefetch: %w", err)
	}
	// The readers are taken while the first request still holds the reads
	// at layer 0: once it lets go they run ahead, and a chunk whose later
	// layer fails would have no reader (a miss) instead of being dropped
	// at that layer with the layers before it served.
	for j, i := range keep {
		if r := f2.Reader(j); r != nil {
			out[i] = fetched{r: r, where: where[i]}
		} else {
			d.m.chunkMisses.WithLabelValues("error").Inc()
		}
	}
	f.Close()
	return out, func() { f2.Close() }, nil
}

// locate names where each key is: the fastest local tier, else the first
// peer known to hold it, else "".
func (d *Daemon) locate(keys []matcher.ChunkKey) []string {
	where := d.st.where(keys)
	for i, w := range where {
		if w == "" {
			if ps := d.owners.peersOf(keys[i]); len(ps) > 0 {
				where[i] = ps[0]
			}
		}
	}
	return where
}

// expired returns a context that has ended: Fetch.Wait on it reports the
// state at once, and a reader's Layer on it answers only for a layer that
// is already in.
func expired() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func errAt(errs []error, i int) error {
	if i < len(errs) {
		return errs[i]
	}
	return nil
}

func missReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, store.ErrDeadline):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, store.ErrCorrupt), errors.Is(err, kvcache.ErrChecksum), errors.Is(err, kvcache.ErrTruncated), errors.Is(err, kvcache.ErrMalformed):
		return "corrupt"
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, store.ErrNotFound):
		return "absent"
	case err == nil:
		return "pending"
	}
	return "error"
}

// sourceOf maps a fetch's origin (a tier label: mem, disk, redis, with a
// digit for a second tier of a kind; else a peer's address) to the API's
// Source.
func sourceOf(where string) api.Source {
	switch strings.TrimRight(where, "0123456789") {
	case "":
		return api.Source_SOURCE_NONE
	case "mem":
		return api.Source_SOURCE_MEMORY
	case "disk":
		return api.Source_SOURCE_DISK
	case "redis":
		return api.Source_SOURCE_REDIS
	}
	return api.Source_SOURCE_PEER
}

// devMatches submits the prompt to the accelerator and returns the keys of
// what it matched (its hot table's view), or nil without a device. The
// software index stays the oracle: device results only say which ranges
// the hot table held.
func (d *Daemon) devMatches(ctx context.Context, salt matcher.Salt, toks []matcher.Token, id uint64) <-chan map[matcher.ChunkKey]bool {
	out := make(chan map[matcher.ChunkKey]bool, 1)
	dev := d.dev.get()
	if dev == nil {
		out <- nil
		return out
	}
	if max := dev.Info().MaxRequestTokens; max > 0 && len(toks) > max {
		out <- nil
		return out
	}
	ch, err := dev.Submit(ctx, nic.Request{ID: id, Salt: salt, Tokens: toks})
	if err != nil {
		d.dev.fault(err)
		out <- nil
		return out
	}
	go func() {
		got := map[matcher.ChunkKey]bool{}
		for ev := range ch {
			if ev.Kind == nic.EventMatch {
				got[ev.Match.Chunk] = true
			}
		}
		out <- got
	}()
	return out
}

// Prepare plans and loads a prompt's reusable KV, calling send with the
// plan, each layer as it becomes ready, and the end. It is the logic behind
// the Prepare call; send is the stream.
func (d *Daemon) Prepare(ctx context.Context, req *api.PrepareRequest, send func(*api.PrepareEvent) error) error {
	start := time.Now()
	m, salt, err := d.resolve(req.GetTenant(), req.GetModel(), req.GetTokens(), false)
	if err != nil {
		return err
	}
	toks := req.GetTokens()
	policy, err := d.policy(req.GetRecompute())
	if err != nil {
		return err
	}
	deadline := d.loadDeadline(req.GetDeadlineNs())
	loadCtx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	id := d.reqID.Add(1)
	d.stats.prepares.Add(1)
	d.stats.promptTokens.Add(uint64(len(toks)))
	d.m.promptTokens.Add(float64(len(toks)))
	if err := d.hot.Observe(d.now(), salt, toks); err != nil {
		d.log.Debug("hot_observe_failed", "error", err)
	}
	devc := d.devMatches(loadCtx, salt, toks, id)
	devDone := false
	defer func() {
		if !devDone { // an early return: end the device's request and wait for it
			cancel()
			<-devc
		}
	}()

	cover, err := d.cover(salt, toks)
	if err != nil {
		return err
	}
	d.recordHits(salt, toks, cover)
	var plan *kvcache.Plan
	if len(cover) > 0 {
		if plan, err = kvcache.PlanFromMatches(toks, cover, kvcache.PlanOptions{Salt: salt, BlockSize: d.cfg.ChunkTokens}); err != nil {
			return fmt.Errorf("plan: %w", err)
		}
	}
	var srcs []fetched
	if plan != nil {
		var done func()
		if srcs, done, err = d.load(ctx, loadCtx, plan, deadline, d.cfg.Limits.StreamGrace); err != nil {
			return err
		}
		defer done()
	}
	devHits := <-devc
	devDone = true
	plan, srcs, partial := keepArrived(plan, srcs)
	out := &api.Plan{RequestId: id, PromptTokens: int32(len(toks)), Partial: partial, RecomputePolicy: policy.String()}
	if dev := d.dev.get(); dev != nil {
		out.DeviceBackend = string(dev.Info().Kind)
	}
	if partial {
		d.stats.partial.Add(1)
		d.m.partial.Inc()
	}
	if plan == nil || len(plan.Segments) == 0 {
		// Nothing to load: the engine prefills everything.
		if err := send(&api.PrepareEvent{Event: &api.PrepareEvent_Plan{Plan: out}}); err != nil {
			return err
		}
		d.m.prepareSeconds.Observe(time.Since(start).Seconds())
		return send(&api.PrepareEvent{Event: &api.PrepareEvent_Done{Done: &api.PrepareDone{ElapsedNs: int64(time.Since(start))}}})
	}
	return d.stitch(ctx, start, m, plan, srcs, policy, devHits, req, out, send)
}

// keepArrived drops the plan's segments whose source did not arrive
// (kvcache.Plan.Subset, which renumbers the rest) and lines the sources up
// with the kept plan's keys; partial says whether any was dropped.
func keepArrived(plan *kvcache.Plan, srcs []fetched) (*kvcache.Plan, []fetched, bool) {
	if plan == nil {
		return nil, nil, false
	}
	if !slices.ContainsFunc(srcs, func(s fetched) bool { return s.r == nil }) {
		return plan, srcs, false
	}
	out := plan.Subset(func(i int) bool { return srcs[i].r != nil })
	// A plan's keys are distinct, so a key names its source.
	at := make(map[matcher.ChunkKey]int, len(plan.Keys))
	for i, k := range plan.Keys {
		at[k] = i
	}
	kept := make([]fetched, len(out.Keys))
	for j, k := range out.Keys {
		kept[j] = srcs[at[k]]
	}
	return out, kept, true
}

// ready is one layer the stitcher finished: the chunks dropped up to it,
// and its DMA copy when the segment has a GPU buffer.
type ready struct {
	layer   int
	t       *gpu.Transfer
	dropped []*api.ChunkDropped
}

// stitch fills a segment with the plan's KV layer by layer, streaming
// readiness.
func (d *Daemon) stitch(ctx context.Context, start time.Time, m *model, plan *kvcache.Plan, srcs []fetched,
	policy kvcache.Policy, devHits map[matcher.ChunkKey]bool, req *api.PrepareRequest, out *api.Plan, send func(*api.PrepareEvent) error,
) error {
	tokens := 0
	for _, sg := range plan.Segments {
		tokens = max(tokens, sg.Dst+sg.Len())
	}
	// The segment holds positions up to the last reused one: the stitcher
	// fills a target as long as the plan's prompt.
	plan = &kvcache.Plan{Prompt: plan.Prompt[:tokens], Keys: plan.Keys, Segments: plan.Segments}
	rec, err := kvcache.PlanRecompute(ctx, policy, plan, kvcache.RecomputeOptions{})
	if err != nil {
		return fmt.Errorf("recompute plan: %w", err)
	}
	gp, err := d.gpuPath(ctx, m.shape, tokens, plan, req.GetGpu())
	if err != nil {
		return err
	}
	defer gp.release()
	// gpu_only with a GPU buffer fed from the pinned pool: no host copy.
	host := !(req.GetGpuOnly() && gp.pin != nil)
	seg, err := d.segs.create(m.shape, tokens, host)
	if err != nil {
		gp.free()
		return err
	}
	seg.buf, seg.dma = gp.buf, gp.dma
	ok := false
	defer func() { d.segs.done(seg, !ok) }()
	if gp.pin != nil {
		gp.pin.host = seg.kv
	}
	// The plan as the engine sees it: ranges with their sources, and every
	// position below the segment's end that it must compute.
	covered := make([]bool, tokens)
	prefixTok, chunkTok := 0, 0
	for _, sg := range plan.Segments {
		src := srcs[sg.Source]
		key := plan.Keys[sg.Source]
		out.Ranges = append(out.Ranges, &api.Range{
			Start: int32(sg.Dst), Length: int32(sg.Len()), Chunk: key.String(), ChunkOffset: int32(sg.SrcStart),
			Prefix: sg.Prefix, Source: sourceOf(src.where), Where: src.where, Device: devHits[key],
		})
		for p := sg.Dst; p < sg.Dst+sg.Len(); p++ {
			covered[p] = true
		}
		if sg.Prefix {
			prefixTok += sg.Len()
		} else {
			chunkTok += sg.Len()
		}
	}
	markDeviceRanges(out.Ranges, devHits, plan)
	recompute := make([]int32, 0, len(rec.Positions)+tokens-prefixTok-chunkTok)
	ri := 0
	for p := range tokens {
		if !covered[p] || (ri < len(rec.Positions) && rec.Positions[ri] == p) {
			recompute = append(recompute, int32(p))
		}
		if ri < len(rec.Positions) && rec.Positions[ri] == p {
			ri++
		}
	}
	out.Recompute = recompute
	out.ReusedTokens = int32(prefixTok + chunkTok)
	layerBytes := m.shape.LayerBytes(tokens)
	out.Kv = &api.Segment{
		Handle: seg.handle, Path: seg.path, Size: uint64(len(seg.data)), Layout: SegmentLayout,
		Tokens: int32(tokens), Layers: int32(m.shape.Layers), KvHeads: int32(m.shape.KVHeads), HeadDim: int32(m.shape.HeadDim),
		Dtype: m.shape.DType.String(), LayerBytes: uint64(layerBytes),
		ExpiresUnixNs: time.Now().Add(d.cfg.Limits.SegmentTTL).UnixNano(),
	}
	if gp.buf != nil {
		out.Kv.Gpu = &api.GPUBuffer{Backend: gp.dma.Backend(), LayerBytes: uint64(layerBytes), Layers: int32(m.shape.Layers), ZeroCopy: gp.pin != nil}
	}
	for l := range m.shape.Layers {
		out.Kv.LayerOffsets = append(out.Kv.LayerOffsets, uint64(l*layerBytes))
	}
	if err := send(&api.PrepareEvent{Event: &api.PrepareEvent_Plan{Plan: out}}); err != nil {
		return err
	}
	ds := newDrops(plan, out.Ranges)
	readers := make([]kvcache.ChunkReader, len(srcs))
	for i, s := range srcs {
		readers[i] = &dropReader{ChunkReader: s.r, idx: i, ds: ds}
	}
	// One goroutine sends the events of each layer in order: the chunks
	// dropped up to it, then its readiness. With a GPU buffer it waits for
	// the layer's copy first, so stitching layer l+1 overlaps the DMA of l.
	readyc := make(chan ready, m.shape.Layers)
	var sendErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for r := range readyc {
			if sendErr != nil {
				continue
			}
			for _, dr := range r.dropped {
				if sendErr = send(&api.PrepareEvent{Event: &api.PrepareEvent_Dropped{Dropped: dr}}); sendErr != nil {
					break
				}
			}
			if sendErr != nil {
				continue
			}
			onGPU := false
			if r.t != nil {
				if err := r.t.Wait(ctx); err != nil {
					sendErr = fmt.Errorf("dma layer %d: %w", r.layer, err)
					continue
				}
				onGPU = true
			}
			if r.layer == 0 {
				d.m.firstLayer.Observe(time.Since(start).Seconds())
			}
			sendErr = send(&api.PrepareEvent{Event: &api.PrepareEvent_Layer{Layer: &api.LayerReady{
				Layer: int32(r.layer), Bytes: uint64(layerBytes), ElapsedNs: int64(time.Since(start)), OnGpu: onGPU,
			}}})
		}
	})
	var target kvcache.Target = seg.kv
	if gp.pin != nil {
		target = gp.pin
	}
	st, err := m.stitcher.Stitch(ctx, kvcache.StitchRequest{
		Plan: plan, Sources: readers, Target: target,
		OnLayer: func(ctx context.Context, l int) error {
			t, err := gp.copyLayer(ctx, l, seg.kv)
			if err != nil {
				return fmt.Errorf("dma layer %d: %w", l, err)
			}
			if gp.buf != nil {
				d.m.dmaLayers.WithLabelValues(gp.path()).Inc()
			}
			readyc <- ready{layer: l, t: t, dropped: ds.take(l)}
			return gp.nextLayer(ctx, l+1)
		},
	})
	close(readyc)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("stitch: %w", err)
	}
	if sendErr != nil {
		return sendErr
	}
	dropped, reason := ds.summary()
	for _, r := range reason {
		d.m.dropped.WithLabelValues(r).Inc()
	}
	d.stats.dropped.Add(uint64(len(reason)))
	prefixTok -= dropped.prefix
	chunkTok -= dropped.chunk
	d.stats.reusedTokens.Add(uint64(prefixTok + chunkTok))
	d.m.reusedTokens.WithLabelValues("prefix").Add(float64(prefixTok))
	d.m.reusedTokens.WithLabelValues("chunk").Add(float64(chunkTok))
	d.m.prepareSeconds.Observe(time.Since(start).Seconds())
	ok = true
	return send(&api.PrepareEvent{Event: &api.PrepareEvent_Done{Done: &api.PrepareDone{
		ElapsedNs: int64(time.Since(start)), RotatedTokens: int32(st.RotatedTokens), Bytes: uint64(st.Bytes),
		Recompute: ds.recompute(out.Recompute), DroppedTokens: int32(dropped.prefix + dropped.chunk),
	}}})
}

// markDeviceRanges marks the prefix ranges the device's prefix match
// covered: the device names the prefix match by its last block's key.
func markDeviceRanges(ranges []*api.Range, devHits map[matcher.ChunkKey]bool, plan *kvcache.Plan) {
	if len(devHits) == 0 {
		return
	}
	last := -1
	for i, r := range ranges {
		if r.Prefix && devHits[plan.Keys[plan.Segments[i].Source]] {
			last = i
		}
	}
	for i := 0; i <= last; i++ {
		if ranges[i].Prefix {
			ranges[i].Device = true
		}
	}
}

// policy resolves a request's recompute policy.
func (d *Daemon) policy(s string) (kvcache.Policy, error) {
	if s == "" {
		s = d.cfg.Recompute
	}
	p, err := kvcache.ParsePolicy(s)
	if err != nil {
		return kvcache.Policy{}, fmt.Errorf("recompute %q: %w", s, err)
	}
	return p, nil
}

// loadDeadline is the load budget a request gets.
func (d *Daemon) loadDeadline(ns int64) time.Duration {
	if ns <= 0 {
		return d.cfg.Limits.PrepareDeadline
	}
	return min(time.Duration(ns), d.cfg.Limits.MaxDeadline)
}

// recordHits counts each matched entry's reuse for the control loop.
func (d *Daemon) recordHits(salt matcher.Salt, toks []matcher.Token, cover []matcher.Match) {
	now := d.now()
	for _, mt := range cover {
		d.ctl.hit(mt, now)
		if mt.Prefix {
			s := salt
			if mt.Shared {
				s = salt.Shared()
			}
			d.ctl.setPrefix(mt.Chunk, s, toks[:mt.Len])
		}
	}
}

// Lookup answers how much of a prompt is reusable and where, from memory
// alone: the index and the store's location index.
func (d *Daemon) Lookup(ctx context.Context, req *api.LookupRequest) (*api.LookupResponse, error) {
	start := time.Now()
	_, salt, err := d.resolve(req.GetTenant(), req.GetModel(), req.GetTokens(), false)
	if err != nil {
		return nil, err
	}
	toks := req.GetTokens()
	d.stats.lookups.Add(1)
	cover, err := d.cover(salt, toks)
	if err != nil {
		return nil, err
	}
	resp := &api.LookupResponse{PromptTokens: int32(len(toks))}
	if len(cover) == 0 {
		d.m.lookupSeconds.Observe(time.Since(start).Seconds())
		return resp, nil
	}
	plan, err := kvcache.PlanFromMatches(toks, cover, kvcache.PlanOptions{Salt: salt, BlockSize: d.cfg.ChunkTokens})
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	where := d.locate(plan.Keys)
	for _, sg := range plan.Segments {
		w := where[sg.Source]
		if w == "" {
			continue
		}
		r := &api.Range{Start: int32(sg.Dst), Length: int32(sg.Len()), Chunk: plan.Keys[sg.Source].String(),
			ChunkOffset: int32(sg.SrcStart), Prefix: sg.Prefix, Source: sourceOf(w), Where: w}
		// Adjacent prefix blocks from one tier read as one range.
		if n := len(resp.Ranges); n > 0 && sg.Prefix && resp.Ranges[n-1].Prefix && resp.Ranges[n-1].Where == w &&
			resp.Ranges[n-1].Start+resp.Ranges[n-1].Length == r.Start {
			resp.Ranges[n-1].Length += r.Length
			resp.Ranges[n-1].Chunk = r.Chunk
		} else {
			resp.Ranges = append(resp.Ranges, r)
		}
		resp.ReusableTokens += r.Length
		if sg.Prefix && prefixContiguous(resp.Ranges) {
			resp.PrefixTokens = resp.Ranges[len(resp.Ranges)-1].Start + resp.Ranges[len(resp.Ranges)-1].Length
		}
	}
	d.m.lookupSeconds.Observe(time.Since(start).Seconds())
	return resp, nil
}

// prefixContiguous reports whether the prefix ranges so far run from 0
// without a gap.
func prefixContiguous(rs []*api.Range) bool {
	end := int32(0)
	for _, r := range rs {
		if !r.Prefix {
			continue
		}
		if r.Start != end {
			return false
		}
		end = r.Start + r.Length
	}
	return true
}
