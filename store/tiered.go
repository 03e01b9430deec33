package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// blobSource is a tier reader that can hand over the stored encoding (for
// promotion without re-encoding).
type blobSource interface {
	Header() *kvcache.Header
	meta() []byte
	encoded(l int) []byte
}

// verifiedPutter takes blobs whose checksums are already known good.
type verifiedPutter interface {
	putVerified(ctx context.Context, items []verified) error
}

// locator answers "is k here" from local state only, in microseconds.
type locator interface {
	contains(k matcher.ChunkKey) bool
}

// missRecorder is a local tier that learns from misses (a replacement
// policy's ghost entries, an admission filter's counts): missed records
// the miss a Get of k would have recorded, without looking for it.
type missRecorder interface {
	locator
	missed(k matcher.ChunkKey)
}

func (m *Memory) putVerified(ctx context.Context, items []verified) error {
	var errs []error
	for _, it := range items {
		if err := m.insert(it.blob, it.hdr); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// putTo hands verified blobs to s: as they are where s is one of this
// package's tiers, else through PutBlobs (which verifies them again).
func putTo(ctx context.Context, s BlobStore, items []verified) error {
	if vp, ok := s.(verifiedPutter); ok {
		return vp.putVerified(ctx, items)
	}
	blobs := make([][]byte, len(items))
	for i, it := range items {
		blobs[i] = it.blob
	}
	return s.PutBlobs(ctx, blobs)
}

var (
	_ verifiedPutter = (*Memory)(nil)
	_ verifiedPutter = (*Disk)(nil)
	_ verifiedPutter = (*Redis)(nil)
	_ locator        = (*Memory)(nil)
	_ locator        = (*Disk)(nil)
	_ locator        = (*Redis)(nil)
	_ missRecorder   = (*Memory)(nil)
	_ missRecorder   = (*Disk)(nil)
	_ blobSource     = (*memReader)(nil)
	_ blobSource     = (*diskReader)(nil)
	_ blobSource     = (*redisReader)(nil)
)

// MaxTiers is how many tiers a Tiered store stacks at most.
const MaxTiers = 8

// TieredOptions configure a tiered store. The zero value of every field
// selects its default.
type TieredOptions struct {
	// BlobOptions must be the ones the tiers were opened with: Put encodes
	// once with them and hands the same blob to every tier.
	BlobOptions
	// NoPromote turns off promotion: by default a chunk read whole from a
	// lower tier is copied into every tier above it.
	NoPromote bool
	// PromoteBytes bounds the bytes waiting for promotion (readers whose
	// buffers are held until their chunk is copied up); beyond it a hit is
	// simply not promoted. Zero means 256 MiB.
	PromoteBytes int64
	// Logger receives tier failures that were turned into misses; nil
	// discards.
	Logger *slog.Logger
}

// Tiered stacks tiers, fastest first (mem → disk → redis): Get tries them
// in order and promotes a hit into the tiers above; Put writes through to
// all. A tier that fails (down, corrupt) is a miss for that request and the
// next tier is asked: the store keeps serving from what is left.
type Tiered struct {
	cfg    blobConfig
	tiers  []BlobStore
	nLocal int // tiers [0, nLocal) answer from local state (missRecorder)
	names  []string
	log    *slog.Logger
	promoB int64
	noProm bool

	promoQ      chan promotion
	promoQueued atomic.Int64
	wg          sync.WaitGroup
	closeOnce   sync.Once
	mu          sync.RWMutex // held shared while enqueueing, exclusively to close promoQ
	closed      bool

	hits      []atomic.Int64
	misses    atomic.Int64
	failures  atomic.Int64
	promoted  atomic.Int64
	promoDrop atomic.Int64
}

type promotion struct {
	r    kvcache.ChunkReader
	src  blobSource
	from int
	size int64
}

var (
	_ BlobStore   = (*Tiered)(nil)
	_ BatchGetter = (*Tiered)(nil)
)

// NewTiered stacks tiers (at least one, at most MaxTiers), fastest first,
// and starts the promotion worker; Close stops it and closes the tiers.
func NewTiered(opts TieredOptions, tiers ...BlobStore) (*Tiered, error) {
	if len(tiers) == 0 || len(tiers) > MaxTiers {
		return nil, fmt.Errorf("tiered store: %d tiers, want 1..%d: %w", len(tiers), MaxTiers, ErrConfig)
	}
	cfg, err := opts.BlobOptions.resolve()
	if err != nil {
		return nil, fmt.Errorf("tiered store: %w", err)
	}
	t := &Tiered{cfg: cfg, tiers: tiers, log: opts.Logger, promoB: opts.PromoteBytes, noProm: opts.NoPromote,
		hits: make([]atomic.Int64, len(tiers)), promoQ: make(chan promotion, 256)}
	if t.promoB == 0 {
		t.promoB = 256 << 20
	}
	if t.promoB < 0 {
		return nil, fmt.Errorf("tiered store: promote bytes %d, want >= 0: %w", t.promoB, ErrConfig)
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	for _, s := range tiers {
		t.names = append(t.names, s.Stats().Tier)
	}
	for _, s := range tiers {
		if _, ok := s.(missRecorder); !ok {
			break
		}
		t.nLocal++
	}
	t.wg.Add(1)
	go t.promoteLoop()
	return t, nil
}

// Tiers returns the tiers' names, fastest first (the indexes of Location).
func (t *Tiered) Tiers() []string { return append([]string(nil), t.names...) }

// Get implements Store.
func (t *Tiered) Get(ctx context.Context, key matcher.ChunkKey, layers LayerRange) (kvcache.ChunkReader, error) {
	var rd kvcache.ChunkReader
	var err error
	t.GetMany(ctx, []matcher.ChunkKey{key}, layers, func(_ int, x kvcache.ChunkReader, e error) { rd, err = x, e })
	return rd, err
}

// GetMany implements BatchGetter: the tiers are asked in order, each for
// the keys the ones above it did not hold, in one batch (for Redis, one
// pipelined round trip). Hits in the local tiers (memory, disk) are handed
// to ready at once. Keys that no local tier's index holds are sent to the
// remote tiers first — the local tiers only record their misses (the
// policy's and the admission filter's "wanted" signals) — and the local
// opens run in a goroutine this call owns (and waits for) while the round
// trip is in flight, instead of delaying it. ready is called from both
// goroutines, never at the same time.
func (t *Tiered) GetMany(ctx context.Context, keys []matcher.ChunkKey, layers LayerRange, ready func(i int, r kvcache.ChunkReader, err error)) {
	all := make([]int, len(keys))
	for i := range all {
		all[i] = i
	}
	nl := t.nLocal
	if nl == 0 || nl == len(t.tiers) || len(keys) < 2 {
		t.getFrom(ctx, 0, keys, all, layers, ready)
		return
	}
	var local, remote []int
	for i, k := range keys {
		held := false
		for _, s := range t.tiers[:nl] {
			if s.(locator).contains(k) {
				held = true
				break
			}
		}
		if held {
			local = append(local, i)
		} else {
			remote = append(remote, i)
		}
	}
	if len(local) == 0 || len(remote) == 0 {
		t.getFrom(ctx, 0, keys, all, layers, ready)
		return
	}
	var mu sync.Mutex
	serial := func(i int, r kvcache.ChunkReader, err error) {
		mu.Lock()
		defer mu.Unlock()
		ready(i, r, err)
	}
	// The misses are recorded before any remote answer can be handed
	// over (and promoted into these tiers, whose admission may count
	// them): a microsecond a key.
	for _, i := range remote {
		for _, s := range t.tiers[:nl] {
			s.(missRecorder).missed(keys[i])
		}
	}
	var wg sync.WaitGroup
	// Started first, the goroutine runs when this one blocks on the
	// remote round trip: by then the request is on the wire.
	wg.Go(func() { t.getFrom(ctx, 0, keys, local, layers, serial) })
	t.getFrom(ctx, nl, keys, remote, layers, serial)
	wg.Wait()
}

// getFrom asks tiers from, from+1, … in turn for keys[idx…] and answers
// each key through ready: a hit, or after the last tier a miss naming the
// tiers that failed.
func (t *Tiered) getFrom(ctx context.Context, from int, keys []matcher.ChunkKey, idx []int, layers LayerRange, ready func(i int, r kvcache.ChunkReader, err error)) {
	pending := idx
	var failures map[int][]error // tier failures per key, for the miss's error
	sub := make([]matcher.ChunkKey, 0, len(pending))
	for ti := from; ti < len(t.tiers) && len(pending) > 0; ti++ {
		sub = sub[:0]
		for _, i := range pending {
			sub = append(sub, keys[i])
		}
		var next []int
		getMany(ctx, t.tiers[ti], sub, layers, func(j int, r kvcache.ChunkReader, err error) {
			i := pending[j]
			if err == nil {
				t.hits[ti].Add(1)
				ready(i, t.promoting(r, ti, layers), nil)
				return
			}
			if ctxErr := ctx.Err(); ctxErr != nil {
				ready(i, nil, fmt.Errorf("tiered get %v: %w", keys[i], ctxErr))
				return
			}
			if errors.Is(err, kvcache.ErrLayerRange) {
				ready(i, nil, err)
				return
			}
			if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
				t.failures.Add(1)
				t.log.Warn("tier_get_failed", "tier", t.names[ti], "err", err)
				if failures == nil {
					failures = map[int][]error{}
				}
				failures[i] = append(failures[i], err)
			}
			next = append(next, i)
		})
		pending = next
	}
	for _, i := range pending {
		t.misses.Add(1)
		if errs := failures[i]; len(errs) > 0 {
			ready(i, nil, fmt.Errorf("tiered get %v: %w (tier failures: %w)", keys[i], ErrNotFound, errors.Join(errs...)))
			continue
		}
		ready(i, nil, fmt.Errorf("tiered get %v: %w", keys[i], ErrNotFound))
	}
}

// promoting wraps a reader from tier i so that the chunk is copied into
// the tiers above once every layer was read.
func (t *Tiered) promoting(r kvcache.ChunkReader, i int, layers LayerRange) kvcache.ChunkReader {
	if i == 0 || t.noProm || !layers.IsAll() {
		return r
	}
	if src, ok := r.(blobSource); ok {
		return &promotingReader{ChunkReader: r, t: t, src: src, from: i, seen: make([]bool, src.Header().Shape.Layers)}
	}
	return r
}

// promotingReader copies a chunk into the tiers above the one it came from
// once every layer has been read and verified.
type promotingReader struct {
	kvcache.ChunkReader
	t    *Tiered
	src  blobSource
	from int

	mu     sync.Mutex
	seen   []bool
	n      int
	closed bool
}

func (p *promotingReader) Layer(ctx context.Context, l int) ([]byte, error) {
	b, err := p.ChunkReader.Layer(ctx, l)
	if err == nil {
		p.mu.Lock()
		if !p.seen[l] {
			p.seen[l] = true
			p.n++
		}
		p.mu.Unlock()
	}
	return b, err
}

// Close hands the reader to the promotion worker when the whole chunk was
// read (the worker copies it up and closes it), else closes it.
func (p *promotingReader) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	complete := p.n == len(p.seen)
	p.mu.Unlock()
	if complete && p.t.enqueuePromotion(promotion{r: p.ChunkReader, src: p.src, from: p.from, size: p.src.Header().Size}) {
		return nil
	}
	return p.ChunkReader.Close()
}

func (t *Tiered) enqueuePromotion(pr promotion) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	if t.promoQueued.Add(pr.size) > t.promoB {
		t.promoQueued.Add(-pr.size)
		t.promoDrop.Add(1)
		return false
	}
	select {
	case t.promoQ <- pr:
		return true
	default:
		t.promoQueued.Add(-pr.size)
		t.promoDrop.Add(1)
		return false
	}
}

