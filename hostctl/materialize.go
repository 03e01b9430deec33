package hostctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// spanIndex finds a token span inside the prompts this daemon stored. A
// prefix chain is matched only from prompt offset 0, so a span that recurs
// at other offsets — a document, a tool output nobody declared — is never
// found in it by the main index. spanIndex indexes the most recent chains
// (control.span_chains of them) as if they were position-independent
// chunks, so FindAll over it says which stored prompt holds a span and at
// which offset.
//
// Store only queues a chain (add); the control loop applies the queue in
// one index update per round (apply), off the request path.
type spanIndex struct {
	ix  *matcher.Index
	max int

	mu      sync.Mutex
	pending []matcher.Entry
	gone    []matcher.ChunkKey
	order   []matcher.ChunkKey // indexed chains, oldest first
	in      map[matcher.ChunkKey]bool
}

func newSpanIndex(opts matcher.Options, max int) (*spanIndex, error) {
	ix, err := matcher.New(opts)
	if err != nil {
		return nil, fmt.Errorf("span index: %w", err)
	}
	return &spanIndex{ix: ix, max: max, in: map[matcher.ChunkKey]bool{}}, nil
}

// add queues a stored prefix chain (its full blocks). Chains shorter than
// a chunk match cannot hold a span worth a chunk.
func (s *spanIndex) add(salt matcher.Salt, toks []matcher.Token) {
	if s.max == 0 || len(toks) < s.ix.Options().MinLen {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(s.pending, matcher.Entry{Salt: salt, Tokens: toks})
	if len(s.pending) > s.max {
		s.pending = slices.Delete(s.pending, 0, len(s.pending)-s.max)
	}
}

// remove queues a chain that left the index (evicted, pruned).
func (s *spanIndex) remove(salt matcher.Salt, toks []matcher.Token) {
	if s.max == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gone = append(s.gone, matcher.ChunkKeyOf(salt, toks))
	if len(s.gone) > s.max {
		s.gone = slices.Delete(s.gone, 0, len(s.gone)-s.max)
	}
}

// apply indexes the queued chains, dropping the oldest beyond max and the
// removed ones, in one atomic update.
func (s *spanIndex) apply() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 && len(s.gone) == 0 {
		return nil
	}
	var add []matcher.Entry
	var addKeys []matcher.ChunkKey
	for _, e := range s.pending {
		k := matcher.ChunkKeyOf(e.Salt, e.Tokens)
		if !s.in[k] && !slices.Contains(addKeys, k) {
			add, addKeys = append(add, e), append(addKeys, k)
		}
	}
	remove := slices.Clone(s.gone)
	for _, k := range s.gone {
		delete(s.in, k)
	}
	s.order = slices.DeleteFunc(s.order, func(k matcher.ChunkKey) bool { return slices.Contains(s.gone, k) })
	for over := len(s.order) + len(add) - s.max; over > 0 && len(s.order) > 0; over-- {
		remove = append(remove, s.order[0])
		delete(s.in, s.order[0])
		s.order = s.order[1:]
	}
	s.pending, s.gone = nil, nil
	if _, _, err := s.ix.Update(add, remove); err != nil {
		return fmt.Errorf("span index: %w", err)
	}
	for _, k := range addKeys {
		s.in[k] = true
	}
	s.order = append(s.order, addKeys...)
	return nil
}

// find returns a stored chain that holds all of toks at an offset other
// than 0, and that offset. A span found only at the start of stored
// prompts begins every prompt it is in: prefix matching already serves
// it, and a chunk of it would only ever compete with the prefix.
func (s *spanIndex) find(salt matcher.Salt, toks []matcher.Token) (matcher.Entry, int, bool) {
	ms, err := s.ix.FindAll(salt, toks)
	if err != nil {
		return matcher.Entry{}, 0, false
	}
	for _, m := range ms {
		if m.ReqOff != 0 || m.Len != len(toks) || m.ChunkOff == 0 {
			continue
		}
		if e, ok := s.ix.Get(m.Chunk); ok {
			return e, m.ChunkOff, true
		}
	}
	return matcher.Entry{}, 0, false
}

// errMaterialize marks why a hot span did not become a chunk.
var errMaterialize = errors.New("hot span not materialised")

