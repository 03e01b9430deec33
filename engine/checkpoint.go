package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/kvloom/kvloom/kvcache"
)

// HeaderSize is the size of a llama2.c checkpoint header: seven
// little-endian int32 fields.
const HeaderSize = 7 * 4

// Limits on header fields. They are far above any model a CPU reference
// engine runs and keep a hostile header from asking for absurd allocations
// (the file size check below catches the rest).
const (
	maxDim     = 1 << 14
	maxHidden  = 1 << 16
	maxLayers  = 1 << 10
	maxHeads   = 1 << 10
	maxVocab   = 1 << 20
	maxSeqLen  = 1 << 20
	headerWord = 4
)

// Config is a llama2.c checkpoint header. VocabSize is always positive
// here; SharedClassifier records the sign the file stored.
type Config struct {
	Dim              int  // model width
	HiddenDim        int  // SwiGLU hidden width
	Layers           int  // transformer blocks
	Heads            int  // query heads
	KVHeads          int  // key/value heads (GQA when fewer than Heads)
	VocabSize        int  // tokens in the vocabulary
	SeqLen           int  // maximum positions
	SharedClassifier bool // classifier weights are the token embedding
}

// HeadSize is the width of one attention head.
func (c Config) HeadSize() int { return c.Dim / c.Heads }

// KVDim is the width of one token's keys (or values) in one layer.
func (c Config) KVDim() int { return c.KVHeads * c.HeadSize() }

// KVMul is how many query heads share one KV head.
func (c Config) KVMul() int { return c.Heads / c.KVHeads }

// Validate checks the relations between the fields that the forward pass
// relies on.
func (c Config) Validate() error {
	fields := []struct {
		name  string
		v     int
		limit int
	}{
		{"dim", c.Dim, maxDim}, {"hidden_dim", c.HiddenDim, maxHidden}, {"n_layers", c.Layers, maxLayers},
		{"n_heads", c.Heads, maxHeads}, {"n_kv_heads", c.KVHeads, maxHeads}, {"vocab_size", c.VocabSize, maxVocab},
		{"seq_len", c.SeqLen, maxSeqLen},
	}
	for _, f := range fields {
		if f.v <= 0 || f.v > f.limit {
			return fmt.Errorf("%s = %d, want 1..%d: %w", f.name, f.v, f.limit, ErrBadHeader)
		}
	}
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("dim %d is not a multiple of n_heads %d: %w", c.Dim, c.Heads, ErrBadHeader)
	}
	if c.KVHeads > c.Heads || c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("n_heads %d is not a multiple of n_kv_heads %d: %w", c.Heads, c.KVHeads, ErrBadHeader)
	}
	if c.HeadSize()%2 != 0 {
		return fmt.Errorf("head size %d is odd, RoPE rotates pairs: %w", c.HeadSize(), ErrBadHeader)
	}
	return nil
}

// Weights holds every tensor of a checkpoint, float32, row-major, each
// matrix stored (out, in) as in llama2.c and PyTorch's Linear.
type Weights struct {
	TokenEmbedding []float32 // (vocab, dim)
	RMSAtt         []float32 // (layers, dim)
	WQ             []float32 // (layers, heads*head_size, dim)
	WK             []float32 // (layers, kv_heads*head_size, dim)
	WV             []float32 // (layers, kv_heads*head_size, dim)
	WO             []float32 // (layers, dim, heads*head_size)
	RMSFFN         []float32 // (layers, dim)
	W1             []float32 // (layers, hidden, dim), gate
	W2             []float32 // (layers, dim, hidden), down
	W3             []float32 // (layers, hidden, dim), up
	RMSFinal       []float32 // (dim)
	// FreqCis is the legacy freq_cis_real then freq_cis_imag block,
	// (2, seq_len, head_size/2). run.c skips it and so does the forward
	// pass (it computes RoPE itself); it is kept so that a checkpoint
	// re-encodes byte for byte.
	FreqCis []float32
	WCls    []float32 // (vocab, dim); the same slice as TokenEmbedding when shared
}

// tensor describes one weight tensor of the file, in file order.
type tensor struct {
	name  string
	n     int64
	field func(*Weights) *[]float32
}

func (c Config) tensors() []tensor {
	d, h, l := int64(c.Dim), int64(c.HiddenDim), int64(c.Layers)
	hs := int64(c.HeadSize())
	kv := int64(c.KVHeads) * hs
	v := int64(c.VocabSize)
	ts := []tensor{
		{"token_embedding_table", v * d, func(w *Weights) *[]float32 { return &w.TokenEmbedding }},
		{"rms_att_weight", l * d, func(w *Weights) *[]float32 { return &w.RMSAtt }},
		{"wq", l * d * d, func(w *Weights) *[]float32 { return &w.WQ }},
		{"wk", l * kv * d, func(w *Weights) *[]float32 { return &w.WK }},
		{"wv", l * kv * d, func(w *Weights) *[]float32 { return &w.WV }},
		{"wo", l * d * d, func(w *Weights) *[]float32 { return &w.WO }},
		{"rms_ffn_weight", l * d, func(w *Weights) *[]float32 { return &w.RMSFFN }},
		{"w1", l * h * d, func(w *Weights) *[]float32 { return &w.W1 }},
		{"w2", l * d * h, func(w *Weights) *[]float32 { return &w.W2 }},
		{"w3", l * h * d, func(w *Weights) *[]float32 { return &w.W3 }},
		{"rms_final_weight", d, func(w *Weights) *[]float32 { return &w.RMSFinal }},
		{"freq_cis", 2 * int64(c.SeqLen) * hs / 2, func(w *Weights) *[]float32 { return &w.FreqCis }},
	}
	if !c.SharedClassifier {
		ts = append(ts, tensor{"wcls", v * d, func(w *Weights) *[]float32 { return &w.WCls }})
	}
	return ts
}