func (t *Tiered) promoteLoop() {
	defer t.wg.Done()
	for pr := range t.promoQ {
		t.promote(pr)
		t.promoQueued.Add(-pr.size)
	}
}

func (t *Tiered) promote(pr promotion) {
	h := pr.src.Header()
	payloads := make([][]byte, len(h.Table))
	for l := range payloads {
		payloads[l] = pr.src.encoded(l)
		if payloads[l] == nil {
			pr.r.Close()
			return
		}
	}
	blob := assembleBlob(pr.src.meta(), h, payloads)
	if err := pr.r.Close(); err != nil {
		t.log.Debug("promotion_close_failed", "err", err)
	}
	ctx := context.Background()
	for i := pr.from - 1; i >= 0; i-- {
		err := putTo(ctx, t.tiers[i], []verified{{blob: blob, hdr: h}})
		if err != nil && !errors.Is(err, ErrNotAdmitted) {
			t.log.Warn("promotion_failed", "tier", t.names[i], "err", err)
			continue
		}
		if err == nil {
			t.promoted.Add(1)
		}
	}
}

// Put implements Store: the chunk is encoded once and written through to
// every tier. Tiers that fail are named in the joined error; the others
// hold the chunk. A tier's admission filter declining is not a failure.
func (t *Tiered) Put(ctx context.Context, c *kvcache.Chunk) error {
	blob, h, err := t.cfg.encode(c)
	if err != nil {
		return fmt.Errorf("tiered put: %w", err)
	}
	return t.putAll(ctx, []verified{{blob: blob, hdr: h}})
}

