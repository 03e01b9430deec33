package kvcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ChunkReader gives a chunk's metadata at once and its layers one at a time,
// without decoding layers nobody asks for. Store tiers return one from Get;
// the stitcher consumes it layer by layer. Implementations are safe for
// concurrent use.
type ChunkReader interface {
	// Info is the chunk's metadata (read-only).
	Info() *ChunkInfo
	// Available is the range of layers Layer can return.
	Available() LayerRange
	// Layer returns layer l's decoded payload (K rows then V rows),
	// blocking until it has arrived, been verified (CRC32C) and decoded. The
	// bytes are read-only and stay valid until Close; with the raw codec
	// they are the blob's own bytes (zero copy).
	Layer(ctx context.Context, l int) ([]byte, error)
	// Close releases the reader's resources (a mapped file, a connection).
	Close() error
}

var (
	_ ChunkReader = (*Chunk)(nil)
	_ ChunkReader = (*BlobReader)(nil)
	_ ChunkReader = (*StreamReader)(nil)
)

// Info implements ChunkReader.
func (c *Chunk) Info() *ChunkInfo { return &c.ChunkInfo }

// Available implements ChunkReader: every layer.
func (c *Chunk) Available() LayerRange { return LayerRange{0, len(c.Layers)} }

// Layer implements ChunkReader.
func (c *Chunk) Layer(_ context.Context, l int) ([]byte, error) {
	if l < 0 || l >= len(c.Layers) {
		return nil, fmt.Errorf("chunk %v: layer %d of %d: %w", c.Key, l, len(c.Layers), ErrLayerRange)
	}
	return c.Layers[l], nil
}

// Close implements ChunkReader; it does nothing.
func (c *Chunk) Close() error { return nil }

// BlobReader reads a blob held whole in memory (a buffer or a mapped file)
// without copying: each layer is checked (CRC32C) and decoded on first use.
type BlobReader struct {
	layerCache
	blob []byte
}

// layerCache is what every blob reader keeps: the header, the decoded
// layers until Close, and Close itself (DecodeOptions.Release, once).
type layerCache struct {
	h       *Header
	codec   Codec
	rng     LayerRange
	release func() error

	mu      sync.Mutex // guards decoded and closed; StreamReader's stream too
	decoded [][]byte
	closed  bool
}

// Header is the chunk's parsed header.
func (c *layerCache) Header() *Header { return c.h }

// Info implements ChunkReader.
func (c *layerCache) Info() *ChunkInfo { return &c.h.ChunkInfo }

// Available implements ChunkReader.
func (c *layerCache) Available() LayerRange { return c.rng }

// cached returns layer l if it is decoded already (nil if not yet), or
// why it cannot be had: out of range, or the reader closed.
func (c *layerCache) cached(l int) ([]byte, error) {
	if err := c.checkRange(l); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, c.closedErr(l)
	}
	return c.decoded[l], nil
}

func (c *layerCache) checkRange(l int) error {
	if !c.rng.Contains(l) {
		return fmt.Errorf("blob %v: layer %d not in [%d, %d): %w", c.h.Key, l, c.rng.Start, c.rng.End, ErrLayerRange)
	}
	return nil
}

func (c *layerCache) closedErr(l int) error {
	return fmt.Errorf("blob %v: layer %d: %w", c.h.Key, l, errClosed)
}

// keep stores d, decoded outside the lock, as layer l. If a concurrent
// call decoded l first, its bytes win, so that every caller sees the same
// slice.
func (c *layerCache) keep(l int, d []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, c.closedErr(l)
	}
	if prev := c.decoded[l]; prev != nil {
		return prev, nil
	}
	c.decoded[l] = d
	return d, nil
}

func (c *layerCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.decoded = nil
	if c.release != nil {
		return c.release()
	}
	return nil
}

// init sets c up for h: its codec from opts.Codecs, the layers opts asks
// for, and opts.Release.
func (c *layerCache) init(h *Header, opts DecodeOptions) error {
	codec, err := opts.Codecs.Lookup(h.Codec)
	if err != nil {
		return err
	}
	rng, err := opts.Layers.resolve(h.Shape.Layers)
	if err != nil {
		return err
	}
	c.h, c.codec, c.rng, c.release = h, codec, rng, opts.Release
	c.decoded = make([][]byte, h.Shape.Layers)
	return nil
}

