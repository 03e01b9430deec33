package hostctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store"
)

// storeJob is one Store call being received: the chunks the prompt is cut
// into and the index entries they will make.
type storeJob struct {
	m       *model
	salt    matcher.Salt
	tenant  string
	toks    []matcher.Token
	chunks  []*kvcache.Chunk
	spans   [][2]int // token range of each chunk in the prompt
	entries []matcher.Entry
	bytes   int64
	layer   []byte // the layer being received
}

// newStoreJob validates a Store header and cuts the prompt by the matcher's
// rules: every whole block of chunk_tokens (a prefix chain) unless
// skip_prefix, and every declared chunk. Chunks the store already holds are
// left out.
func (d *Daemon) newStoreJob(ctx context.Context, h *api.StoreHeader) (*storeJob, error) {
	if h.GetShared() && !d.cfg.Tenancy.AllowSharedWrites {
		return nil, fmt.Errorf("shared store: tenancy.allow_shared_writes is off: %w", ErrPermission)
	}
	m, salt, err := d.resolve(h.GetTenant(), h.GetModel(), h.GetTokens(), h.GetShared())
	if err != nil {
		return nil, err
	}
	toks := h.GetTokens()
	if total := int64(m.shape.Bytes(len(toks))); total > int64(d.cfg.Limits.StoreBytes) {
		return nil, fmt.Errorf("store of %d tokens is %d bytes of KV, limit %d (limits.store_bytes): %w", len(toks), total, d.cfg.Limits.StoreBytes, ErrTooLarge)
	}
	var scales []kvcache.Scales
	if m.shape.DType == kvcache.FP8E4M3 {
		if len(h.GetScaleK()) != m.shape.Layers || len(h.GetScaleV()) != m.shape.Layers {
			return nil, fmt.Errorf("fp8 KV needs %d scale_k and scale_v values, got %d and %d: %w", m.shape.Layers, len(h.GetScaleK()), len(h.GetScaleV()), ErrBadRequest)
		}
		for l := range m.shape.Layers {
			scales = append(scales, kvcache.Scales{K: h.GetScaleK()[l], V: h.GetScaleV()[l]})
		}
	}
	job := &storeJob{m: m, salt: salt, tenant: h.GetTenant(), toks: toks}
	if h.GetShared() {
		job.tenant = ""
	}
	var keys []matcher.ChunkKey
	var infos []kvcache.ChunkInfo
	add := func(key matcher.ChunkKey, from, to int) {
		keys = append(keys, key)
		infos = append(infos, kvcache.ChunkInfo{
			Key: key, Model: m.fp, SaltID: salt.ID(), Tokens: slices.Clone(toks[from:to]), BasePos: from,
			Shape: m.shape, Scales: scales,
		})
		job.spans = append(job.spans, [2]int{from, to})
	}
	bs := d.cfg.ChunkTokens
	if !h.GetSkipPrefix() && len(toks) >= bs {
		pk, err := matcher.PrefixKeys(salt, toks, bs, nil)
		if err != nil {
			return nil, fmt.Errorf("prefix keys: %w", err)
		}
		for i, k := range pk {
			add(k, i*bs, (i+1)*bs)
		}
		job.entries = append(job.entries, matcher.Entry{Salt: salt, Tokens: toks[:len(pk)*bs], Prefix: true})
	}
	for i, sp := range h.GetChunks() {
		from, n := int(sp.GetStart()), int(sp.GetLength())
		if from < 0 || n < d.cfg.MinChunkTokens || from+n > len(toks) {
			return nil, fmt.Errorf("chunks[%d] = [%d, %d+%d): must lie in the %d-token prompt and span at least %d tokens (min_chunk_tokens): %w",
				i, from, from, n, len(toks), d.cfg.MinChunkTokens, ErrBadRequest)
		}
		add(matcher.ChunkKeyOf(salt, toks[from:from+n]), from, from+n)
		job.entries = append(job.entries, matcher.Entry{Salt: salt, Tokens: toks[from : from+n]})
	}
	if len(keys) > 0 {
		has, err := d.st.has(ctx, keys)
		if err != nil {
			// A tier that cannot answer: store everything again (Put of
			// present content is a no-op).
			has = make([]bool, len(keys))
		}
		var spans [][2]int
		for i, ci := range infos {
			if has[i] {
				continue
			}
			c := &kvcache.Chunk{ChunkInfo: ci, Layers: make([][]byte, m.shape.Layers)}
			job.chunks = append(job.chunks, c)
			spans = append(spans, job.spans[i])
			job.bytes += kvcache.RawBlobSize(&c.ChunkInfo)
		}
		job.spans = spans
	}
	return job, nil
}

