package kvcache

import (
	"fmt"
)

// Shape is the shape of a model's KV: layer-major; per layer K then V, each
// [tokens][KVHeads][HeadDim] elements of DType.
type Shape struct {
	Layers  int
	KVHeads int
	HeadDim int
	DType   DType
}

// RowBytes is one token's K (or V) in one layer.
func (s Shape) RowBytes() int { return s.KVHeads * s.HeadDim * s.DType.Size() }

// LayerBytes is one layer's K and V for tokens tokens.
func (s Shape) LayerBytes(tokens int) int { return 2 * tokens * s.RowBytes() }

// TokenBytes is one token's K and V over all layers.
func (s Shape) TokenBytes() int { return s.Layers * 2 * s.RowBytes() }

// Bytes is the size of tokens tokens of KV.
func (s Shape) Bytes(tokens int) int { return tokens * s.TokenBytes() }

// String is "LxHxD dtype".
func (s Shape) String() string {
	return fmt.Sprintf("%dx%dx%d %s", s.Layers, s.KVHeads, s.HeadDim, s.DType)
}

func (s Shape) validate() error {
	if s.Layers < 1 || s.Layers > maxLayers || s.KVHeads < 1 || s.KVHeads > maxHeads ||
		s.HeadDim < 1 || s.HeadDim > maxHeadDim || !s.DType.Valid() {
		return fmt.Errorf("shape %v: want 1..%d layers, 1..%d kv heads, 1..%d head dim and a known dtype: %w",
			s, maxLayers, maxHeads, maxHeadDim, ErrShape)
	}
	return nil
}

// Scales are one layer's FP8 scales (stored value × scale = real value).
// Other dtypes ignore them; zero means 1.
type Scales struct{ K, V float32 }

func (s Scales) pick(v bool) float32 {
	x := s.K
	if v {
		x = s.V
	}
	if x == 0 {
		return 1
	}
	return x
}

// Target is a KV layout the stitcher fills: contiguous (*KV) or paged
// (*Paged), or an engine-owned layout that implements it.
type Target interface {
	// Shape is the target's KV shape.
	Shape() Shape
	// Tokens is the number of token positions the target holds.
	Tokens() int
	// Rows returns the bytes of layer's K (v false) or V (v true) from token
	// t to the end of the contiguous run of rows that holds t (a paged
	// target's block; a contiguous target's end). Its length is a multiple of
	// Shape().RowBytes().
	Rows(layer int, v bool, t int) []byte
	// Scale is layer's FP8 scale for K or V (1 for other dtypes).
	Scale(layer int, v bool) float32
	// Layer is everything layer l occupies, as one buffer to hand to DMA.
	Layer(l int) []byte
}

// KV is a contiguous, layer-major KV tensor: for each layer, K rows for every
// token, then V rows.
type KV struct {
	shape  Shape
	tokens int
	data   []byte
	scales []Scales
}

var (
	_ Target = (*KV)(nil)
	_ Target = (*Paged)(nil)
)

// NewKV allocates a zeroed contiguous KV for tokens tokens.
func NewKV(shape Shape, tokens int) (*KV, error) {
	if err := shape.validate(); err != nil {
		return nil, err
	}
	if tokens < 0 || tokens > maxPositions {
		return nil, fmt.Errorf("new kv: %d tokens, want 0..%d: %w", tokens, maxPositions, ErrShape)
	}
	return &KV{shape: shape, tokens: tokens, data: make([]byte, shape.Bytes(tokens)), scales: make([]Scales, shape.Layers)}, nil
}

// WrapKV uses data (for example an engine's shared-memory segment) as a
// contiguous KV; len(data) must be shape.Bytes(tokens).
func WrapKV(shape Shape, tokens int, data []byte) (*KV, error) {
	if err := shape.validate(); err != nil {
		return nil, err
	}
	if tokens < 0 || tokens > maxPositions || len(data) != shape.Bytes(tokens) {
		return nil, fmt.Errorf("wrap kv: %d bytes for %d tokens of %v, want %d: %w",
			len(data), tokens, shape, shape.Bytes(max(tokens, 0)), ErrShape)
	}
	return &KV{shape: shape, tokens: tokens, data: data, scales: make([]Scales, shape.Layers)}, nil
}

// Shape implements Target.
func (kv *KV) Shape() Shape { return kv.shape }

// Tokens implements Target.
func (kv *KV) Tokens() int { return kv.tokens }