// PutBlobs implements BlobStore.
func (t *Tiered) PutBlobs(ctx context.Context, blobs [][]byte) error {
	items, errs := t.cfg.verifyAll("tiered put", blobs, nil)
	if err := t.putAll(ctx, items); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (t *Tiered) putVerified(ctx context.Context, items []verified) error {
	return t.putAll(ctx, items)
}

func (t *Tiered) putAll(ctx context.Context, items []verified) error {
	if len(items) == 0 {
		return nil
	}
	var errs []error
	for i, s := range t.tiers {
		if err := putTo(ctx, s, items); err != nil && !errors.Is(err, ErrNotAdmitted) {
			errs = append(errs, fmt.Errorf("tier %s: %w", t.names[i], err))
		}
	}
	return errors.Join(errs...)
}

// Has implements Store: local tiers answer from their indexes; only keys
// none of them holds are asked of the remote ones.
func (t *Tiered) Has(ctx context.Context, keys []matcher.ChunkKey) ([]bool, error) {
	out := make([]bool, len(keys))
	var errs []error
	for i, s := range t.tiers {
		var ask []matcher.ChunkKey
		var idx []int
		for j, k := range keys {
			if !out[j] {
				ask = append(ask, k)
				idx = append(idx, j)
			}
		}
		if len(ask) == 0 {
			break
		}
		got, err := s.Has(ctx, ask)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			errs = append(errs, fmt.Errorf("tier %s: %w", t.names[i], err))
			continue
		}
		for j, ok := range got {
			out[idx[j]] = out[idx[j]] || ok
		}
	}
	if len(errs) > 0 {
		t.log.Warn("tier_has_failed", "err", errors.Join(errs...))
	}
	return out, nil
}

