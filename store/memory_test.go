package store

import (
	"errors"
	"testing"
	"time"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store/evict"
)

func newMem(t *testing.T, spec *kvcache.ModelSpec, capacity int64, opts MemoryOptions) *Memory {
	t.Helper()
	opts.Model, opts.Capacity = spec, capacity
	m, err := NewMemory(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func blobSize(c *kvcache.Chunk) int64 { return kvcache.RawBlobSize(&c.ChunkInfo) }

func TestMemoryRoundTrip(t *testing.T) {
	spec := smallSpec(t)
	for _, tc := range []struct {
		name  string
		codec kvcache.Codec
	}{{"raw", nil}, {"fp8", kvcache.FP8{}}} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(t, spec, 1<<20, MemoryOptions{BlobOptions: BlobOptions{Codec: tc.codec}})
			c := makeChunk(t, spec, 64, 1)
			if err := m.Put(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			r, err := m.Get(t.Context(), c.Key, kvcache.AllLayers)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if tc.codec == nil {
				checkReader(t, r, c)
				return
			}
			// fp8 is lossy: check shape and that it decodes.
			for l := range spec.Layers {
				b, err := r.Layer(t.Context(), l)
				if err != nil || len(b) != len(c.Layers[l]) {
					t.Fatalf("layer %d: %d bytes, %v", l, len(b), err)
				}
			}
		})
	}
}