// Bytes is the whole tensor.
func (kv *KV) Bytes() []byte { return kv.data }

// Layer implements Target: layer l's K rows then V rows.
func (kv *KV) Layer(l int) []byte {
	n := kv.shape.LayerBytes(kv.tokens)
	return kv.data[l*n : (l+1)*n : (l+1)*n]
}

// K is layer l's keys, [tokens][KVHeads][HeadDim].
func (kv *KV) K(l int) []byte { return kv.Layer(l)[:kv.tokens*kv.shape.RowBytes()] }

// V is layer l's values, [tokens][KVHeads][HeadDim].
func (kv *KV) V(l int) []byte { return kv.Layer(l)[kv.tokens*kv.shape.RowBytes():] }

// Row is token t's K (v false) or V (v true) in layer l.
func (kv *KV) Row(l int, v bool, t int) []byte {
	rb := kv.shape.RowBytes()
	return kv.Rows(l, v, t)[:rb:rb]
}

// Rows implements Target.
func (kv *KV) Rows(l int, v bool, t int) []byte {
	b := kv.K(l)
	if v {
		b = kv.V(l)
	}
	return b[t*kv.shape.RowBytes():]
}

// Scale implements Target.
func (kv *KV) Scale(l int, v bool) float32 { return kv.scales[l].pick(v) }

// SetScales sets layer l's FP8 scales.
func (kv *KV) SetScales(l int, s Scales) { kv.scales[l] = s }

// DefaultBlockSize is the paged layout's default tokens per block (vLLM's).
const DefaultBlockSize = 16

// PagedOptions configures NewPaged. Zero values are documented per field.
type PagedOptions struct {
	// BlockSize is tokens per block; 0 means DefaultBlockSize.
	BlockSize int
	// Table maps logical block i (tokens [i*B, (i+1)*B)) to a physical block
	// of the pool. Nil means the identity over ceil(tokens/B) blocks.
	Table []int32
	// NumBlocks is the pool size in blocks; 0 means the largest table entry
	// + 1.
	NumBlocks int
	// Pool, if set, is the memory to use (one buffer per layer of
	// PoolBytesPerLayer bytes each), for example an engine's KV pool; nil
	// allocates.
	Pool [][]byte
}

// Paged is the paged KV layout of vLLM's FlashAttention backend: per layer,
// a K pool [NumBlocks][B][KVHeads][HeadDim] followed by a V pool of the same
// shape; a request's token t lives in physical block Table[t/B], slot t%B.
type Paged struct {
	shape     Shape
	tokens    int
	block     int
	table     []int32
	numBlocks int
	pool      [][]byte
	scales    []Scales
}

// NewPaged builds a paged KV for tokens tokens.
func NewPaged(shape Shape, tokens int, opts PagedOptions) (*Paged, error) {
	if err := shape.validate(); err != nil {
		return nil, err
	}
	b := opts.BlockSize
	if b == 0 {
		b = DefaultBlockSize
	}
	if b < 1 || b > 1<<16 {
		return nil, fmt.Errorf("new paged kv: block size %d, want 1..65536: %w", b, ErrShape)
	}
	if tokens < 0 || tokens > maxPositions {
		return nil, fmt.Errorf("new paged kv: %d tokens, want 0..%d: %w", tokens, maxPositions, ErrShape)
	}
	need := (tokens + b - 1) / b
	table := opts.Table
	if table == nil {
		table = make([]int32, need)
		for i := range table {
			table[i] = int32(i)
		}
	}
	if len(table) < need {
		return nil, fmt.Errorf("new paged kv: block table has %d entries, %d tokens need %d: %w", len(table), tokens, need, ErrShape)
	}
	nb := opts.NumBlocks
	maxEntry := int32(-1)
	seen := make(map[int32]int, len(table))
	for i, p := range table[:need] {
		if p < 0 {
			return nil, fmt.Errorf("new paged kv: block table entry %d = %d, want >= 0: %w", i, p, ErrShape)
		}
		if j, dup := seen[p]; dup {
			return nil, fmt.Errorf("new paged kv: block table entries %d and %d both map to block %d: %w", j, i, p, ErrShape)
		}
		seen[p] = i
		maxEntry = max(maxEntry, p)
	}
	if nb == 0 {
		nb = int(maxEntry) + 1
	}
	if int(maxEntry) >= nb {
		return nil, fmt.Errorf("new paged kv: block table refers to block %d, pool has %d: %w", maxEntry, nb, ErrShape)
	}
	p := &Paged{shape: shape, tokens: tokens, block: b, table: table[:need], numBlocks: nb, scales: make([]Scales, shape.Layers)}
	per := p.PoolBytesPerLayer()
	if opts.Pool != nil {
		if len(opts.Pool) != shape.Layers {
			return nil, fmt.Errorf("new paged kv: pool has %d layers, want %d: %w", len(opts.Pool), shape.Layers, ErrShape)
		}
		for l, buf := range opts.Pool {
			if len(buf) != per {
				return nil, fmt.Errorf("new paged kv: pool layer %d has %d bytes, want %d: %w", l, len(buf), per, ErrShape)
			}
		}
		p.pool = opts.Pool
		return p, nil
	}
	p.pool = make([][]byte, shape.Layers)
	for l := range p.pool {
		p.pool[l] = make([]byte, per)
	}
	return p, nil
}