// FileSize is the exact size in bytes of a checkpoint with this header.
func (c Config) FileSize() int64 {
	n := int64(HeaderSize)
	for _, t := range c.tensors() {
		n += 4 * t.n
	}
	return n
}

// Model is a loaded checkpoint.
type Model struct {
	Config  Config
	Weights Weights
	// Spec is kvcache's description of the model's KV (from the same
	// header, float32 KV, GPT-J pair rotation, theta 10000) with the
	// checkpoint's SHA-256 as its weights identity, so that its
	// fingerprint equals kvcache.LoadLlama2C's on the same file.
	Spec kvcache.ModelSpec
}

// ParseCheckpoint decodes a llama2.c checkpoint held in b. It checks the
// header, that the file is exactly as long as the header implies, and that
// every weight is finite. The returned model does not alias b.
func ParseCheckpoint(b []byte) (*Model, error) {
	if len(b) < HeaderSize {
		return nil, fmt.Errorf("parse checkpoint: header needs %d bytes, file has %d: %w", HeaderSize, len(b), ErrTruncated)
	}
	var h [7]int32
	for i := range h {
		h[i] = int32(binary.LittleEndian.Uint32(b[i*headerWord:]))
	}
	c := Config{
		Dim: int(h[0]), HiddenDim: int(h[1]), Layers: int(h[2]), Heads: int(h[3]),
		KVHeads: int(h[4]), VocabSize: int(h[5]), SeqLen: int(h[6]),
		SharedClassifier: h[5] > 0,
	}
	if h[5] < 0 {
		c.VocabSize = -int(h[5]) // int conversion first: -MinInt32 fits in int
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("parse checkpoint header: %w", err)
	}
	if want := c.FileSize(); int64(len(b)) != want {
		if int64(len(b)) < want {
			return nil, fmt.Errorf("parse checkpoint: header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, seq_len %d) needs %d bytes, file has %d: %w",
				c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KVHeads, c.VocabSize, c.SeqLen, want, len(b), ErrTruncated)
		}
		return nil, fmt.Errorf("parse checkpoint: %d trailing bytes after the %d the header implies: %w", int64(len(b))-want, want, ErrInconsistent)
	}
	kh, err := kvcache.ParseLlama2CHeader(b[:HeaderSize])
	if err != nil {
		return nil, fmt.Errorf("parse checkpoint header: %w: %w", ErrBadHeader, err)
	}
	sum := sha256.Sum256(b)
	m := &Model{Config: c, Spec: kh.Spec()}
	m.Spec.WeightsID = "sha256:" + hex.EncodeToString(sum[:])
	if err := m.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("parse checkpoint: model spec: %w: %w", ErrBadHeader, err)
	}
	off := int64(HeaderSize)
	for _, t := range c.tensors() {
		dst := make([]float32, t.n)
		for i := range dst {
			u := binary.LittleEndian.Uint32(b[off+4*int64(i):])
			f := math.Float32frombits(u)
			if t.name != "freq_cis" && (math.IsNaN(float64(f)) || math.IsInf(float64(f), 0)) {
				return nil, fmt.Errorf("parse checkpoint: tensor %s element %d (offset %d) is %v: %w", t.name, i, off+4*int64(i), f, ErrInconsistent)
			}
			dst[i] = f
		}
		*t.field(&m.Weights) = dst
		off += 4 * t.n
	}
	if c.SharedClassifier {
		m.Weights.WCls = m.Weights.TokenEmbedding
	}
	return m, nil
}

// LoadCheckpoint reads and parses the checkpoint file at path.
func LoadCheckpoint(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	m, err := ParseCheckpoint(b)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", path, err)
	}
	m.Spec.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return m, nil
}

// MarshalBinary encodes the model in llama2.c's checkpoint format; for a
// model from ParseCheckpoint it returns the parsed bytes.
func (m *Model) MarshalBinary() ([]byte, error) {
	c := m.Config
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("marshal checkpoint: %w", err)
	}
	out := make([]byte, 0, c.FileSize())
	vocab := int32(c.VocabSize)
	if !c.SharedClassifier {
		vocab = -vocab
	}
	for _, v := range []int32{int32(c.Dim), int32(c.HiddenDim), int32(c.Layers), int32(c.Heads), int32(c.KVHeads), vocab, int32(c.SeqLen)} {
		out = binary.LittleEndian.AppendUint32(out, uint32(v))
	}
	w := m.Weights
	for _, t := range c.tensors() {
		src := *t.field(&w)
		if int64(len(src)) != t.n {
			return nil, fmt.Errorf("marshal checkpoint: tensor %s has %d elements, header implies %d: %w", t.name, len(src), t.n, ErrInconsistent)
		}
		for _, f := range src {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(f))
		}
	}
	return out, nil
}