// OpenBlob parses b's header and returns a reader over its layers. b must be
// exactly one blob: a shorter b is ErrTruncated, a longer one ErrOversized.
// Layers are verified lazily, so a corrupted layer fails its Layer call with
// ErrChecksum, not OpenBlob.
func OpenBlob(b []byte, opts DecodeOptions) (*BlobReader, error) {
	h, err := ParseHeader(b, opts)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) < h.Size {
		return nil, fmt.Errorf("blob: %d bytes, header declares %d: %w", len(b), h.Size, ErrTruncated)
	}
	if int64(len(b)) > h.Size {
		return nil, fmt.Errorf("blob: %d bytes, header declares %d (%d trailing): %w", len(b), h.Size, int64(len(b))-h.Size, ErrOversized)
	}
	r := &BlobReader{blob: b}
	if err := r.init(h, opts); err != nil {
		return nil, err
	}
	prevEnd := int64(h.MetaSize)
	for l, e := range h.Table {
		if !allZero(b[prevEnd:e.Offset]) {
			return nil, fmt.Errorf("blob: padding before layer %d (offsets %d..%d) is not zero: %w", l, prevEnd, e.Offset, ErrMalformed)
		}
		prevEnd = e.Offset + e.Length
	}
	return r, nil
}

// Layer implements ChunkReader.
func (r *BlobReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d, err := r.cached(l); d != nil || err != nil {
		return d, err
	}
	// Verify and decode outside the lock: other layers need not wait.
	e := r.h.Table[l]
	d, err := r.h.DecodeLayer(r.codec, l, r.blob[e.Offset:e.Offset+e.Length:e.Offset+e.Length], nil)
	if err != nil {
		return nil, err
	}
	return r.keep(l, d)
}

// Close implements ChunkReader, calling DecodeOptions.Release once.
func (r *BlobReader) Close() error { return r.close() }

var errClosed = errors.New("reader closed")

// streamPiece is how much StreamReader reads at a time: small enough to
// stay in L1 between the read and the checksumming copy (16 KiB measured
// best against 32–256 KiB).
const streamPiece = 16 << 10

// StreamReader reads a blob from a stream (a socket, a file) in order:
// Layer(l) reads forward through layer l, verifying each layer's CRC32C
// while its bytes are still in cache, so layer 0 is usable before layer 1
// has arrived. Layers outside DecodeOptions.Layers are skipped unread.
type StreamReader struct {
	layerCache // its mu also guards the fields below

	r      io.Reader
	pos    int64  // bytes consumed from the start of the blob
	next   int    // next layer to read from r
	arena  []byte // caller-provided buffer for raw payloads
	bounce []byte // streamPiece bytes the stream is read through
	err    error  // sticky: a stream cannot resume after a failure
}

// NewStreamReader reads and checks the header from r; payloads are read on
// demand. DecodeOptions.Buffer, if large enough, holds the raw payloads
// (avoiding an allocation per layer).
func NewStreamReader(r io.Reader, opts DecodeOptions) (*StreamReader, error) {
	h, err := ReadHeader(r, opts)
	if err != nil {
		return nil, err
	}
	s := &StreamReader{r: r, pos: int64(h.MetaSize), arena: opts.Buffer}
	if err := s.init(h, opts); err != nil {
		return nil, err
	}
	return s, nil
}

// Layer implements ChunkReader.
func (s *StreamReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if err := s.checkRange(l); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, s.closedErr(l)
	}
	for s.next <= l {
		if s.err != nil {
			return nil, s.err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.readNext(ctx); err != nil {
			s.err = err
			return nil, err
		}
	}
	if s.decoded[l] == nil {
		return nil, s.err
	}
	return s.decoded[l], nil
}

// ReadAll reads every remaining layer in the range (for callers that want
// the whole chunk).
func (s *StreamReader) ReadAll(ctx context.Context) error {
	_, err := s.Layer(ctx, s.rng.End-1)
	return err
}

func (s *StreamReader) skip(n int64) error {
	if n <= 0 {
		return nil
	}
	m, err := io.CopyN(io.Discard, s.r, n)
	s.pos += m
	if err != nil {
		return fmt.Errorf("blob: at offset %d: %w: %w", s.pos, ErrTruncated, err)
	}
	return nil
}

// skipPadding consumes the (< PayloadAlign) zero bytes before a payload.
func (s *StreamReader) skipPadding(n int64) error {
	var pad [PayloadAlign]byte
	if n <= 0 {
		return nil
	}
	m, err := io.ReadFull(s.r, pad[:n])
	s.pos += int64(m)
	if err != nil {
		return fmt.Errorf("blob: padding at offset %d: %w: %w", s.pos, ErrTruncated, err)
	}
	if !allZero(pad[:n]) {
		return fmt.Errorf("blob: padding before offset %d is not zero: %w", s.pos, ErrMalformed)
	}
	return nil
}

