package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store/evict"
)

// MemoryOptions configure a memory tier. Capacity is required; the zero
// value of every other field selects its default.
type MemoryOptions struct {
	BlobOptions
	// Capacity is the byte budget for stored blobs, including evicted ones
	// that readers still hold (until LeaseTTL). Required, > 0.
	Capacity int64
	// Policy names the replacement policy (store/evict); empty means
	// evict.DefaultPolicy.
	Policy string
	// LeaseTTL bounds how long an evicted chunk that a reader still holds
	// counts against Capacity. After it the reader keeps working (the bytes
	// are the garbage collector's once the reader lets go) but no longer
	// blocks new chunks: a reader that is never closed cannot pin memory
	// for ever. Zero means one minute.
	LeaseTTL time.Duration
	// Logger receives lease expiries; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Memory is the DRAM tier: whole blobs in Go memory under a byte budget,
// replaced by an evict.Policy. Readers hold leases: a chunk that is evicted
// while being read leaves the index at once (no new reader can find it, so
// probing and reading cannot renew it and eviction always makes progress),
// and its bytes stay valid for the readers that hold them.
type Memory struct {
	cfg      blobConfig
	capacity int64
	ttl      time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu       sync.Mutex
	entries  map[matcher.ChunkKey]*memEntry
	policy   evict.Policy[matcher.ChunkKey]
	draining map[*memEntry]time.Time // evicted while leased → when
	drainB   int64
	closed   bool
	evicted  []matcher.ChunkKey // scratch

	st memCounters
}

type memCounters struct {
	hits, misses, puts, putErrors, evictions, deletes, rejected, bytesRead, bytesWrite, leaseExpiry atomic.Int64
}

type memEntry struct {
	blob   []byte
	hdr    *kvcache.Header
	codec  kvcache.Codec
	leases int
	gone   bool // out of the index (evicted or deleted)
}

var _ BlobStore = (*Memory)(nil)

// NewMemory returns an empty memory tier.
func NewMemory(opts MemoryOptions) (*Memory, error) {
	cfg, err := opts.BlobOptions.resolve()
	if err != nil {
		return nil, fmt.Errorf("memory tier: %w", err)
	}
	if opts.Capacity <= 0 {
		return nil, fmt.Errorf("memory tier: capacity %d bytes, want > 0: %w", opts.Capacity, ErrConfig)
	}
	name := opts.Policy
	if name == "" {
		name = evict.DefaultPolicy
	}
	pol, err := evict.New(name, opts.Capacity, evict.Options[matcher.ChunkKey]{Hash: keyHash, ExpectedEntries: 1 << 14})
	if err != nil {
		return nil, fmt.Errorf("memory tier: %w: %w", ErrConfig, err)
	}
	m := &Memory{
		cfg: cfg, capacity: opts.Capacity, ttl: opts.LeaseTTL, log: opts.Logger, now: opts.Now,
		entries: make(map[matcher.ChunkKey]*memEntry), policy: pol, draining: make(map[*memEntry]time.Time),
	}
	if m.ttl <= 0 {
		m.ttl = time.Minute
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m, nil
}

// keyHash is the frequency sketches' hash of a chunk key: keys are already
// uniform 128-bit hashes, so their first 8 bytes will do.
func keyHash(k matcher.ChunkKey) uint64 { return binary.LittleEndian.Uint64(k[:8]) }

// Get implements Store. The reader's layers alias the stored blob (raw
// codec: zero copy); they were verified when the chunk was stored.
func (m *Memory) Get(ctx context.Context, key matcher.ChunkKey, layers LayerRange) (kvcache.ChunkReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("memory tier get %v: %w", key, ErrClosed)
	}
	e, ok := m.entries[key]
	m.policy.Touch(key)
	if !ok {
		m.mu.Unlock()
		m.st.misses.Add(1)
		return nil, fmt.Errorf("memory tier get %v: %w", key, ErrNotFound)
	}
	rng, err := resolveRange(layers, e.hdr.Shape.Layers)
	if err != nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("memory tier get %v: %w", key, err)
	}
	e.leases++
	m.mu.Unlock()
	m.st.hits.Add(1)
	return &memReader{m: m, e: e, rng: rng}, nil
}

