package store

import (
	"context"
	"fmt"
	"hash/crc32"
	"sync/atomic"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// Store holds chunk blobs. Every tier and the tiered store implement it.
// Implementations are safe for concurrent use.
type Store interface {
	// Get returns a reader over the layers in layers (the zero range means
	// all) of the chunk stored under key. Its metadata is read and checked
	// at once; each layer is fetched, verified and decoded when Layer asks
	// for it (or before), so a caller can start on layer 0 while the rest
	// is in flight. A chunk that is absent, or whose key, model or
	// checksums are in doubt, is ErrNotFound. The caller must Close the
	// reader: it holds a lease on the stored bytes.
	Get(ctx context.Context, key matcher.ChunkKey, layers kvcache.LayerRange) (kvcache.ChunkReader, error)
	// Put stores c (encoded with the store's codec) under c.Key. Storing a
	// key that is already present is a no-op: keys name content.
	Put(ctx context.Context, c *kvcache.Chunk) error
	// Has reports for each key whether Get would find it, without reading
	// KV and without renewing anything an eviction policy looks at.
	Has(ctx context.Context, keys []matcher.ChunkKey) ([]bool, error)
	// Delete removes keys; absent keys are ignored.
	Delete(ctx context.Context, keys ...matcher.ChunkKey) error
	// Stats returns counters and occupancy.
	Stats() Stats
	// Close releases the store. Readers already handed out stay valid
	// until they are closed.
	Close() error
}

// BlobStore is a Store that also takes already encoded blobs, so that
// promotion, write-back and tier-to-tier moves do not decode and re-encode.
type BlobStore interface {
	Store
	// PutBlobs stores each blob (one whole chunk blob, see docs/formats.md)
	// under the key in its header. Blobs are verified (header, checksums,
	// model) before anything is stored. The tier may write them together
	// (the disk tier packs them into one file). The returned error joins
	// the failures; blobs that are not named in it were stored.
	PutBlobs(ctx context.Context, blobs [][]byte) error
}

// BatchGetter is a Store that opens many chunks at once more cheaply than
// one by one: the Redis tier reads the metadata and first layer group of
// all of them in one pipelined round trip (one per node of a Cluster), and
// the tiered store answers what its local tiers hold at once and asks each
// lower tier for the rest in one batch. The Prefetcher opens a request's
// chunks through it when its source has it.
type BatchGetter interface {
	// GetMany opens every key as Get(ctx, key, layers) would and calls
	// ready(i, reader, err) exactly once for each keys[i], as soon as that
	// chunk's answer is known (local hits while a remote tier's round trip
	// is in flight, so their consumers can start); it returns after the
	// last call. Calls to ready never overlap, but they may come from a
	// goroutine GetMany started. ready owns the readers it is handed.
	GetMany(ctx context.Context, keys []matcher.ChunkKey, layers LayerRange, ready func(i int, r kvcache.ChunkReader, err error))
}

// getMany is BatchGetter.GetMany where s has it, else Get key by key.
func getMany(ctx context.Context, s Store, keys []matcher.ChunkKey, layers LayerRange, ready func(int, kvcache.ChunkReader, error)) {
	if b, ok := s.(BatchGetter); ok {
		b.GetMany(ctx, keys, layers, ready)
		return
	}
	for i, k := range keys {
		r, err := s.Get(ctx, k, layers)
		ready(i, r, err)
	}
}

// LayerRange selects layers [Start, End); the zero value means all.
type LayerRange = kvcache.LayerRange

// Stats describes a tier or, with Tiers set, a tiered store.
type Stats struct {
	// Tier is the tier's kind and name ("mem", "disk:/var/lib/kvloom",
	// "redis://…", "tiered").
	Tier string `json:"tier"`
	// Up is false while the tier cannot be reached.
	Up bool `json:"up"`
	// Entries and Bytes are what is stored; Capacity is the budget (0 when
	// the tier does not know it, as with Redis).
	Entries  int64 `json:"entries"`
	Bytes    int64 `json:"bytes"`
	Capacity int64 `json:"capacity"`
	// LeasedBytes are evicted bytes that readers still hold (memory tier).
	LeasedBytes int64 `json:"leased_bytes,omitempty"`
	// Files are the disk tier's pack files.
	Files int64 `json:"files,omitempty"`

	Hits        int64 `json:"hits"`
	Misses      int64 `json:"misses"`
	Puts        int64 `json:"puts"`
	PutErrors   int64 `json:"put_errors"`
	Evictions   int64 `json:"evictions"`
	Deletes     int64 `json:"deletes"`
	Rejected    int64 `json:"rejected"`    // admission filter or policy declined
	Corrupt     int64 `json:"corrupt"`     // verification failures (quarantined)
	Errors      int64 `json:"errors"`      // I/O or network errors
	Promotions  int64 `json:"promotions"`  // chunks copied up on a hit (tiered)
	BytesRead   int64 `json:"bytes_read"`  // payload bytes delivered
	BytesWrite  int64 `json:"bytes_write"` // blob bytes stored
	LeaseExpiry int64 `json:"lease_expiry,omitempty"`

	Tiers []Stats `json:"tiers,omitempty"`
}

// BlobOptions say which blobs a tier accepts and how it encodes chunks.
// The zero value accepts any model, encodes with the raw codec and reads
// raw blobs only.
type BlobOptions struct {
	// Model, when set, is the model whose chunks the tier stores and
	// serves: a Put of another model's chunk fails with
	// kvcache.ErrModelMismatch, and a stored blob of another model is a
	// miss.
	Model *kvcache.ModelSpec
	// Codec encodes chunks on Put; nil means kvcache.Raw.
	Codec kvcache.Codec
	// Codecs are the codecs blobs may use when read; nil means Raw and
	// Codec.
	Codecs *kvcache.Codecs
	// MaxBlobBytes bounds one blob; zero means 4 GiB.
	MaxBlobBytes int64
}

// DefaultMaxBlobBytes is BlobOptions.MaxBlobBytes' default.
const DefaultMaxBlobBytes = 4 << 30

// blobConfig is BlobOptions resolved.
type blobConfig struct {
	model  *kvcache.ModelSpec
	codec  kvcache.Codec
	codecs *kvcache.Codecs
	max    int64
}

func (o BlobOptions) resolve() (blobConfig, error) {
	c := blobConfig{model: o.Model, codec: o.Codec, codecs: o.Codecs, max: o.MaxBlobBytes}
	if c.codec == nil {
		c.codec = kvcache.Raw{}
	}
	if c.max == 0 {
		c.max = DefaultMaxBlobBytes
	}
	if c.max < 0 {
		return blobConfig{}, fmt.Errorf("max blob bytes %d, want > 0: %w", c.max, ErrConfig)
	}
	if c.codecs == nil {
		var cs []kvcache.Codec
		if c.codec.ID() != kvcache.CodecRaw {
			cs = append(cs, c.codec)
		}
		r, err := kvcache.NewCodecs(cs...)
		if err != nil {
			return blobConfig{}, fmt.Errorf("codecs: %w: %w", ErrConfig, err)
		}
		c.codecs = r
	}
	if c.model != nil {
		if err := c.model.Validate(); err != nil {
			return blobConfig{}, fmt.Errorf("model: %w: %w", ErrConfig, err)
		}
	}
	return c, nil
}

func (c *blobConfig) decodeOptions(layers LayerRange) kvcache.DecodeOptions {
	return kvcache.DecodeOptions{Model: c.model, Codecs: c.codecs, MaxBytes: c.max, Layers: layers}
}

// encode turns a chunk into a blob after checking it belongs here.
func (c *blobConfig) encode(ch *kvcache.Chunk) ([]byte, *kvcache.Header, error) {
	if ch == nil {
		return nil, nil, fmt.Errorf("put nil chunk: %w", kvcache.ErrShape)
	}
	if err := ch.Validate(); err != nil {
		return nil, nil, err
	}
	if c.model != nil {
		if fp := c.model.Fingerprint(); fp != ch.Model {
			return nil, nil, fmt.Errorf("put chunk %v: model fingerprint %x…, store serves %s (%x…): %w", ch.Key, ch.Model[:8], c.model.Name, fp[:8], kvcache.ErrModelMismatch)
		}
	}
	if size := kvcache.RawBlobSize(&ch.ChunkInfo); c.codec.ID() == kvcache.CodecRaw && size > c.max {
		return nil, nil, fmt.Errorf("put chunk %v: %d-byte blob, limit %d: %w", ch.Key, size, c.max, ErrTooLarge)
	}
	blob, err := kvcache.AppendBlob(nil, ch, c.codec)
	if err != nil {
		return nil, nil, fmt.Errorf("encode chunk %v: %w", ch.Key, err)
	}
	if int64(len(blob)) > c.max {
		return nil, nil, fmt.Errorf("put chunk %v: %d-byte blob, limit %d: %w", ch.Key, len(blob), c.max, ErrTooLarge)
	}
	h, err := kvcache.ParseHeader(blob, c.decodeOptions(kvcache.AllLayers))
	if err != nil {
		return nil, nil, fmt.Errorf("encode chunk %v: %w", ch.Key, err)
	}
	return blob, h, nil
}

// verifyAll verifies blobs (verifyBlob) for a PutBlobs: it returns the
// good ones and an error for each bad one, naming its index under what,
// and counts the bad ones in failed when that is set.
func (c *blobConfig) verifyAll(what string, blobs [][]byte, failed *atomic.Int64) ([]verified, []error) {
	items := make([]verified, 0, len(blobs))
	var errs []error
	for i, b := range blobs {
		h, err := c.verifyBlob(b)
		if err != nil {
			if failed != nil {
				failed.Add(1)
			}
			errs = append(errs, fmt.Errorf("%s: blob %d: %w", what, i, err))
			continue
		}
		items = append(items, verified{blob: b, hdr: h})
	}
	return items, errs
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// verifyBlob checks a whole blob from outside: header, structure, model and
// every layer's checksum. It returns the parsed header.
func (c *blobConfig) verifyBlob(blob []byte) (*kvcache.Header, error) {
	if int64(len(blob)) > c.max {
		return nil, fmt.Errorf("blob of %d bytes, limit %d: %w", len(blob), c.max, ErrTooLarge)
	}
	r, err := kvcache.OpenBlob(blob, c.decodeOptions(kvcache.AllLayers))
	if err != nil {
		return nil, err
	}
	h := r.Header()
	for l, e := range h.Table {
		payload := blob[e.Offset : e.Offset+e.Length]
		if h.Codec == kvcache.CodecRaw {
			// DecodeLayer with the raw codec is the CRC (kvcache's fast
			// kernel) and nothing else.
			if _, err := h.DecodeLayer(kvcache.Raw{}, l, payload, nil); err != nil {
				return nil, err
			}
		} else if got := crc32.Checksum(payload, castagnoli); got != e.CRC {
			return nil, fmt.Errorf("blob %v: layer %d at offset %d: crc32c %08x, table says %08x: %w", h.Key, l, e.Offset, got, e.CRC, kvcache.ErrChecksum)
		}
	}
	return h, nil
}

// blobMeta returns the blob's metadata bytes (header, tokens, table, CRC).
func blobMeta(blob []byte, h *kvcache.Header) []byte { return blob[:h.MetaSize] }

// assembleBlob builds a whole blob from its metadata bytes and encoded
// layer payloads (all of them, in order).
func assembleBlob(meta []byte, h *kvcache.Header, payloads [][]byte) []byte {
	b := make([]byte, h.Size)
	copy(b, meta)
	for l, e := range h.Table {
		copy(b[e.Offset:e.Offset+e.Length], payloads[l])
	}
	return b
}

// checkKey verifies that a header read back is the one asked for.
func checkKey(h *kvcache.Header, key matcher.ChunkKey) error {
	if h.Key != key {
		return fmt.Errorf("stored blob has key %v, want %v: %w", h.Key, key, ErrCorrupt)
	}
	return nil
}

// resolveRange resolves a layer range against a layer count.
func resolveRange(r LayerRange, layers int) (LayerRange, error) {
	if r.IsAll() {
		return LayerRange{Start: 0, End: layers}, nil
	}
	if r.Start < 0 || r.End > layers || r.Start >= r.End {
		return LayerRange{}, fmt.Errorf("layer range [%d, %d) of %d layers: %w", r.Start, r.End, layers, kvcache.ErrLayerRange)
	}
	return r, nil
}
