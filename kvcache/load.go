package kvcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// LoadOptions are the choices a model file does not make. Zero values are
// documented per field.
type LoadOptions struct {
	// WeightsID names the trained weights (see ModelSpec.WeightsID).
	// config.json holds no weights, so ParseHFConfig requires it; the GGUF
	// and llama2.c loaders default to "sha256:<hex>" of the whole file.
	WeightsID string
	// KVDType is the KV cache dtype. Zero means what the file implies:
	// config.json's torch_dtype (float32 becomes f16, as vLLM's "auto"
	// does), f16 for GGUF (llama.cpp's default cache type), f32 for
	// llama2.c.
	KVDType DType
	// Name overrides the spec's display name. Zero means the file's own
	// (GGUF general.name, the config's directory, the checkpoint's base name).
	Name string
}

func (o LoadOptions) apply(s *ModelSpec) {
	if o.KVDType != 0 {
		s.DType = o.KVDType
	}
	if o.Name != "" {
		s.Name = o.Name
	}
	if o.WeightsID != "" {
		s.WeightsID = o.WeightsID
	}
}

// maxConfigBytes bounds config.json reads; real ones are a few KiB.
const maxConfigBytes = 1 << 20

// hfConfig is the subset of a Hugging Face config.json that shapes the KV.
type hfConfig struct {
	ModelType             string          `json:"model_type"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	VocabSize             *int            `json:"vocab_size"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"`
	PartialRotaryFactor   *float64        `json:"partial_rotary_factor"`
	TorchDType            string          `json:"torch_dtype"`
	DType                 string          `json:"dtype"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	TextConfig            json.RawMessage `json:"text_config"`
}

type hfRope struct {
	Type                          string   `json:"type"`
	RopeType                      string   `json:"rope_type"`
	RopeTheta                     *float64 `json:"rope_theta"`
	Factor                        *float64 `json:"factor"`
	LowFreqFactor                 *float64 `json:"low_freq_factor"`
	HighFreqFactor                *float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings *int     `json:"original_max_position_embeddings"`
	PartialRotaryFactor           *float64 `json:"partial_rotary_factor"`
}

// LoadHFConfig reads a Hugging Face config.json (path may be the file or
// the model directory holding it). opts.WeightsID is required.
func LoadHFConfig(path string, opts LoadOptions) (ModelSpec, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	f, err := os.Open(path)
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load hf config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load hf config %s: %w", path, err)
	}
	if opts.Name == "" {
		opts.Name = filepath.Base(filepath.Dir(path))
	}
	s, err := ParseHFConfig(data, opts)
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load hf config %s: %w", path, err)
	}
	return s, nil
}

// ParseHFConfig parses the bytes of a Hugging Face config.json of a
// Llama-family decoder (llama, mistral, mixtral, qwen2, qwen3, yi, …: the
// models whose Hugging Face implementation rotates keys with rotate_half).
// RoPE scaling types none/default, linear and llama3 are supported; others
// (yarn, dynamic, longrope) fail with ErrUnsupported. opts.WeightsID is
// required: config.json does not identify the weights.
func ParseHFConfig(data []byte, opts LoadOptions) (ModelSpec, error) {
	if len(data) > maxConfigBytes {
		return ModelSpec{}, fmt.Errorf("parse hf config: %d bytes, limit %d: %w", len(data), maxConfigBytes, ErrInvalidSpec)
	}
	var c hfConfig
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&c); err != nil {
		return ModelSpec{}, fmt.Errorf("parse hf config: %w: %w", ErrInvalidSpec, err)
	}
	if c.NumHiddenLayers == nil && len(c.TextConfig) > 0 && string(c.TextConfig) != "null" {
		// Multimodal configs nest the language model's config.
		var t hfConfig
		if err := json.Unmarshal(c.TextConfig, &t); err != nil {
			return ModelSpec{}, fmt.Errorf("parse hf config: text_config: %w: %w", ErrInvalidSpec, err)
		}
		if t.ModelType == "" {
			t.ModelType = c.ModelType
		}
		if t.TorchDType == "" && t.DType == "" {
			t.TorchDType, t.DType = c.TorchDType, c.DType
		}
		c = t
	}
	if opts.WeightsID == "" {
		return ModelSpec{}, fmt.Errorf("parse hf config: no weights id given (config.json does not identify the weights): %w", ErrInvalidSpec)
	}
	var missing []string
	req := func(name string, v *int) int {
		if v == nil {
			missing = append(missing, name)
			return 0
		}
		return *v
	}
	s := ModelSpec{Arch: c.ModelType, Name: c.ModelType}
	s.Layers = req("num_hidden_layers", c.NumHiddenLayers)
	s.AttnHeads = req("num_attention_heads", c.NumAttentionHeads)
	s.HiddenSize = req("hidden_size", c.HiddenSize)
	s.IntermediateSize = req("intermediate_size", c.IntermediateSize)
	s.VocabSize = req("vocab_size", c.VocabSize)
	s.MaxPositions = req("max_position_embeddings", c.MaxPositionEmbeddings)
	if c.ModelType == "" {
		missing = append(missing, "model_type")
	}
	if len(missing) > 0 {
		return ModelSpec{}, fmt.Errorf("parse hf config: missing %s: %w", strings.Join(missing, ", "), ErrInvalidSpec)
	}
	s.KVHeads = s.AttnHeads
	if c.NumKeyValueHeads != nil {
		s.KVHeads = *c.NumKeyValueHeads
	}
	switch {
	case c.HeadDim != nil:
		s.HeadDim = *c.HeadDim
	case s.AttnHeads > 0 && s.HiddenSize%s.AttnHeads == 0:
		s.HeadDim = s.HiddenSize / s.AttnHeads
	default:
		return ModelSpec{}, fmt.Errorf("parse hf config: no head_dim and hidden_size %d not divisible by num_attention_heads %d: %w",
			s.HiddenSize, s.AttnHeads, ErrInvalidSpec)
	}
	s.NormEps = 1e-6 // LlamaConfig's default
	if c.RMSNormEps != nil {
		s.NormEps = *c.RMSNormEps
	}
	if c.TieWordEmbeddings != nil {
		s.TiedEmbeddings = *c.TieWordEmbeddings
	}
	s.QKVBias = c.ModelType == "qwen2" || c.ModelType == "qwen2_moe"
	if c.AttentionBias != nil {
		s.QKVBias = *c.AttentionBias
	}
	dt := c.TorchDType
	if dt == "" {
		dt = c.DType
	}
	switch dt {
	case "", "float32":
		s.DType = F16
	default:
		d, err := ParseDType(dt)
		if err != nil || d == FP8E4M3 {
			return ModelSpec{}, fmt.Errorf("parse hf config: torch_dtype %q: want float16, bfloat16 or float32: %w", dt, ErrUnsupported)
		}
		s.DType = d
	}
	s.RoPE = RoPE{Theta: 10000, Style: RotateHalf}
	if c.RopeTheta != nil {
		s.RoPE.Theta = *c.RopeTheta
	}
	partial := c.PartialRotaryFactor
	for _, raw := range []json.RawMessage{c.RopeScaling, c.RopeParameters} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var r hfRope
		if err := json.Unmarshal(raw, &r); err != nil {
			return ModelSpec{}, fmt.Errorf("parse hf config: rope_scaling: %w: %w", ErrInvalidSpec, err)
		}
		if r.RopeTheta != nil {
			s.RoPE.Theta = *r.RopeTheta
		}
		if r.PartialRotaryFactor != nil {
			partial = r.PartialRotaryFactor
		}
		typ := r.RopeType
		if typ == "" {
			typ = r.Type
		}
		f := 0.0
		if r.Factor != nil {
			f = *r.Factor
		}
		switch typ {
		case "", "default":
		case "linear":
			s.RoPE.Scaling = RoPEScaling{Type: ScalingLinear, Factor: f}
		case "llama3":
			sc := RoPEScaling{Type: ScalingLlama3, Factor: f}
			if r.LowFreqFactor != nil {
				sc.LowFreqFactor = *r.LowFreqFactor
			}
			if r.HighFreqFactor != nil {
				sc.HighFreqFactor = *r.HighFreqFactor
			}
			if r.OriginalMaxPositionEmbeddings != nil {
				sc.OriginalMaxPositions = *r.OriginalMaxPositionEmbeddings
			}
			s.RoPE.Scaling = sc
		default:
			return ModelSpec{}, fmt.Errorf("parse hf config: rope scaling type %q (supported: default, linear, llama3): %w", typ, ErrUnsupported)
		}
	}
	if partial != nil {
		p := *partial
		if !(p > 0 && p <= 1) {
			return ModelSpec{}, fmt.Errorf("parse hf config: partial_rotary_factor %v, want (0, 1]: %w", p, ErrInvalidSpec)
		}
		// Hugging Face truncates head_dim × factor; a product within 1e-9 of
		// an integer is that integer (0.02×100 must give 2, not 1).
		r := float64(s.HeadDim) * p
		if math.Abs(r-math.Round(r)) < 1e-9 {
			r = math.Round(r)
		}
		if s.RoPE.Dim = int(r); s.RoPE.Dim == s.HeadDim {
			s.RoPE.Dim = 0 // full rotary: the default
		}
	}
	opts.apply(&s)
	if err := s.Validate(); err != nil {
		return ModelSpec{}, fmt.Errorf("parse hf config: %w", err)
	}
	s.Params = s.ComputeParams()
	return s, nil
}

// llama2cHeaderSize is 7 little-endian int32s.
const llama2cHeaderSize = 28

// Llama2CHeader is the header of a llama2.c checkpoint.
type Llama2CHeader struct {
	Dim, HiddenDim, Layers, Heads, KVHeads int
	// VocabSize is negative when the classifier is stored separately.
	VocabSize int
	SeqLen    int
}

// ParseLlama2CHeader decodes and checks the 28-byte header of a llama2.c
// checkpoint.
func ParseLlama2CHeader(b []byte) (Llama2CHeader, error) {
	if len(b) < llama2cHeaderSize {
		return Llama2CHeader{}, fmt.Errorf("parse llama2.c header: %d bytes, want %d: %w", len(b), llama2cHeaderSize, ErrInvalidSpec)
	}
	v := make([]int, 7)
	for i := range v {
		v[i] = int(int32(binary.LittleEndian.Uint32(b[4*i:])))
	}
	h := Llama2CHeader{Dim: v[0], HiddenDim: v[1], Layers: v[2], Heads: v[3], KVHeads: v[4], VocabSize: v[5], SeqLen: v[6]}
	names := []string{"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"}
	limits := []int{maxDim, maxDim, maxLayers, maxHeads, maxHeads, maxVocab, maxPositions}
	for i, x := range v {
		if i == 5 && x < 0 {
			x = -x
		}
		if x < 1 || x > limits[i] {
			return Llama2CHeader{}, fmt.Errorf("parse llama2.c header: %s = %d at offset %d, want 1..%d: %w", names[i], v[i], 4*i, limits[i], ErrInvalidSpec)
		}
	}
	if h.Dim%h.Heads != 0 || (h.Dim/h.Heads)%2 != 0 {
		return Llama2CHeader{}, fmt.Errorf("parse llama2.c header: dim %d / n_heads %d is not an even head size: %w", h.Dim, h.Heads, ErrInvalidSpec)
	}
	if h.KVHeads > h.Heads || h.Heads%h.KVHeads != 0 {
		return Llama2CHeader{}, fmt.Errorf("parse llama2.c header: n_heads %d not a multiple of n_kv_heads %d: %w", h.Heads, h.KVHeads, ErrInvalidSpec)
	}
	// Everything else a ModelSpec requires (head size limits, …).
	s := h.Spec()
	s.WeightsID = "llama2c-header"
	if err := s.Validate(); err != nil {
		return Llama2CHeader{}, fmt.Errorf("parse llama2.c header: %w", err)
	}
	return h, nil
}

// FileFloats is how many float32s follow the header in a checkpoint with
// this header (run.c's memory_map_weights, freq_cis block included).
func (h Llama2CHeader) FileFloats() int64 {
	d, hd, l := int64(h.Dim), int64(h.HiddenDim), int64(h.Layers)
	head := d / int64(h.Heads)
	kv := int64(h.KVHeads) * head
	v := int64(h.VocabSize)
	if v < 0 {
		v = -v
	}
	n := v*d + l*d + l*d*d + 2*l*d*kv + l*d*d + l*d + 3*l*hd*d + d + int64(h.SeqLen)*head
	if h.VocabSize < 0 {
		n += v * d
	}
	return n
}

// Spec is the ModelSpec of a checkpoint with this header: keys rotated in
// adjacent pairs (run.c), theta 10000, RMSNorm eps 1e-5, float32 KV.
func (h Llama2CHeader) Spec() ModelSpec {
	v := h.VocabSize
	if v < 0 {
		v = -v
	}
	s := ModelSpec{
		Name: "llama2c", Arch: "llama",
		Layers: h.Layers, AttnHeads: h.Heads, KVHeads: h.KVHeads, HeadDim: h.Dim / h.Heads,
		HiddenSize: h.Dim, IntermediateSize: h.HiddenDim, VocabSize: v,
		TiedEmbeddings: h.VocabSize > 0, NormEps: 1e-5, DType: F32,
		RoPE: RoPE{Theta: 10000, Style: RotateInterleaved}, MaxPositions: h.SeqLen,
	}
	s.Params = s.ComputeParams()
	return s
}

// LoadLlama2C reads a llama2.c checkpoint's header, checks the file size
// against it, and hashes the file for the weights identity (unless
// opts.WeightsID is set). The name defaults to the file's base name without
// extension.
func LoadLlama2C(path string, opts LoadOptions) (ModelSpec, error) {
	f, err := os.Open(path)
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: %w", path, err)
	}
	hb := make([]byte, llama2cHeaderSize)
	if _, err := io.ReadFull(f, hb); err != nil {
		return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: header: %w: %w", path, ErrInvalidSpec, err)
	}
	h, err := ParseLlama2CHeader(hb)
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: %w", path, err)
	}
	if want := llama2cHeaderSize + 4*h.FileFloats(); st.Size() != want {
		return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: %d bytes, header implies %d: %w", path, st.Size(), want, ErrInvalidSpec)
	}
	s := h.Spec()
	s.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	if opts.WeightsID == "" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: %w", path, err)
		}
		if s.WeightsID, err = hashFile(f); err != nil {
			return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: %w", path, err)
		}
	}
	opts.apply(&s)
	if err := s.Validate(); err != nil {
		return ModelSpec{}, fmt.Errorf("load llama2.c checkpoint %s: %w", path, err)
	}
	return s, nil
}

func hashFile(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("hash weights: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// intInRange converts a metadata number to int, failing on fractions and
// values outside [lo, hi].
func intInRange(name string, v float64, lo, hi int) (int, error) {
	if math.IsNaN(v) || v != math.Trunc(v) || v < float64(lo) || v > float64(hi) {
		return 0, fmt.Errorf("%s = %v, want an integer in %d..%d: %w", name, v, lo, hi, ErrInvalidSpec)
	}
	return int(v), nil
}