func TestMemoryLayerRange(t *testing.T) {
	spec := smallSpec(t)
	m := newMem(t, spec, 1<<20, MemoryOptions{})
	c := makeChunk(t, spec, 64, 1)
	if err := m.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	r, err := m.Get(t.Context(), c.Key, kvcache.LayerRange{Start: 1, End: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Layer(t.Context(), 0); !errors.Is(err, kvcache.ErrLayerRange) {
		t.Fatalf("layer 0 outside [1,3): %v, want ErrLayerRange", err)
	}
	checkReader(t, r, c)
	if _, err := m.Get(t.Context(), c.Key, kvcache.LayerRange{Start: 2, End: 9}); !errors.Is(err, kvcache.ErrLayerRange) {
		t.Fatalf("range past the layers: %v, want ErrLayerRange", err)
	}
}

func TestMemoryStaysWithinBudget(t *testing.T) {
	spec := smallSpec(t)
	c0 := makeChunk(t, spec, 64, 0)
	size := blobSize(c0)
	m := newMem(t, spec, 5*size, MemoryOptions{})
	var keys []matcher.ChunkKey
	for i := range 20 {
		c := makeChunk(t, spec, 64, uint64(i))
		if err := m.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, c.Key)
		if st := m.Stats(); st.Bytes > st.Capacity {
			t.Fatalf("after %d puts: %d bytes stored, capacity %d", i+1, st.Bytes, st.Capacity)
		}
	}
	st := m.Stats()
	if st.Entries != 5 || st.Evictions != 15 {
		t.Fatalf("entries %d evictions %d, want 5 and 15", st.Entries, st.Evictions)
	}
	has, err := m.Has(t.Context(), keys)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, h := range has {
		if h {
			n++
		}
	}
	if n != 5 {
		t.Fatalf("Has reports %d chunks, want 5", n)
	}
}

// A reader's bytes stay valid when its chunk is evicted under it, the
// eviction still happens (new readers miss), and the held bytes count
// against the budget until the reader closes.
func TestMemoryLeaseSurvivesEviction(t *testing.T) {
	spec := smallSpec(t)
	a := makeChunk(t, spec, 64, 100)
	size := blobSize(a)
	m := newMem(t, spec, 3*size, MemoryOptions{Policy: evict.LRU})
	if err := m.Put(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	r, err := m.Get(t.Context(), a.Key, kvcache.AllLayers)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := m.Put(t.Context(), makeChunk(t, spec, 64, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	mustMiss(t, m, a.Key)
	checkReader(t, r, a) // still the right bytes
	st := m.Stats()
	if st.LeasedBytes != size {
		t.Fatalf("leased bytes %d, want %d", st.LeasedBytes, size)
	}
	if st.Bytes+st.LeasedBytes > st.Capacity {
		t.Fatalf("stored %d + leased %d exceed capacity %d", st.Bytes, st.LeasedBytes, st.Capacity)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.LeasedBytes != 0 {
		t.Fatalf("leased bytes %d after close, want 0", st.LeasedBytes)
	}
	if _, err := r.Layer(t.Context(), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("layer after close: %v, want ErrClosed", err)
	}
}

// Readers holding every chunk cannot starve eviction: puts keep evicting
// (the held chunks leave the index), and once held bytes fill the budget a
// put fails with ErrFull until the lease TTL passes, after which it
// succeeds even though the readers never closed.
func TestMemoryEvictionProgressesUnderLeases(t *testing.T) {
	spec := smallSpec(t)
	size := blobSize(makeChunk(t, spec, 64, 0))
	now := time.Unix(1000, 0)
	m := newMem(t, spec, 4*size, MemoryOptions{Policy: evict.LRU, LeaseTTL: time.Minute, Now: func() time.Time { return now }})
	var readers []kvcache.ChunkReader
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()
	put := func(seed uint64) error { return m.Put(t.Context(), makeChunk(t, spec, 64, seed)) }
	for i := range 4 {
		c := makeChunk(t, spec, 64, uint64(i))
		if err := m.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		r, err := m.Get(t.Context(), c.Key, kvcache.AllLayers)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
	}
	// Probing with Has renews nothing (Mooncake #2187): eviction proceeds.
	for range 100 {
		if _, err := m.Has(t.Context(), []matcher.ChunkKey{readers[0].Info().Key}); err != nil {
			t.Fatal(err)
		}
	}
	if err := put(10); err != nil {
		t.Fatalf("put with every chunk leased: %v, want eviction to make room", err)
	}
	// Now 1 stored + held bytes: fill until the held bytes leave no room.
	var full error
	for i := uint64(11); i < 20 && full == nil; i++ {
		full = put(i)
	}
	if !errors.Is(full, ErrFull) {
		t.Fatalf("put with the budget held by readers: %v, want ErrFull", full)
	}
	now = now.Add(2 * time.Minute)
	if err := put(30); err != nil {
		t.Fatalf("put after the lease TTL: %v", err)
	}
	st := m.Stats()
	if st.LeaseExpiry == 0 || st.Bytes+st.LeasedBytes > st.Capacity {
		t.Fatalf("stats %+v: want lease expiries and stored+leased within capacity", st)
	}
	for _, r := range readers { // expired leases do not invalidate readers
		if _, err := r.Layer(t.Context(), 0); err != nil {
			t.Fatalf("reader after its lease expired: %v", err)
		}
	}
}

func TestMemoryHasDoesNotTouchPolicy(t *testing.T) {
	spec := smallSpec(t)
	a, b, c := makeChunk(t, spec, 64, 1), makeChunk(t, spec, 64, 2), makeChunk(t, spec, 64, 3)
	m := newMem(t, spec, 2*blobSize(a), MemoryOptions{Policy: evict.LRU})
	for _, ch := range []*kvcache.Chunk{a, b} {
		if err := m.Put(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Has(t.Context(), []matcher.ChunkKey{a.Key}); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, m, a.Key) // LRU: a is still the oldest use despite Has
	mustGet(t, m, b)
}

func TestMemoryRejects(t *testing.T) {
	spec := smallSpec(t)
	other := testSpec(t, 4, 2, 16)
	other.WeightsID = "another-fine-tune"
	m := newMem(t, spec, 1<<20, MemoryOptions{})
	if err := m.Put(t.Context(), makeChunk(t, other, 64, 1)); !errors.Is(err, kvcache.ErrModelMismatch) {
		t.Fatalf("put of another model's chunk: %v, want ErrModelMismatch", err)
	}
	big := makeChunk(t, spec, 64, 1)
	small := newMem(t, spec, blobSize(big)-1, MemoryOptions{})
	if err := small.Put(t.Context(), big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("put larger than capacity: %v, want ErrTooLarge", err)
	}
	// A blob from outside is verified: a flipped payload bit is refused.
	blob, err := kvcache.AppendBlob(nil, big, nil)
	if err != nil {
		t.Fatal(err)
	}
	blob[len(blob)-1] ^= 1
	if err := m.PutBlobs(t.Context(), [][]byte{blob}); !errors.Is(err, kvcache.ErrChecksum) {
		t.Fatalf("put of a corrupt blob: %v, want ErrChecksum", err)
	}
	mustMiss(t, m, big.Key)
	if _, err := NewMemory(MemoryOptions{Capacity: 0}); !errors.Is(err, ErrConfig) {
		t.Fatalf("zero capacity: %v, want ErrConfig", err)
	}
	if _, err := NewMemory(MemoryOptions{Capacity: 1, Policy: "mru"}); !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown policy: %v, want ErrConfig", err)
	}
}