func (s *StreamReader) readNext(ctx context.Context) error {
	l := s.next
	e := s.h.Table[l]
	if err := s.skipPadding(e.Offset - s.pos); err != nil {
		return err
	}
	if !s.rng.Contains(l) {
		if err := s.skip(e.Length); err != nil {
			return err
		}
		s.next++
		return nil
	}
	var buf []byte
	if int64(len(s.arena)) >= e.Length {
		buf, s.arena = s.arena[:e.Length:e.Length], s.arena[e.Length:]
	} else {
		buf = make([]byte, e.Length)
	}
	// Read through a cache-sized bounce buffer and move it on with the
	// copying CRC kernel: the bytes are fetched from memory once, checked
	// while in cache, and stored past the cache like memmove's large copies.
	if s.bounce == nil {
		s.bounce = make([]byte, streamPiece)
	}
	var crc uint32
	large := e.Length >= ntCopyMin
	for off := int64(0); off < e.Length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := min(off+streamPiece, e.Length)
		piece := s.bounce[:end-off]
		n, err := io.ReadFull(s.r, piece)
		s.pos += int64(n)
		if err != nil {
			return fmt.Errorf("blob: layer %d at offset %d: %w: %w", l, s.pos, ErrTruncated, err)
		}
		crc = crc32cCopy(crc, buf[off:end], piece, large)
		off = end
	}
	if crc != e.CRC {
		return fmt.Errorf("blob: layer %d at offset %d: crc32c %08x, table says %08x: %w", l, e.Offset, crc, e.CRC, ErrChecksum)
	}
	d, err := s.codec.DecodeLayer(nil, s.h.LayerInfo(l), buf)
	if err != nil {
		return fmt.Errorf("blob: layer %d: %w", l, err)
	}
	if len(d) != s.h.LayerInfo(l).Bytes() {
		return fmt.Errorf("blob: layer %d decoded to %d bytes, want %d: %w", l, len(d), s.h.LayerInfo(l).Bytes(), ErrMalformed)
	}
	s.decoded[l] = d
	s.next++
	return nil
}

// Close implements ChunkReader, calling DecodeOptions.Release once.
func (s *StreamReader) Close() error { return s.close() }

// ReadChunk reads a whole blob from r into a Chunk (all layers, or those of
// opts.Layers with the others nil).
func ReadChunk(ctx context.Context, r io.Reader, opts DecodeOptions) (*Chunk, error) {
	s, err := NewStreamReader(r, opts)
	if err != nil {
		return nil, err
	}
	if err := s.ReadAll(ctx); err != nil {
		return nil, err
	}
	c := &Chunk{ChunkInfo: s.h.ChunkInfo, Layers: s.decoded}
	return c, nil
}

// DecodeChunk decodes a whole blob held in memory into a Chunk; with the
// raw codec the layers alias b.
func DecodeChunk(b []byte, opts DecodeOptions) (*Chunk, error) {
	br, err := OpenBlob(b, opts)
	if err != nil {
		return nil, err
	}
	c := &Chunk{ChunkInfo: br.h.ChunkInfo, Layers: make([][]byte, br.h.Shape.Layers)}
	for l := br.rng.Start; l < br.rng.End; l++ {
		if c.Layers[l], err = br.Layer(context.Background(), l); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// LayerFetcher returns layer l's encoded payload (Header.Table[l].Length
// bytes), for example one Redis key per layer or one message from a peer.
// It may block until the bytes arrive.
type LayerFetcher func(ctx context.Context, l int) ([]byte, error)

// FetchReader is a ChunkReader over a header and a LayerFetcher: what a tier
// that stores the header and each layer separately returns. Each layer is
// fetched once, checked against the header (length, CRC32C) and decoded.
type FetchReader struct {
	layerCache
	fetch LayerFetcher
}

var _ ChunkReader = (*FetchReader)(nil)

// NewFetchReader checks h against opts (model, salt, codec, layer range)
// and returns a reader that fetches layers on demand.
func NewFetchReader(h *Header, fetch LayerFetcher, opts DecodeOptions) (*FetchReader, error) {
	if h == nil || fetch == nil {
		return nil, fmt.Errorf("fetch reader: nil header or fetcher: %w", ErrMalformed)
	}
	if m := opts.Model; m != nil {
		if fp := m.Fingerprint(); fp != h.Model || m.Shape() != h.Shape {
			return nil, fmt.Errorf("fetch reader: blob %v is for model %x…/%v, want %s: %w", h.Key, h.Model[:8], h.Shape, m.Name, ErrModelMismatch)
		}
	}
	if s := opts.Salt; s != nil && s.ID() != h.SaltID {
		return nil, fmt.Errorf("fetch reader: salt id %016x, want %016x: %w", h.SaltID, s.ID(), ErrSaltMismatch)
	}
	r := &FetchReader{fetch: fetch}
	if err := r.init(h, opts); err != nil {
		return nil, err
	}
	return r, nil
}

// Layer implements ChunkReader. Concurrent calls for different layers fetch
// in parallel.
func (r *FetchReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if d, err := r.cached(l); d != nil || err != nil {
		return d, err
	}
	payload, err := r.fetch(ctx, l)
	if err != nil {
		return nil, fmt.Errorf("blob %v: fetch layer %d: %w", r.h.Key, l, err)
	}
	d, err := r.h.DecodeLayer(r.codec, l, payload, nil)
	if err != nil {
		return nil, err
	}
	return r.keep(l, d)
}

// Close implements ChunkReader, calling DecodeOptions.Release once.
func (r *FetchReader) Close() error { return r.close() }