// PoolBytesPerLayer is one layer's K and V pools.
func (p *Paged) PoolBytesPerLayer() int { return 2 * p.numBlocks * p.block * p.shape.RowBytes() }

// Shape implements Target.
func (p *Paged) Shape() Shape { return p.shape }

// Tokens implements Target.
func (p *Paged) Tokens() int { return p.tokens }

// BlockSize is tokens per block.
func (p *Paged) BlockSize() int { return p.block }

// BlockTable is the logical→physical block map (do not modify).
func (p *Paged) BlockTable() []int32 { return p.table }

// NumBlocks is the pool size in blocks.
func (p *Paged) NumBlocks() int { return p.numBlocks }

// Layer implements Target: layer l's K pool then V pool.
func (p *Paged) Layer(l int) []byte { return p.pool[l] }

// Rows implements Target: from token t to the end of its block.
func (p *Paged) Rows(l int, v bool, t int) []byte {
	rb := p.shape.RowBytes()
	blockBytes := p.block * rb
	off := int(p.table[t/p.block])*blockBytes + (t%p.block)*rb
	if v {
		off += p.numBlocks * blockBytes
	}
	end := off - (t%p.block)*rb + blockBytes
	return p.pool[l][off:end:end]
}

// Scale implements Target.
func (p *Paged) Scale(l int, v bool) float32 { return p.scales[l].pick(v) }

// SetScales sets layer l's FP8 scales.
func (p *Paged) SetScales(l int, s Scales) { p.scales[l] = s }

// Contiguous gathers the paged KV into a new contiguous KV.
func (p *Paged) Contiguous() *KV {
	kv := &KV{shape: p.shape, tokens: p.tokens, data: make([]byte, p.shape.Bytes(p.tokens)), scales: append([]Scales(nil), p.scales...)}
	rb := p.shape.RowBytes()
	for l := range p.shape.Layers {
		for _, v := range []bool{false, true} {
			dst := kv.K(l)
			if v {
				dst = kv.V(l)
			}
			for t := 0; t < p.tokens; {
				src := p.Rows(l, v, t)
				n := min(len(src)/rb, p.tokens-t)
				copy(dst[t*rb:], src[:n*rb])
				t += n
			}
		}
	}
	return kv
}

// PutFloat32 encodes vals (KVHeads×HeadDim values) as token t's K (v false)
// or V (v true) row of layer l, applying the layer's FP8 scale.
func (kv *KV) PutFloat32(l int, v bool, t int, vals []float32) error {
	if l < 0 || l >= kv.shape.Layers || t < 0 || t >= kv.tokens {
		return fmt.Errorf("put row: layer %d token %d outside %d layers × %d tokens: %w", l, t, kv.shape.Layers, kv.tokens, ErrShape)
	}
	return EncodeFloat32(kv.Row(l, v, t), kv.shape.DType, vals, kv.Scale(l, v))
}

// Float32 decodes token t's K (v false) or V (v true) row of layer l into
// dst (KVHeads×HeadDim values).
func (kv *KV) Float32(l int, v bool, t int, dst []float32) error {
	if l < 0 || l >= kv.shape.Layers || t < 0 || t >= kv.tokens {
		return fmt.Errorf("read row: layer %d token %d outside %d layers × %d tokens: %w", l, t, kv.shape.Layers, kv.tokens, ErrShape)
	}
	return DecodeFloat32(dst, kv.shape.DType, kv.Row(l, v, t), kv.Scale(l, v))
}