// putLayer places one whole layer (K rows of every prompt token, then V
// rows) into the job's chunks.
func (j *storeJob) putLayer(l int, data []byte) {
	row := j.m.shape.RowBytes()
	vOff := len(j.toks) * row
	for i, c := range j.chunks {
		from, to := j.spans[i][0], j.spans[i][1]
		n := (to - from) * row
		buf := make([]byte, 2*n)
		copy(buf[:n], data[from*row:to*row])
		copy(buf[n:], data[vOff+from*row:vOff+to*row])
		c.Layers[l] = buf
	}
}

// Store receives a prompt's KV from recv (the header first), cuts it into
// chunks, queues them for write-back and indexes the prompt. Nothing is
// indexed or queued unless every layer arrived whole.
func (d *Daemon) Store(ctx context.Context, recv func() (*api.StoreRequest, error)) (*api.StoreResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Limits.StoreTimeout)
	defer cancel()
	first, err := recv()
	if err != nil {
		return nil, fmt.Errorf("store: receive header: %w", err)
	}
	h := first.GetHeader()
	if h == nil {
		return nil, fmt.Errorf("store: the first message must be the header: %w", ErrBadRequest)
	}
	job, err := d.newStoreJob(ctx, h)
	if err != nil {
		return nil, err
	}
	if n := d.index.Len(); n+len(job.entries) > d.cfg.Limits.MaxIndexEntries {
		d.m.quotaRejects.WithLabelValues("index").Inc()
		return nil, fmt.Errorf("index holds %d entries (limits.max_index_entries %d): %w", n, d.cfg.Limits.MaxIndexEntries, ErrOverloaded)
	}
	d.stats.stores.Add(1)
	if job.tenant != "" && job.bytes > 0 {
		if err := d.quotas.reserve(job.tenant, job.bytes); err != nil {
			return nil, err
		}
	}
	committed := false
	defer func() {
		if !committed && job.tenant != "" && job.bytes > 0 {
			d.quotas.refund(job.tenant, job.bytes)
		}
	}()
	if err := d.receiveLayers(job, recv); err != nil {
		return nil, err
	}
	queued, qbytes := 0, int64(0)
	var qerr error
	for _, c := range job.chunks {
		if err := d.st.enqueue(ctx, c); err != nil {
			d.log.Warn("writeback_rejected", "chunk", c.Key.String(), "error", err)
			qerr = errors.Join(qerr, err)
			continue
		}
		queued++
		qbytes += kvcache.RawBlobSize(&c.ChunkInfo)
		d.m.writeback.Inc()
	}
	if qerr != nil {
		// Chunks already queued stay (content-addressed, harmless); the
		// prompt is not indexed, so no plan ever leans on a missing part.
		return nil, fmt.Errorf("store: %d of %d chunks refused: %w", len(job.chunks)-queued, len(job.chunks), qerr)
	}
	indexed, charged, err := d.indexEntries(job)
	if err != nil {
		return nil, err
	}
	committed = charged
	if job.tenant != "" && job.bytes > qbytes {
		d.quotas.refund(job.tenant, job.bytes-qbytes)
	}
	return &api.StoreResponse{Chunks: int32(queued), Bytes: uint64(qbytes), IndexedTokens: int32(indexed)}, nil
}

// receiveLayers reads every layer, in order, each possibly in parts.
func (d *Daemon) receiveLayers(job *storeJob, recv func() (*api.StoreRequest, error)) error {
	shape := job.m.shape
	lb := shape.LayerBytes(len(job.toks))
	next, off := 0, 0
	for next < shape.Layers {
		msg, err := recv()
		if err == io.EOF {
			return fmt.Errorf("store: stream ended after %d of %d layers (layer %d at byte %d of %d): %w", next, shape.Layers, next, off, lb, ErrBadRequest)
		}
		if err != nil {
			return fmt.Errorf("store: receive layer %d: %w", next, err)
		}
		ly := msg.GetLayer()
		if ly == nil {
			return fmt.Errorf("store: a second header at layer %d: %w", next, ErrBadRequest)
		}
		if int(ly.GetLayer()) != next || ly.GetOffset() != uint64(off) {
			return fmt.Errorf("store: got layer %d offset %d, want layer %d offset %d (layers in order, parts contiguous): %w",
				ly.GetLayer(), ly.GetOffset(), next, off, ErrBadRequest)
		}
		data := ly.GetData()
		if off+len(data) > lb {
			return fmt.Errorf("store: layer %d has %d bytes, the model's KV for %d tokens is %d per layer (%s): %w",
				next, off+len(data), len(job.toks), lb, shape, ErrBadRequest)
		}
		if off == 0 && len(data) == lb {
			job.putLayer(next, data) // one message: no copy
		} else {
			if job.layer == nil {
				job.layer = make([]byte, lb)
			}
			copy(job.layer[off:], data)
			off += len(data)
			if off < lb {
				continue
			}
			job.putLayer(next, job.layer)
		}
		next, off = next+1, 0
	}
	if msg, err := recv(); err != io.EOF {
		if err != nil {
			return fmt.Errorf("store: after the last layer: %w", err)
		}
		_ = msg
		return fmt.Errorf("store: messages after the last layer: %w", ErrBadRequest)
	}
	return nil
}