// materialize turns hot spans the daemon already holds KV for into
// position-independent chunks: for each of the sketch's candidates that no
// chunk serves yet and that lies inside a stored prompt (at an offset
// other than 0), it slices the span's KV rows out of that prompt's prefix
// blocks, stores them as a chunk whose base position is the span's offset
// there (so the stitcher re-rotates the keys to wherever the span shows up
// next) and indexes it. At most control.materialize candidates are tried
// per round; each candidate is tried once.
func (c *control) materialize(ctx context.Context, hot []matcher.Candidate) {
	d := c.d
	if err := d.spans.apply(); err != nil {
		d.log.Warn("span_index_update_failed", "error", err)
	}
	budget := d.cfg.Control.Materialize
	for _, h := range hot {
		if budget == 0 || ctx.Err() != nil {
			return
		}
		if c.tried[h.Key] {
			continue
		}
		if _, ok := d.index.Get(h.Key); ok {
			continue
		}
		if c.servedByChunks(h) {
			continue
		}
		chain, off, ok := d.spans.find(h.Salt, h.Tokens)
		if !ok {
			continue // no stored prompt holds it (yet)
		}
		budget--
		if len(c.tried) >= 4*d.cfg.Control.HotCapacity {
			clear(c.tried)
		}
		c.tried[h.Key] = true
		err := d.materializeSpan(ctx, h, chain, off)
		c.mu.Lock()
		if err != nil {
			c.matFailed++
		} else {
			c.matChunks++
			c.matTokens += uint64(len(h.Tokens))
		}
		c.mu.Unlock()
		if err != nil {
			d.m.materialized.WithLabelValues("failed").Inc()
			d.log.Debug("materialize_failed", "chunk", h.Key.String(), "error", err)
			continue
		}
		d.m.materialized.WithLabelValues("stored").Inc()
		d.m.materializedTok.Add(float64(len(h.Tokens)))
		d.log.Debug("materialized", "chunk", h.Key.String(), "tokens", len(h.Tokens), "base_pos", off)
	}
}

// servedByChunks reports whether the index's chunks already cover all of
// a candidate: it is reusable anywhere as it is.
func (c *control) servedByChunks(h matcher.Candidate) bool {
	ms, err := c.d.index.FindAll(h.Salt, h.Tokens)
	if err != nil {
		return false
	}
	covered := make([]bool, len(h.Tokens))
	for _, m := range ms {
		if m.Prefix {
			continue
		}
		for p := m.ReqOff; p < m.End(); p++ {
			covered[p] = true
		}
	}
	return !slices.Contains(covered, false)
}

// materializeSpan builds, stores and indexes the chunk of span h found in
// chain at offset off.
func (d *Daemon) materializeSpan(ctx context.Context, h matcher.Candidate, chain matcher.Entry, off int) error {
	m, ok := d.models.bySalt(h.Salt)
	if !ok {
		return fmt.Errorf("salt %v: no such model: %w", h.Salt, errMaterialize)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Limits.PrepareDeadline)
	defer cancel()
	c, err := d.sliceChain(ctx, m, chain, off, h)
	if err != nil {
		return err
	}
	// The chunk is the chain owner's (same salt) and charged to it; a span
	// of shared content is the candidate's tenant's, whose name the salt
	// does not reveal, and is not charged (the tiers evict it as any
	// other).
	tenant := ""
	if chain.Salt == h.Salt {
		if k, err := d.index.KeyOf(matcher.Entry{Salt: chain.Salt, Tokens: chain.Tokens, Prefix: true}); err == nil {
			if e, ok := d.owners.get(k); ok {
				tenant = e.tenant
			}
		}
	}
	if n := d.index.Len(); n+1 > d.cfg.Limits.MaxIndexEntries {
		return fmt.Errorf("index holds %d entries (limits.max_index_entries %d): %w", n, d.cfg.Limits.MaxIndexEntries, ErrOverloaded)
	}
	bytes := kvcache.RawBlobSize(&c.ChunkInfo)
	if tenant != "" {
		if err := d.quotas.reserve(tenant, bytes); err != nil {
			return err
		}
	}
	if err := d.st.enqueue(ctx, c); err != nil {
		if tenant != "" {
			d.quotas.refund(tenant, bytes)
		}
		return fmt.Errorf("store chunk: %w", err)
	}
	d.m.writeback.Inc()
	_, charged, err := d.indexEntries(&storeJob{tenant: tenant, bytes: bytes, entries: []matcher.Entry{{Salt: h.Salt, Tokens: c.Tokens}}})
	if tenant != "" && (err != nil || !charged) {
		d.quotas.refund(tenant, bytes)
	}
	return err
}

