package kvcache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/kvloom/kvloom/matcher"
)

// Blob format constants (docs/formats.md).
const (
	// BlobVersion is the chunk blob format version this build writes and
	// reads.
	BlobVersion = 1
	// BlobHeaderSize is the fixed part of the header, before the tokens.
	BlobHeaderSize = 128
	// LayerEntrySize is one layer table entry.
	LayerEntrySize = 32
	// PayloadAlign is the alignment of every layer payload within the blob,
	// so a mapped blob can be handed to DMA or reinterpreted in place.
	PayloadAlign = 64
	// DefaultMaxTokens and DefaultMaxBlobBytes are the decoder's limits when
	// DecodeOptions leaves them zero.
	DefaultMaxTokens    = 1 << 20
	DefaultMaxBlobBytes = 1 << 36
)

var blobMagic = [4]byte{'K', 'V', 'L', 'C'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ChunkInfo is the metadata of a chunk: everything in the blob header but
// the layer table.
type ChunkInfo struct {
	// Key is the chunk's key in the index and the store.
	Key matcher.ChunkKey
	// Model is the fingerprint of the model that computed the KV.
	Model [FingerprintSize]byte
	// SaltID is matcher.Salt.ID() of the tenant salt the key was derived
	// under.
	SaltID uint64
	// Tokens are the chunk's tokens: reuse is allowed only where the
	// request's tokens equal them.
	Tokens []matcher.Token
	// BasePos is the position of Tokens[0] when the KV was computed; token
	// i's keys are rotated for position BasePos+i.
	BasePos int
	// Shape is the KV shape (dtype of the decoded payload).
	Shape Shape
	// Scales are the FP8 scales per layer (FP8E4M3 only; nil otherwise).
	Scales []Scales
}

// LayerInfo describes layer l's decoded payload.
func (ci *ChunkInfo) LayerInfo(l int) LayerInfo {
	li := LayerInfo{Index: l, Shape: ci.Shape, Tokens: len(ci.Tokens)}
	if ci.Scales != nil {
		li.Scales = ci.Scales[l]
	}
	return li
}

func (ci *ChunkInfo) validate() error {
	if err := ci.Shape.validate(); err != nil {
		return err
	}
	if len(ci.Tokens) < 1 || len(ci.Tokens) > maxPositions {
		return fmt.Errorf("chunk has %d tokens, want 1..%d: %w", len(ci.Tokens), maxPositions, ErrShape)
	}
	if ci.BasePos < 0 || ci.BasePos > maxPositions || ci.BasePos+len(ci.Tokens) > maxPositions {
		return fmt.Errorf("chunk base position %d + %d tokens outside 0..%d: %w", ci.BasePos, len(ci.Tokens), maxPositions, ErrShape)
	}
	if ci.Scales != nil && len(ci.Scales) != ci.Shape.Layers {
		return fmt.Errorf("chunk has %d layer scales for %d layers: %w", len(ci.Scales), ci.Shape.Layers, ErrShape)
	}
	return nil
}

// Chunk is one chunk's KV in memory, decoded: per layer K rows then V rows
// (Info.LayerInfo(l).Bytes() bytes each). It implements ChunkReader.
type Chunk struct {
	ChunkInfo
	Layers [][]byte
}

// Validate checks that the payloads match the shape.
func (c *Chunk) Validate() error {
	if err := c.ChunkInfo.validate(); err != nil {
		return fmt.Errorf("chunk %v: %w", c.Key, err)
	}
	if len(c.Layers) != c.Shape.Layers {
		return fmt.Errorf("chunk %v: %d layer payloads, shape has %d layers: %w", c.Key, len(c.Layers), c.Shape.Layers, ErrShape)
	}
	want := c.Shape.LayerBytes(len(c.Tokens))
	for l, b := range c.Layers {
		if len(b) != want {
			return fmt.Errorf("chunk %v: layer %d has %d bytes, want %d: %w", c.Key, l, len(b), want, ErrShape)
		}
	}
	return nil
}

// ChunkFromKV copies tokens [from, from+len(info.Tokens)) of kv into a new
// chunk with info's metadata (Shape and Scales are taken from kv).
func ChunkFromKV(kv *KV, from int, info ChunkInfo) (*Chunk, error) {
	n := len(info.Tokens)
	if from < 0 || n < 1 || from+n > kv.Tokens() {
		return nil, fmt.Errorf("chunk from kv: tokens [%d, %d) outside the kv's %d: %w", from, from+n, kv.Tokens(), ErrShape)
	}
	info.Shape = kv.Shape()
	info.Tokens = append([]matcher.Token(nil), info.Tokens...)
	info.Scales = nil
	if info.Shape.DType == FP8E4M3 {
		info.Scales = make([]Scales, info.Shape.Layers)
		for l := range info.Scales {
			info.Scales[l] = Scales{K: kv.Scale(l, false), V: kv.Scale(l, true)} // unset (0) means 1
		}
	}
	c := &Chunk{ChunkInfo: info, Layers: make([][]byte, info.Shape.Layers)}
	rb := info.Shape.RowBytes()
	for l := range c.Layers {
		b := make([]byte, 2*n*rb)
		copy(b, kv.K(l)[from*rb:(from+n)*rb])
		copy(b[n*rb:], kv.V(l)[from*rb:(from+n)*rb])
		c.Layers[l] = b
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LayerEntry is one row of the blob's layer table.
type LayerEntry struct {
	Offset int64  // from the start of the blob; a multiple of PayloadAlign
	Length int64  // encoded bytes
	CRC    uint32 // CRC32C (Castagnoli) of the encoded bytes
	Scales Scales
}

// Header is a parsed blob header: the chunk's metadata, its codec, and
// where each layer's payload lies.
type Header struct {
	ChunkInfo
	Codec CodecID
	// Table has one entry per layer, in layer order.
	Table []LayerEntry
	// Size is the whole blob's length.
	Size int64
	// MetaSize is the length of the header, tokens, table and header CRC;
	// the first payload starts at MetaSize rounded up to PayloadAlign.
	MetaSize int
}

func metaSize(tokens, layers int) int {
	return BlobHeaderSize + 4*tokens + LayerEntrySize*layers + 4
}

func alignUp(n int64) int64 { return (n + PayloadAlign - 1) &^ (PayloadAlign - 1) }

// appendMeta encodes the header, tokens, layer table and header CRC.
func (h *Header) appendMeta(dst []byte) []byte {
	start := len(dst)
	le := binary.LittleEndian
	dst = append(dst, blobMagic[:]...)
	dst = le.AppendUint16(dst, BlobVersion)
	dst = le.AppendUint16(dst, BlobHeaderSize)
	dst = le.AppendUint32(dst, 0) // flags
	dst = le.AppendUint32(dst, 0) // reserved
	dst = append(dst, h.Model[:]...)
	dst = append(dst, h.Key[:]...)
	dst = le.AppendUint64(dst, h.SaltID)
	dst = le.AppendUint64(dst, uint64(h.Size))
	dst = le.AppendUint32(dst, uint32(len(h.Tokens)))
	dst = le.AppendUint32(dst, uint32(h.BasePos))
	dst = le.AppendUint16(dst, uint16(h.Shape.Layers))
	dst = le.AppendUint16(dst, uint16(h.Shape.KVHeads))
	dst = le.AppendUint16(dst, uint16(h.Shape.HeadDim))
	dst = append(dst, byte(h.Shape.DType), byte(h.Codec))
	dst = append(dst, make([]byte, BlobHeaderSize-96)...)
	for _, t := range h.Tokens {
		dst = le.AppendUint32(dst, t)
	}
	for _, e := range h.Table {
		dst = le.AppendUint64(dst, uint64(e.Offset))
		dst = le.AppendUint64(dst, uint64(e.Length))
		dst = le.AppendUint32(dst, e.CRC)
		dst = le.AppendUint32(dst, math.Float32bits(e.Scales.K))
		dst = le.AppendUint32(dst, math.Float32bits(e.Scales.V))
		dst = le.AppendUint32(dst, 0)
	}
	return le.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// DecodeOptions say what a decoder expects and how much it accepts. Zero
// values are documented per field.
type DecodeOptions struct {
	// Model, if set, must have computed the blob: its fingerprint and KV
	// shape must match (else ErrModelMismatch). Nil accepts any model.
	Model *ModelSpec
	// Salt, if set, must be the blob's salt (else ErrSaltMismatch).
	Salt *matcher.Salt
	// Codecs are the codecs accepted; nil means Raw only.
	Codecs *Codecs
	// MaxTokens bounds the token count; 0 means DefaultMaxTokens.
	MaxTokens int
	// MaxBytes bounds the blob size; 0 means DefaultMaxBlobBytes.
	MaxBytes int64
	// Layers selects the layers a reader delivers; the zero value means
	// all. Headers are checked whole either way.
	Layers LayerRange
	// Buffer, if it has room, holds a StreamReader's raw payloads (for
	// pooled or pinned memory); nil allocates per layer.
	Buffer []byte
	// Release, if set, is called once by the reader's Close (to unmap a
	// file or return a buffer).
	Release func() error
}

func (o *DecodeOptions) limits() (int, int64) {
	mt, mb := o.MaxTokens, o.MaxBytes
	if mt <= 0 {
		mt = DefaultMaxTokens
	}
	if mb <= 0 {
		mb = DefaultMaxBlobBytes
	}
	return mt, mb
}

// fixedHeader is what the first BlobHeaderSize bytes say before the rest of
// the metadata is read.
type fixedHeader struct {
	tokens, layers int
	size           int64
}

// parseFixed checks the fixed header and returns the sizes it declares.
func parseFixed(b []byte, opts *DecodeOptions) (fixedHeader, error) {
	le := binary.LittleEndian
	if len(b) < len(blobMagic) {
		if bytes.HasPrefix(blobMagic[:], b) {
			return fixedHeader{}, fmt.Errorf("blob: %d bytes, header needs %d: %w", len(b), BlobHeaderSize, ErrTruncated)
		}
		return fixedHeader{}, fmt.Errorf("blob: magic %q, want %q: %w", b, blobMagic[:], ErrNotBlob)
	}
	if !bytes.Equal(b[:4], blobMagic[:]) {
		return fixedHeader{}, fmt.Errorf("blob: magic %q at offset 0, want %q: %w", b[:4], blobMagic[:], ErrNotBlob)
	}
	if len(b) < 6 {
		return fixedHeader{}, fmt.Errorf("blob: %d bytes, header needs %d: %w", len(b), BlobHeaderSize, ErrTruncated)
	}
	if v := le.Uint16(b[4:]); v != BlobVersion {
		return fixedHeader{}, fmt.Errorf("blob: version %d at offset 4, this build reads %d: %w", v, BlobVersion, ErrVersion)
	}
	if len(b) < BlobHeaderSize {
		return fixedHeader{}, fmt.Errorf("blob: %d bytes, header needs %d: %w", len(b), BlobHeaderSize, ErrTruncated)
	}
	if hs := le.Uint16(b[6:]); hs != BlobHeaderSize {
		return fixedHeader{}, fmt.Errorf("blob: header size %d at offset 6, want %d: %w", hs, BlobHeaderSize, ErrMalformed)
	}
	maxTokens, maxBytes := opts.limits()
	fh := fixedHeader{size: int64(le.Uint64(b[72:])), tokens: int(le.Uint32(b[80:])), layers: int(le.Uint16(b[88:]))}
	if fh.tokens > maxTokens {
		return fixedHeader{}, fmt.Errorf("blob: %d tokens at offset 80, limit %d: %w", fh.tokens, maxTokens, ErrOversized)
	}
	if fh.size > maxBytes || fh.size < 0 {
		return fixedHeader{}, fmt.Errorf("blob: size %d at offset 72, limit %d: %w", uint64(fh.size), maxBytes, ErrOversized)
	}
	if fh.tokens < 1 || fh.layers < 1 || fh.layers > maxLayers {
		return fixedHeader{}, fmt.Errorf("blob: %d tokens, %d layers: want at least 1 token and 1..%d layers: %w", fh.tokens, fh.layers, maxLayers, ErrMalformed)
	}
	if int64(metaSize(fh.tokens, fh.layers)) > fh.size {
		return fixedHeader{}, fmt.Errorf("blob: declared size %d is smaller than its %d-byte header: %w", fh.size, metaSize(fh.tokens, fh.layers), ErrMalformed)
	}
	return fh, nil
}

// parseMeta decodes and checks the metadata (len(b) == metaSize).
func parseMeta(b []byte, fh fixedHeader, opts *DecodeOptions) (*Header, error) {
	le := binary.LittleEndian
	n := len(b) - 4
	if got, want := crc32.Checksum(b[:n], castagnoli), le.Uint32(b[n:]); got != want {
		return nil, fmt.Errorf("blob: header crc32c %08x at offset %d, computed %08x: %w", want, n, got, ErrChecksum)
	}
	if f := le.Uint32(b[8:]); f != 0 {
		return nil, fmt.Errorf("blob: flags %#x at offset 8, want 0: %w", f, ErrMalformed)
	}
	if le.Uint32(b[12:]) != 0 || !allZero(b[96:BlobHeaderSize]) {
		return nil, fmt.Errorf("blob: reserved header bytes are not zero: %w", ErrMalformed)
	}
	h := &Header{Size: fh.size, MetaSize: len(b)}
	copy(h.Model[:], b[16:48])
	copy(h.Key[:], b[48:64])
	h.SaltID = le.Uint64(b[64:])
	h.BasePos = int(le.Uint32(b[84:]))
	h.Shape = Shape{Layers: fh.layers, KVHeads: int(le.Uint16(b[90:])), HeadDim: int(le.Uint16(b[92:])), DType: DType(b[94])}
	h.Codec = CodecID(b[95])
	if !h.Shape.DType.Valid() {
		return nil, fmt.Errorf("blob: dtype %d at offset 94 unknown: %w", b[94], ErrMalformed)
	}
	if err := h.Shape.validate(); err != nil {
		return nil, fmt.Errorf("blob: %w: %w", ErrMalformed, err)
	}
	if h.BasePos > maxPositions-fh.tokens {
		return nil, fmt.Errorf("blob: base position %d + %d tokens beyond %d: %w", h.BasePos, fh.tokens, maxPositions, ErrMalformed)
	}
	if m := opts.Model; m != nil {
		if fp := m.Fingerprint(); fp != h.Model {
			return nil, fmt.Errorf("blob: model fingerprint %x…, want %x… (%s): %w", h.Model[:8], fp[:8], m.Name, ErrModelMismatch)
		}
		if ms := m.Shape(); ms != h.Shape {
			return nil, fmt.Errorf("blob: kv shape %v, model %s has %v: %w", h.Shape, m.Name, ms, ErrModelMismatch)
		}
	}
	if s := opts.Salt; s != nil && s.ID() != h.SaltID {
		return nil, fmt.Errorf("blob: salt id %016x, want %016x: %w", h.SaltID, s.ID(), ErrSaltMismatch)
	}
	off := BlobHeaderSize
	h.Tokens = make([]matcher.Token, fh.tokens)
	for i := range h.Tokens {
		h.Tokens[i] = le.Uint32(b[off+4*i:])
	}
	off += 4 * fh.tokens
	h.Table = make([]LayerEntry, fh.layers)
	fp8 := h.Shape.DType == FP8E4M3
	if fp8 {
		h.Scales = make([]Scales, fh.layers)
	}
	next := alignUp(int64(len(b)))
	for l := range h.Table {
		e := b[off+LayerEntrySize*l:]
		le2 := LayerEntry{
			Offset: int64(le.Uint64(e)),
			Length: int64(le.Uint64(e[8:])),
			CRC:    le.Uint32(e[16:]),
			Scales: Scales{K: math.Float32frombits(le.Uint32(e[20:])), V: math.Float32frombits(le.Uint32(e[24:]))},
		}
		eoff := off + LayerEntrySize*l
		if le.Uint32(e[28:]) != 0 {
			return nil, fmt.Errorf("blob: layer %d entry at offset %d: reserved word not zero: %w", l, eoff, ErrMalformed)
		}
		if le2.Offset != next {
			return nil, fmt.Errorf("blob: layer %d offset %d (entry at %d), want %d (payloads are consecutive and %d-aligned): %w",
				l, le2.Offset, eoff, next, PayloadAlign, ErrMalformed)
		}
		if le2.Length < 0 || le2.Length > fh.size-le2.Offset {
			return nil, fmt.Errorf("blob: layer %d length %d at offset %d runs past the declared size %d: %w", l, le2.Length, le2.Offset, fh.size, ErrMalformed)
		}
		if h.Codec == CodecRaw && le2.Length != int64(h.Shape.LayerBytes(fh.tokens)) {
			return nil, fmt.Errorf("blob: raw layer %d length %d, shape %v × %d tokens needs %d: %w",
				l, le2.Length, h.Shape, fh.tokens, h.Shape.LayerBytes(fh.tokens), ErrMalformed)
		}
		if fp8 {
			if !finitePos(float64(le2.Scales.K)) || !finitePos(float64(le2.Scales.V)) {
				return nil, fmt.Errorf("blob: layer %d fp8 scales %v/%v, want finite > 0: %w", l, le2.Scales.K, le2.Scales.V, ErrMalformed)
			}
			h.Scales[l] = le2.Scales
		} else if le2.Scales != (Scales{}) {
			return nil, fmt.Errorf("blob: layer %d carries scales for dtype %v: %w", l, h.Shape.DType, ErrMalformed)
		}
		h.Table[l] = le2
		next = alignUp(le2.Offset + le2.Length)
	}
	last := h.Table[fh.layers-1]
	if end := last.Offset + last.Length; end != fh.size {
		return nil, fmt.Errorf("blob: payloads end at %d, declared size %d: %w", end, fh.size, ErrMalformed)
	}
	if _, err := opts.Layers.resolve(fh.layers); err != nil {
		return nil, err
	}
	return h, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// ParseHeader parses the header at the start of b (which may hold the whole
// blob or only its first MetaSize bytes). It does not require the blob's
// codec to be registered (readers do).
func ParseHeader(b []byte, opts DecodeOptions) (*Header, error) {
	fh, err := parseFixed(b, &opts)
	if err != nil {
		return nil, err
	}
	ms := metaSize(fh.tokens, fh.layers)
	if len(b) < ms {
		return nil, fmt.Errorf("blob: %d bytes, header with %d tokens and %d layers needs %d: %w", len(b), fh.tokens, fh.layers, ms, ErrTruncated)
	}
	return parseMeta(b[:ms], fh, &opts)
}

// ReadHeader reads exactly the header from r (MetaSize bytes); the payloads
// follow at Table[l].Offset.
func ReadHeader(r io.Reader, opts DecodeOptions) (*Header, error) {
	buf := make([]byte, BlobHeaderSize)
	n, err := io.ReadFull(r, buf)
	if err != nil {
		if _, ferr := parseFixed(buf[:n], &opts); ferr != nil {
			return nil, ferr
		}
		return nil, fmt.Errorf("blob: read header: %w: %w", ErrTruncated, err)
	}
	fh, err := parseFixed(buf, &opts)
	if err != nil {
		return nil, err
	}
	ms := metaSize(fh.tokens, fh.layers)
	buf = append(buf, make([]byte, ms-BlobHeaderSize)...)
	if _, err := io.ReadFull(r, buf[BlobHeaderSize:]); err != nil {
		return nil, fmt.Errorf("blob: read %d-byte header: %w: %w", ms, ErrTruncated, err)
	}
	return parseMeta(buf, fh, &opts)
}

// CheckLayer checks layer l's encoded payload against the table: its
// length (ErrTruncated) and CRC32C (ErrChecksum). It needs no codec.
func (h *Header) CheckLayer(l int, payload []byte) error {
	if l < 0 || l >= len(h.Table) {
		return fmt.Errorf("blob: layer %d of %d: %w", l, len(h.Table), ErrLayerRange)
	}
	e := h.Table[l]
	if int64(len(payload)) != e.Length {
		return fmt.Errorf("blob: layer %d payload has %d bytes, table says %d: %w", l, len(payload), e.Length, ErrTruncated)
	}
	if got := crc32c(0, payload); got != e.CRC {
		return fmt.Errorf("blob: layer %d at offset %d: crc32c %08x, table says %08x: %w", l, e.Offset, got, e.CRC, ErrChecksum)
	}
	return nil
}

// DecodeLayer checks layer l's encoded payload (CheckLayer) and decodes it
// with codec (which must have the header's codec id) into dst when the
// codec copies. The result may alias payload.
func (h *Header) DecodeLayer(codec Codec, l int, payload, dst []byte) ([]byte, error) {
	if err := h.CheckLayer(l, payload); err != nil {
		return nil, err
	}
	if codec.ID() != h.Codec {
		return nil, fmt.Errorf("blob: decoding codec %d blob with codec %s: %w", h.Codec, codec.Name(), ErrUnknownCodec)
	}
	out, err := codec.DecodeLayer(dst, h.LayerInfo(l), payload)
	if err != nil {
		return nil, fmt.Errorf("blob: layer %d: %w", l, err)
	}
	if len(out) != h.LayerInfo(l).Bytes() {
		return nil, fmt.Errorf("blob: layer %d decoded to %d bytes, want %d: %w", l, len(out), h.LayerInfo(l).Bytes(), ErrMalformed)
	}
	return out, nil
}

// LayerRange selects layers [Start, End). The zero value means every layer.
type LayerRange struct{ Start, End int }

// AllLayers is the zero LayerRange, spelled out.
var AllLayers = LayerRange{}

// IsAll reports whether r is the zero value (every layer).
func (r LayerRange) IsAll() bool { return r == LayerRange{} }

// Contains reports whether layer l is in r (r must be resolved).
func (r LayerRange) Contains(l int) bool { return l >= r.Start && l < r.End }

// Len is the number of layers in a resolved range.
func (r LayerRange) Len() int { return r.End - r.Start }

func (r LayerRange) resolve(layers int) (LayerRange, error) {
	if r.IsAll() {
		return LayerRange{0, layers}, nil
	}
	if r.Start < 0 || r.End > layers || r.Start >= r.End {
		return LayerRange{}, fmt.Errorf("layer range [%d, %d) of %d layers: %w", r.Start, r.End, layers, ErrLayerRange)
	}
	return r, nil
}