// indexEntries adds a stored prompt's entries to the index, the journal and
// the sync log. It returns the tokens newly indexed and whether the call's
// bytes were charged to one of its entries (false when every entry was
// already there: a concurrent Store of the same prompt won).
func (d *Daemon) indexEntries(job *storeJob) (int, bool, error) {
	keys, err := d.index.Add(job.entries...)
	if err != nil {
		return 0, false, fmt.Errorf("index: %w", err)
	}
	n, charged := 0, false
	for i, e := range job.entries {
		bytes := int64(0)
		if !charged {
			bytes = job.bytes // the whole call is charged to its first new entry
		}
		info := &entryInfo{salt: e.Salt, prefix: e.Prefix, tokens: slices.Clone(e.Tokens), tenant: job.tenant, bytes: bytes}
		if !d.owners.addLocal(keys[i], info) {
			continue
		}
		charged = true
		n += len(e.Tokens)
		if e.Prefix {
			d.spans.add(e.Salt, info.tokens)
		}
		if err := d.jnl.add(&journalRecord{Op: jAdd, Prefix: e.Prefix, Salt: e.Salt, Bytes: bytes, Tenant: job.tenant, Tokens: info.tokens}); err != nil {
			d.log.Warn("journal_append_failed", "error", err)
		}
	}
	d.m.indexEntries.Set(float64(d.index.Len()))
	return n, charged, nil
}

// replayJournal rebuilds the index from the journal at start.
func (d *Daemon) replayJournal() error {
	for _, r := range d.jnl.recs {
		if _, ok := d.models.bySalt(r.Salt); !ok {
			continue // a model no longer served
		}
		e := matcher.Entry{Salt: r.Salt, Tokens: r.Tokens, Prefix: r.Prefix}
		keys, err := d.index.Add(e)
		if err != nil {
			d.log.Warn("journal_entry_skipped", "error", err)
			continue
		}
		info := &entryInfo{salt: r.Salt, prefix: r.Prefix, tokens: r.Tokens, tenant: r.Tenant, bytes: r.Bytes}
		if !d.owners.addLocal(keys[0], info) {
			continue
		}
		if r.Prefix {
			d.spans.add(r.Salt, r.Tokens)
		}
		if r.Tenant != "" && r.Bytes > 0 {
			if err := d.quotas.reserve(r.Tenant, r.Bytes); err != nil {
				d.log.Warn("journal_quota_exceeded", "error", err)
			}
		}
	}
	d.jnl.recs = nil
	d.m.indexEntries.Set(float64(d.index.Len()))
	return nil
}

// affected finds the caller's index entries a prompt touches: the prefix
// chains whose blocks it starts with, and the chunks it contains.
func (d *Daemon) affected(salt matcher.Salt, toks []matcher.Token) ([]matcher.ChunkKey, []matcher.ChunkKey, error) {
	var entries, chunks []matcher.ChunkKey
	pk, _ := matcher.PrefixKeys(salt, toks, d.cfg.ChunkTokens, nil)
	for _, k := range pk {
		if e, ok := d.index.Get(k); ok && e.Prefix && e.Salt == salt {
			entries = append(entries, k)
		}
	}
	chunks = append(chunks, pk...)
	ms, err := d.index.FindAll(salt, toks)
	if err != nil && !errors.Is(err, matcher.ErrTooManyCandidates) {
		return nil, nil, fmt.Errorf("match prompt: %w", err)
	}
	for _, mt := range ms {
		if mt.Prefix || mt.Shared != salt.IsShared() {
			continue
		}
		if e, ok := d.index.Get(mt.Chunk); ok && e.Salt == salt && !slices.Contains(entries, mt.Chunk) {
			entries = append(entries, mt.Chunk)
			chunks = append(chunks, mt.Chunk)
		}
	}
	return entries, chunks, nil
}