// missed records a miss of k as Get would, without looking it up (the
// tiered store sends keys no local tier holds straight to the remote ones).
func (m *Memory) missed(k matcher.ChunkKey) {
	m.mu.Lock()
	if !m.closed {
		m.policy.Touch(k)
	}
	m.mu.Unlock()
	m.st.misses.Add(1)
}

// Put implements Store.
func (m *Memory) Put(ctx context.Context, c *kvcache.Chunk) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	blob, h, err := m.cfg.encode(c)
	if err != nil {
		m.st.putErrors.Add(1)
		return fmt.Errorf("memory tier: %w", err)
	}
	return m.insert(blob, h)
}

// PutBlobs implements BlobStore.
func (m *Memory) PutBlobs(ctx context.Context, blobs [][]byte) error {
	var errs []error
	for i, b := range blobs {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		h, err := m.cfg.verifyBlob(b)
		if err != nil {
			m.st.putErrors.Add(1)
			errs = append(errs, fmt.Errorf("memory tier: blob %d: %w", i, err))
			continue
		}
		if err := m.insert(b, h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// insert stores a verified blob; the tier takes ownership of blob.
func (m *Memory) insert(blob []byte, h *kvcache.Header) error {
	codec, err := m.cfg.codecs.Lookup(h.Codec)
	if err != nil {
		m.st.putErrors.Add(1)
		return fmt.Errorf("memory tier put %v: %w", h.Key, err)
	}
	size := int64(len(blob))
	if size > m.capacity {
		m.st.putErrors.Add(1)
		return fmt.Errorf("memory tier put %v: %d bytes, capacity %d: %w", h.Key, size, m.capacity, ErrTooLarge)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("memory tier put %v: %w", h.Key, ErrClosed)
	}
	if _, ok := m.entries[h.Key]; ok {
		return nil // same key, same content
	}
	m.expireLeases()
	m.shrink()
	ok, ev := m.policy.Insert(h.Key, size, m.evicted[:0])
	m.evicted = ev
	if ok {
		m.entries[h.Key] = &memEntry{blob: blob, hdr: h, codec: codec}
	}
	m.dropEvicted()
	// Evicting a chunk that readers hold frees nothing until they let go:
	// keep evicting until what is indexed plus what is held fits.
	m.shrink()
	if !ok {
		m.st.rejected.Add(1)
		if size > m.capacity-m.drainB {
			return fmt.Errorf("memory tier put %v: %d bytes, %d of %d held by readers of evicted chunks: %w", h.Key, size, m.drainB, m.capacity, ErrFull)
		}
		return nil // the policy's admission filter declined: not an error
	}
	m.st.puts.Add(1)
	m.st.bytesWrite.Add(size)
	return nil
}

// shrink evicts until the indexed bytes fit the budget left by readers'
// leases. Each round evicts at least one entry, so it ends.
func (m *Memory) shrink() {
	for {
		m.evicted = m.policy.SetCapacity(max(m.capacity-m.drainB, 0), m.evicted[:0])
		if len(m.evicted) == 0 {
			return
		}
		m.dropEvicted()
	}
}

// dropEvicted unlinks the entries the policy just evicted.
func (m *Memory) dropEvicted() {
	for _, k := range m.evicted {
		e, ok := m.entries[k]
		if !ok {
			continue
		}
		delete(m.entries, k)
		m.st.evictions.Add(1)
		m.unlink(e)
	}
}

// unlink takes e out of the index; if readers hold it, its bytes keep
// counting (draining) until they close or the lease TTL passes.
func (m *Memory) unlink(e *memEntry) {
	e.gone = true
	if e.leases > 0 {
		m.draining[e] = m.now()
		m.drainB += int64(len(e.blob))
	}
}

// expireLeases stops counting evicted-but-held bytes older than the TTL.
func (m *Memory) expireLeases() {
	if len(m.draining) == 0 {
		return
	}
	now := m.now()
	for e, at := range m.draining {
		if now.Sub(at) >= m.ttl {
			delete(m.draining, e)
			m.drainB -= int64(len(e.blob))
			m.st.leaseExpiry.Add(1)
			m.log.Warn("memory_lease_expired", "bytes", len(e.blob), "readers", e.leases, "ttl", m.ttl)
		}
	}
}

func (m *Memory) release(e *memEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.leases--
	if e.leases == 0 && e.gone {
		if _, ok := m.draining[e]; ok {
			delete(m.draining, e)
			m.drainB -= int64(len(e.blob))
		}
	}
}

// Has implements Store: an index lookup that touches no policy state.
func (m *Memory) Has(ctx context.Context, keys []matcher.ChunkKey) ([]bool, error) {
	out := make([]bool, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, k := range keys {
		_, out[i] = m.entries[k]
	}
	return out, nil
}

// contains is Has for one key.
func (m *Memory) contains(k matcher.ChunkKey) bool {
	m.mu.Lock()
	_, ok := m.entries[k]
	m.mu.Unlock()
	return ok
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, keys ...matcher.ChunkKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if e, ok := m.entries[k]; ok {
			delete(m.entries, k)
			m.policy.Remove(k)
			m.unlink(e)
			m.st.deletes.Add(1)
		}
	}
	return nil
}

// Stats implements Store.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	entries, bytes, drain := int64(len(m.entries)), m.policy.Weight(), m.drainB
	m.mu.Unlock()
	return Stats{
		Tier: "mem", Up: true, Entries: entries, Bytes: bytes, Capacity: m.capacity, LeasedBytes: drain,
		Hits: m.st.hits.Load(), Misses: m.st.misses.Load(), Puts: m.st.puts.Load(), PutErrors: m.st.putErrors.Load(),
		Evictions: m.st.evictions.Load(), Deletes: m.st.deletes.Load(), Rejected: m.st.rejected.Load(),
		BytesRead: m.st.bytesRead.Load(), BytesWrite: m.st.bytesWrite.Load(), LeaseExpiry: m.st.leaseExpiry.Load(),
	}
}

// Close implements Store: it drops the index. Open readers stay valid.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.entries = map[matcher.ChunkKey]*memEntry{}
	m.draining = map[*memEntry]time.Time{}
	m.drainB = 0
	return nil
}

// memReader serves one leased entry.
type memReader struct {
	m      *Memory
	e      *memEntry
	rng    LayerRange
	closed atomic.Bool

	mu      sync.Mutex
	decoded [][]byte // non-raw codecs only
}

func (r *memReader) Info() *kvcache.ChunkInfo      { return &r.e.hdr.ChunkInfo }
func (r *memReader) Available() kvcache.LayerRange { return r.rng }

// Header returns the stored blob's header.
func (r *memReader) Header() *kvcache.Header { return r.e.hdr }

func (r *memReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("memory reader %v: layer %d: %w", r.e.hdr.Key, l, ErrClosed)
	}
	if !r.rng.Contains(l) {
		return nil, fmt.Errorf("memory reader %v: layer %d not in [%d, %d): %w", r.e.hdr.Key, l, r.rng.Start, r.rng.End, kvcache.ErrLayerRange)
	}
	e := r.e.hdr.Table[l]
	payload := r.e.blob[e.Offset : e.Offset+e.Length : e.Offset+e.Length]
	if r.e.hdr.Codec == kvcache.CodecRaw {
		r.m.st.bytesRead.Add(e.Length)
		return payload, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.decoded == nil {
		r.decoded = make([][]byte, r.e.hdr.Shape.Layers)
	}
	if d := r.decoded[l]; d != nil {
		return d, nil
	}
	d, err := r.e.hdr.DecodeLayer(r.e.codec, l, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("memory reader %v: %w: %w", r.e.hdr.Key, ErrCorrupt, err)
	}
	r.decoded[l] = d
	r.m.st.bytesRead.Add(int64(len(d)))
	return d, nil
}

// encoded returns layer l's stored payload (for promotion and moves).
func (r *memReader) encoded(l int) []byte {
	e := r.e.hdr.Table[l]
	return r.e.blob[e.Offset : e.Offset+e.Length]
}

// meta returns the stored blob's metadata bytes.
func (r *memReader) meta() []byte { return r.e.blob[:r.e.hdr.MetaSize] }

func (r *memReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.m.release(r.e)
	}
	return nil
}
