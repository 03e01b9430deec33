package kvcache

import (
	"fmt"
	"strings"
)

// CodecID names a chunk payload encoding in the blob header. Values are part
// of the blob format (docs/formats.md): never renumber.
type CodecID uint8

// Codec ids. Ids 1 and 2 are reserved for the codecs of codec_fp8.go and
// codec_cachegen*.go; a blob naming an id the reader's registry lacks fails
// with ErrUnknownCodec.
const (
	CodecRaw      CodecID = 0 // the decoded layer bytes themselves
	CodecFP8      CodecID = 1 // FP8 with per-channel scales (codec_fp8.go)
	CodecCacheGen CodecID = 2 // CacheGen-style delta + quantization + entropy coding
)

// LayerInfo describes one layer's decoded payload: K rows then V rows, each
// [Tokens][Shape.KVHeads][Shape.HeadDim] of Shape.DType.
type LayerInfo struct {
	Index  int
	Shape  Shape
	Tokens int
	Scales Scales // FP8 dtype scales of this layer (zero for other dtypes)
}

// Bytes is the decoded payload size.
func (li LayerInfo) Bytes() int { return li.Shape.LayerBytes(li.Tokens) }

// Codec encodes and decodes one layer's payload. Implementations must be
// safe for concurrent use, deterministic, and must never panic on any
// input to DecodeLayer: enc comes from disk and the network (fuzz them).
type Codec interface {
	// ID is the codec's id in the blob header.
	ID() CodecID
	// Name is its name in configuration and CLI flags ("raw", "fp8",
	// "cachegen:2").
	Name() string
	// EncodeLayer appends the encoding of kv (li.Bytes() bytes) to dst.
	EncodeLayer(dst []byte, li LayerInfo, kv []byte) ([]byte, error)
	// DecodeLayer decodes enc into dst[:li.Bytes()] (allocating when dst is
	// too small) and returns the decoded bytes. A codec whose encoding is
	// the identity may return enc itself (zero copy); callers must treat the
	// result as read-only. Malformed input returns an error wrapping
	// ErrMalformed.
	DecodeLayer(dst []byte, li LayerInfo, enc []byte) ([]byte, error)
}

// Raw is the identity codec: a layer's payload is its decoded bytes.
type Raw struct{}

var _ Codec = Raw{}

// ID implements Codec.
func (Raw) ID() CodecID { return CodecRaw }

// Name implements Codec.
func (Raw) Name() string { return "raw" }

// EncodeLayer implements Codec.
func (Raw) EncodeLayer(dst []byte, li LayerInfo, kv []byte) ([]byte, error) {
	if len(kv) != li.Bytes() {
		return dst, fmt.Errorf("raw encode layer %d: %d bytes, want %d: %w", li.Index, len(kv), li.Bytes(), ErrShape)
	}
	return append(dst, kv...), nil
}

// DecodeLayer implements Codec: it returns enc itself.
func (Raw) DecodeLayer(_ []byte, li LayerInfo, enc []byte) ([]byte, error) {
	if len(enc) != li.Bytes() {
		return nil, fmt.Errorf("raw decode layer %d: %d bytes, want %d: %w", li.Index, len(enc), li.Bytes(), ErrMalformed)
	}
	return enc, nil
}

// Codecs is a registry of codecs by id: what a reader accepts. It is
// immutable once built.
type Codecs struct {
	byID [256]Codec
}

// NewCodecs builds a registry holding Raw and cs. Two codecs with one id, or
// one named like another, are an error.
func NewCodecs(cs ...Codec) (*Codecs, error) {
	r := &Codecs{}
	r.byID[CodecRaw] = Raw{}
	names := map[string]CodecID{"raw": CodecRaw}
	for _, c := range cs {
		if c == nil {
			return nil, fmt.Errorf("new codecs: nil codec: %w", ErrUnknownCodec)
		}
		if prev := r.byID[c.ID()]; prev != nil {
			return nil, fmt.Errorf("new codecs: %s and %s share id %d: %w", prev.Name(), c.Name(), c.ID(), ErrUnknownCodec)
		}
		if id, dup := names[c.Name()]; dup {
			return nil, fmt.Errorf("new codecs: name %q used by ids %d and %d: %w", c.Name(), id, c.ID(), ErrUnknownCodec)
		}
		r.byID[c.ID()] = c
		names[c.Name()] = c.ID()
	}
	return r, nil
}

// defaultCodecs is the registry used when options name none.
var defaultCodecs = &Codecs{byID: [256]Codec{CodecRaw: Raw{}}}

// Lookup returns the codec with id.
func (r *Codecs) Lookup(id CodecID) (Codec, error) {
	if r == nil {
		r = defaultCodecs
	}
	if c := r.byID[id]; c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("codec id %d is not registered (have %s): %w", id, r.names(), ErrUnknownCodec)
}

// ByName returns the codec called name.
func (r *Codecs) ByName(name string) (Codec, error) {
	if r == nil {
		r = defaultCodecs
	}
	for _, c := range r.byID {
		if c != nil && c.Name() == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("codec %q is not registered (have %s): %w", name, r.names(), ErrUnknownCodec)
}

func (r *Codecs) names() string {
	var n []string
	for _, c := range r.byID {
		if c != nil {
			n = append(n, c.Name())
		}
	}
	return strings.Join(n, ", ")
}