// Evict removes the caller's entries a prompt touches and their chunks.
func (d *Daemon) Evict(ctx context.Context, req *api.EvictRequest) (*api.EvictResponse, error) {
	if req.GetShared() && !d.cfg.Tenancy.AllowSharedWrites {
		return nil, fmt.Errorf("evict shared content: tenancy.allow_shared_writes is off: %w", ErrPermission)
	}
	_, salt, err := d.resolve(req.GetTenant(), req.GetModel(), req.GetTokens(), req.GetShared())
	if err != nil {
		return nil, err
	}
	entries, chunks, err := d.affected(salt, req.GetTokens())
	if err != nil {
		return nil, err
	}
	removed := d.unindex(entries)
	if err := d.st.delete(ctx, chunks); err != nil {
		return nil, fmt.Errorf("evict %d chunks: %w", len(chunks), err)
	}
	d.m.indexEntries.Set(float64(d.index.Len()))
	return &api.EvictResponse{Entries: int32(removed), Chunks: int32(len(chunks))}, nil
}

// unindex removes entries from the index, the owners, the journal and the
// control loop, giving their bytes back to their tenants' quotas.
func (d *Daemon) unindex(entries []matcher.ChunkKey) int {
	removed := d.index.Remove(entries...)
	for _, k := range entries {
		e, ok := d.owners.remove(k)
		if !ok {
			continue
		}
		if e.tenant != "" && e.bytes > 0 {
			d.quotas.refund(e.tenant, e.bytes)
		}
		if e.local {
			if err := d.jnl.add(&journalRecord{Op: jRemove, Salt: e.salt, Key: k}); err != nil {
				d.log.Warn("journal_append_failed", "error", err)
			}
			if e.prefix {
				d.spans.remove(e.salt, e.tokens)
			}
		}
	}
	d.ctl.forget(entries)
	d.m.indexEntries.Set(float64(d.index.Len()))
	return removed
}

// Pin pins (or unpins) the caller's entries a prompt touches on the
// accelerator's table.
func (d *Daemon) Pin(ctx context.Context, req *api.PinRequest) (*api.PinResponse, error) {
	_, salt, err := d.resolve(req.GetTenant(), req.GetModel(), req.GetTokens(), false)
	if err != nil {
		return nil, err
	}
	entries, _, err := d.affected(salt, req.GetTokens())
	if err != nil {
		return nil, err
	}
	n := 0
	for _, k := range entries {
		if d.owners.setPinned(k, !req.GetUnpin()) {
			n++
		}
	}
	d.ctl.kick()
	return &api.PinResponse{Entries: int32(n)}, nil
}

// Hint registers a prompt before its Prepare: it feeds the hot sketch,
// shows it to the accelerator, and starts fetching its chunks into the
// fastest tier, in the background and bounded.
func (d *Daemon) Hint(ctx context.Context, req *api.HintRequest) (*api.HintResponse, error) {
	_, salt, err := d.resolve(req.GetTenant(), req.GetModel(), req.GetTokens(), false)
	if err != nil {
		return nil, err
	}
	toks := req.GetTokens()
	if err := d.hot.Observe(d.now(), salt, toks); err != nil {
		d.log.Debug("hot_observe_failed", "error", err)
	}
	cover, err := d.cover(salt, toks)
	if err != nil || len(cover) == 0 {
		return &api.HintResponse{}, err
	}
	plan, err := kvcache.PlanFromMatches(toks, cover, kvcache.PlanOptions{Salt: salt, BlockSize: d.cfg.ChunkTokens})
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	return &api.HintResponse{Prefetching: int32(d.warm(plan.Keys))}, nil
}

// warm fetches keys in the background so a following Prepare finds them in
// memory; it starts nothing when the warmer is busy (hints are best effort).
func (d *Daemon) warm(keys []matcher.ChunkKey) int {
	select {
	case d.warmSem <- struct{}{}:
	default:
		d.m.quotaRejects.WithLabelValues("hint").Inc()
		return 0
	}
	d.warmers.Add(1)
	go func() {
		defer d.warmers.Done()
		defer func() { <-d.warmSem }()
		ctx, cancel := context.WithTimeout(d.bgCtx, d.cfg.Limits.PrepareDeadline)
		defer cancel()
		f, err := d.st.pf.Fetch(ctx, keys, store.FetchOptions{})
		if err != nil {
			return
		}
		f.Wait(ctx)
		f.Close()
	}()
	return len(keys)
}