// sliceChain copies the KV rows of chain positions [off, off+len(h.Tokens))
// out of the chain's prefix blocks (local tiers only) into a chunk of h.
func (d *Daemon) sliceChain(ctx context.Context, m *model, chain matcher.Entry, off int, h matcher.Candidate) (*kvcache.Chunk, error) {
	bs := d.cfg.ChunkTokens
	n := len(h.Tokens)
	b0, b1 := off/bs, (off+n-1)/bs
	if (b1+1)*bs > len(chain.Tokens) || !slices.Equal(chain.Tokens[off:off+n], h.Tokens) {
		return nil, fmt.Errorf("span [%d, %d) not in the %d-token chain: %w", off, off+n, len(chain.Tokens), errMaterialize)
	}
	keys, err := matcher.PrefixKeys(chain.Salt, chain.Tokens[:(b1+1)*bs], bs, nil)
	if err != nil {
		return nil, fmt.Errorf("prefix keys: %w", err)
	}
	var c *kvcache.Chunk
	for b := b0; b <= b1; b++ {
		if err := d.copyBlock(ctx, m, keys[b], b*bs, chain.Tokens[b*bs:(b+1)*bs], off, h, &c); err != nil {
			return nil, fmt.Errorf("block %d of the chain: %w", b, err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("materialised chunk: %w", err)
	}
	return c, nil
}

// copyBlock reads one prefix block (chain positions from base) and copies
// its rows that fall in the span into *c, creating *c from the first block.
// Every block must be the model's, hold the chain's tokens and share the
// first block's shape and scales: on any doubt, no chunk.
func (d *Daemon) copyBlock(ctx context.Context, m *model, key matcher.ChunkKey, base int, toks []matcher.Token, off int, h matcher.Candidate, c **kvcache.Chunk) error {
	r, _, err := d.st.get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	info := r.Info()
	if info.Model != m.fp || info.Key != key || !slices.Equal(info.Tokens, toks) {
		return fmt.Errorf("stored block %v is not the chain's: %w", key, errMaterialize)
	}
	n := len(h.Tokens)
	if *c == nil {
		*c = &kvcache.Chunk{ChunkInfo: kvcache.ChunkInfo{
			Key: h.Key, Model: m.fp, SaltID: h.Salt.ID(), Tokens: slices.Clone(h.Tokens), BasePos: off,
			Shape: info.Shape, Scales: slices.Clone(info.Scales),
		}, Layers: make([][]byte, info.Shape.Layers)}
		for l := range (*c).Layers {
			(*c).Layers[l] = make([]byte, 2*n*info.Shape.RowBytes())
		}
	}
	ch := *c
	if info.Shape != ch.Shape || !slices.Equal(info.Scales, ch.Scales) {
		return fmt.Errorf("block %v has shape %v, scales %v; the span's first block %v, %v: %w", key, info.Shape, info.Scales, ch.Shape, ch.Scales, errMaterialize)
	}
	rb := info.Shape.RowBytes()
	bs := len(toks)
	lo, hi := max(off, base), min(off+n, base+bs)
	for l := range info.Shape.Layers {
		p, err := r.Layer(ctx, l)
		if err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
		if len(p) != 2*bs*rb {
			return fmt.Errorf("layer %d of block %v has %d bytes, want %d: %w", l, key, len(p), 2*bs*rb, errMaterialize)
		}
		dst := ch.Layers[l]
		copy(dst[(lo-off)*rb:(hi-off)*rb], p[(lo-base)*rb:(hi-base)*rb])           // K
		copy(dst[(n+lo-off)*rb:(n+hi-off)*rb], p[(bs+lo-base)*rb:(bs+hi-base)*rb]) // V
	}
	return nil
}