// Location is the set of tiers (bit i = tier i of Tiers()) that hold a
// chunk as far as local state knows.
type Location uint8

// Has reports whether tier i holds the chunk.
func (l Location) Has(i int) bool { return l&(1<<i) != 0 }

// First is the fastest tier holding the chunk, or -1.
func (l Location) First() int {
	for i := range MaxTiers {
		if l.Has(i) {
			return i
		}
	}
	return -1
}

// Locate answers where each key is from local state only — the memory and
// disk indexes and the Redis tier's index of keys it wrote or saw — without
// reading KV or making a round trip. A remote tier's answer can be stale
// (Redis may have evicted the chunk); Get then misses and corrects it.
func (t *Tiered) Locate(keys []matcher.ChunkKey, dst []Location) []Location {
	dst = dst[:0]
	for _, k := range keys {
		var loc Location
		for i, s := range t.tiers {
			if lc, ok := s.(locator); ok && lc.contains(k) {
				loc |= 1 << i
			}
		}
		dst = append(dst, loc)
	}
	return dst
}

// Coverage says how much of a prompt's plan is cached and where.
type Coverage struct {
	// PromptTokens is the prompt's length; PlannedTokens the tokens the
	// plan would fill from stored KV; CachedTokens those of them whose
	// chunk some tier holds.
	PromptTokens, PlannedTokens, CachedTokens int
	// TierTokens[i] are the cached tokens whose fastest copy is in tier i.
	TierTokens []int
	// Chunks and CachedChunks count the plan's sources.
	Chunks, CachedChunks int
}

// Coverage locates every source of plan (Locate) and sums the tokens its
// segments take from each tier.
func (t *Tiered) Coverage(plan *kvcache.Plan) Coverage {
	c := Coverage{PromptTokens: len(plan.Prompt), TierTokens: make([]int, len(t.tiers)), Chunks: len(plan.Keys)}
	locs := t.Locate(plan.Keys, make([]Location, 0, len(plan.Keys)))
	for _, l := range locs {
		if l != 0 {
			c.CachedChunks++
		}
	}
	for _, s := range plan.Segments {
		n := s.Len()
		c.PlannedTokens += n
		if f := locs[s.Source].First(); f >= 0 {
			c.CachedTokens += n
			c.TierTokens[f] += n
		}
	}
	return c
}

// Delete implements Store: every tier.
func (t *Tiered) Delete(ctx context.Context, keys ...matcher.ChunkKey) error {
	var errs []error
	for i, s := range t.tiers {
		if err := s.Delete(ctx, keys...); err != nil {
			errs = append(errs, fmt.Errorf("tier %s: %w", t.names[i], err))
		}
	}
	return errors.Join(errs...)
}

// Stats implements Store: Hits counts hits in any tier, Tiers holds each
// tier's own.
func (t *Tiered) Stats() Stats {
	s := Stats{Tier: "tiered", Up: true, Misses: t.misses.Load(), Errors: t.failures.Load(), Promotions: t.promoted.Load(), Rejected: t.promoDrop.Load()}
	for i, tier := range t.tiers {
		ts := tier.Stats()
		s.Tiers = append(s.Tiers, ts)
		s.Hits += t.hits[i].Load()
		s.Entries += ts.Entries
		s.Bytes += ts.Bytes
		s.Capacity += ts.Capacity
		s.Up = s.Up && ts.Up
	}
	return s
}

// Close stops the promotion worker (after it has copied up what was
// queued) and closes every tier.
func (t *Tiered) Close() error {
	var errs []error
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		close(t.promoQ)
		t.mu.Unlock()
		t.wg.Wait()
		for i, s := range t.tiers {
			if err := s.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close tier %s: %w", t.names[i], err))
			}
		}
	})
	return errors.Join(errs...)
}
