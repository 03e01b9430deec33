package kvcache

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/kvloom/kvloom/matcher"
)

// RotationStyle says which elements of a head RoPE rotates together.
type RotationStyle uint8

const (
	// RotateHalf pairs element i with element i+d/2 (GPT-NeoX, and every
	// Hugging Face Llama-family implementation: rotate_half).
	RotateHalf RotationStyle = iota + 1
	// RotateInterleaved pairs elements 2i and 2i+1 (GPT-J, llama2.c, and
	// llama.cpp's "norm" RoPE for Llama-family GGUF files).
	RotateInterleaved
)

// String returns "neox" or "gptj".
func (r RotationStyle) String() string {
	switch r {
	case RotateHalf:
		return "neox"
	case RotateInterleaved:
		return "gptj"
	}
	return fmt.Sprintf("rotation(%d)", uint8(r))
}

// ScalingType is a RoPE frequency scaling scheme.
type ScalingType uint8

const (
	// ScalingNone uses inv_freq[i] = theta^(-2i/d) unchanged.
	ScalingNone ScalingType = iota
	// ScalingLinear divides every frequency by Factor (position
	// interpolation; Hugging Face rope_type "linear").
	ScalingLinear
	// ScalingLlama3 is Llama 3.1's scheme (Hugging Face rope_type "llama3"):
	// low frequencies divided by Factor, high ones kept, a smooth blend
	// between LowFreqFactor and HighFreqFactor wavelengths.
	ScalingLlama3
	// ScalingFreqFactors divides frequency i by FreqFactors[i]: how llama.cpp
	// stores Llama 3.1 scaling in GGUF files (the rope_freqs tensor).
	ScalingFreqFactors
)

// String returns the Hugging Face rope_type name.
func (s ScalingType) String() string {
	switch s {
	case ScalingNone:
		return "none"
	case ScalingLinear:
		return "linear"
	case ScalingLlama3:
		return "llama3"
	case ScalingFreqFactors:
		return "freq-factors"
	}
	return fmt.Sprintf("scaling(%d)", uint8(s))
}

// RoPEScaling holds the parameters of a scaling scheme; fields a scheme does
// not use must be zero.
type RoPEScaling struct {
	Type   ScalingType
	Factor float64 // linear, llama3: > 0
	// llama3 only.
	LowFreqFactor        float64
	HighFreqFactor       float64
	OriginalMaxPositions int
	// freq-factors only: one divisor per rotated pair (RoPE.Dim/2 values).
	FreqFactors []float64
}

// RoPE describes rotary position embeddings as they were applied to the
// cached keys.
type RoPE struct {
	Theta float64 // base, e.g. 10000 or 500000
	Style RotationStyle
	// Dim is the number of dimensions of each head that are rotated (partial
	// rotary models rotate fewer than HeadDim). Zero means HeadDim.
	Dim     int
	Scaling RoPEScaling
}

// ModelSpec is what kvloom must know about a model to store, move and stitch
// its KV cache, and what the simulator needs to estimate its cost.
//
// Every field that changes the KV (and WeightsID, which names the trained
// weights) enters Fingerprint; Name, MaxPositions, Params, TiedEmbeddings and
// QKVBias do not.
type ModelSpec struct {
	Name string // preset or display name
	Arch string // architecture family: "llama", "mistral", "qwen2", …

	Layers    int
	AttnHeads int // query heads
	KVHeads   int // key/value heads (< AttnHeads with grouped-query attention)
	HeadDim   int

	HiddenSize       int // model dimension
	IntermediateSize int // MLP inner dimension
	VocabSize        int
	// Params is the parameter count (published where known, else
	// ComputeParams' Llama-family count).
	Params         int64
	TiedEmbeddings bool // classifier shares the embedding matrix
	QKVBias        bool // attention projections carry biases (Qwen2)
	NormEps        float64

	DType        DType // dtype of the KV cache
	RoPE         RoPE
	MaxPositions int

	// WeightsID names the trained weights ("hf:org/model@rev",
	// "sha256:<hex of the checkpoint>"). Two fine-tunes of one architecture
	// have different KV: they must not share a WeightsID.
	WeightsID string
}

// Limits Validate enforces. They are far above any real model and keep
// derived sizes well inside int64.
const (
	maxLayers    = 1 << 12
	maxHeads     = 1 << 12
	maxHeadDim   = 1 << 12
	maxDim       = 1 << 20
	maxVocab     = 1 << 24
	maxPositions = 1 << 30
	maxIDLen     = 1 << 10
)

// Validate reports every inconsistency at once.
func (s ModelSpec) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	inRange := func(name string, v, lo, hi int) {
		if v < lo || v > hi {
			bad("%s = %d, want %d..%d", name, v, lo, hi)
		}
	}
	inRange("layers", s.Layers, 1, maxLayers)
	inRange("attention heads", s.AttnHeads, 1, maxHeads)
	inRange("kv heads", s.KVHeads, 1, maxHeads)
	inRange("head dim", s.HeadDim, 2, maxHeadDim)
	inRange("hidden size", s.HiddenSize, 1, maxDim)
	inRange("intermediate size", s.IntermediateSize, 1, maxDim)
	inRange("vocab size", s.VocabSize, 1, maxVocab)
	inRange("max positions", s.MaxPositions, 1, maxPositions)
	if s.KVHeads > 0 && s.AttnHeads > 0 && s.AttnHeads%s.KVHeads != 0 {
		bad("attention heads %d not a multiple of kv heads %d", s.AttnHeads, s.KVHeads)
	}
	if s.Params < 0 {
		bad("params = %d, want >= 0", s.Params)
	}
	if s.NormEps < 0 || math.IsNaN(s.NormEps) || math.IsInf(s.NormEps, 0) {
		bad("norm eps = %v, want a finite value >= 0", s.NormEps)
	}
	if !s.DType.Valid() {
		bad("dtype %v unknown", s.DType)
	}
	if s.WeightsID == "" || len(s.WeightsID) > maxIDLen {
		bad("weights id has %d bytes, want 1..%d", len(s.WeightsID), maxIDLen)
	}
	if err := s.RoPE.validate(s.HeadDim); err != "" {
		bad("%s", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("model %q: %s: %w", s.Name, strings.Join(errs, "; "), ErrInvalidSpec)
	}
	return nil
}

func finitePos(v float64) bool { return v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) }

func (r *RoPE) validate(headDim int) string {
	var errs []string
	if !finitePos(r.Theta) || r.Theta <= 1 {
		errs = append(errs, fmt.Sprintf("rope theta = %v, want a finite value > 1", r.Theta))
	}
	if r.Style != RotateHalf && r.Style != RotateInterleaved {
		errs = append(errs, fmt.Sprintf("rope style %v unknown", r.Style))
	}
	d := r.Dim
	if d == 0 {
		d = headDim
	}
	if d < 2 || d%2 != 0 || d > headDim {
		errs = append(errs, fmt.Sprintf("rope dim = %d, want an even value in 2..head dim %d", d, headDim))
	}
	sc := &r.Scaling
	switch sc.Type {
	case ScalingNone:
		if sc.Factor != 0 || sc.LowFreqFactor != 0 || sc.HighFreqFactor != 0 || sc.OriginalMaxPositions != 0 || sc.FreqFactors != nil {
			errs = append(errs, "rope scaling none carries parameters")
		}
	case ScalingLinear:
		if !finitePos(sc.Factor) {
			errs = append(errs, fmt.Sprintf("rope linear factor = %v, want > 0", sc.Factor))
		}
		if sc.LowFreqFactor != 0 || sc.HighFreqFactor != 0 || sc.OriginalMaxPositions != 0 || sc.FreqFactors != nil {
			errs = append(errs, "rope linear scaling carries llama3 or freq-factor parameters")
		}
	case ScalingLlama3:
		if !finitePos(sc.Factor) {
			errs = append(errs, fmt.Sprintf("rope llama3 factor = %v, want > 0", sc.Factor))
		}
		if !finitePos(sc.LowFreqFactor) || !finitePos(sc.HighFreqFactor) || sc.HighFreqFactor <= sc.LowFreqFactor {
			errs = append(errs, fmt.Sprintf("rope llama3 low/high freq factors = %v/%v, want 0 < low < high", sc.LowFreqFactor, sc.HighFreqFactor))
		}
		if sc.OriginalMaxPositions < 1 || sc.OriginalMaxPositions > maxPositions {
			errs = append(errs, fmt.Sprintf("rope llama3 original max positions = %d, want 1..%d", sc.OriginalMaxPositions, maxPositions))
		}
		if sc.FreqFactors != nil {
			errs = append(errs, "rope llama3 scaling carries freq factors")
		}
	case ScalingFreqFactors:
		if len(sc.FreqFactors) != d/2 {
			errs = append(errs, fmt.Sprintf("rope freq factors: %d values, want rope dim/2 = %d", len(sc.FreqFactors), d/2))
		}
		for i, f := range sc.FreqFactors {
			if !finitePos(f) {
				errs = append(errs, fmt.Sprintf("rope freq factor %d = %v, want > 0", i, f))
				break
			}
		}
		if sc.Factor != 0 || sc.LowFreqFactor != 0 || sc.HighFreqFactor != 0 || sc.OriginalMaxPositions != 0 {
			errs = append(errs, "rope freq-factors scaling carries linear or llama3 parameters")
		}
	default:
		errs = append(errs, fmt.Sprintf("rope scaling type %v unknown", sc.Type))
	}
	return strings.Join(errs, "; ")
}

// RotaryDim is the number of rotated dimensions per head.
func (s ModelSpec) RotaryDim() int {
	if s.RoPE.Dim == 0 {
		return s.HeadDim
	}
	return s.RoPE.Dim
}

// Shape is the KV shape of the model: what a chunk's payload looks like.
func (s ModelSpec) Shape() Shape {
	return Shape{Layers: s.Layers, KVHeads: s.KVHeads, HeadDim: s.HeadDim, DType: s.DType}
}

// KVBytesPerToken is the size of one token's KV over all layers (K and V) in
// the spec's dtype.
func (s ModelSpec) KVBytesPerToken() int { return s.Shape().TokenBytes() }

// GQAGroup is the number of query heads sharing one KV head.
func (s ModelSpec) GQAGroup() int { return s.AttnHeads / s.KVHeads }

// ComputeParams counts the parameters of a Llama-family decoder (RMSNorm,
// SwiGLU MLP, optional q/k/v biases, tied or separate classifier) from the
// spec's dimensions.
func (s ModelSpec) ComputeParams() int64 {
	h := int64(s.HiddenSize)
	q := int64(s.AttnHeads) * int64(s.HeadDim)
	kv := int64(s.KVHeads) * int64(s.HeadDim)
	perLayer := h*q + 2*h*kv + q*h + 3*h*int64(s.IntermediateSize) + 2*h
	if s.QKVBias {
		perLayer += q + 2*kv
	}
	n := int64(s.Layers)*perLayer + int64(s.VocabSize)*h + h
	if !s.TiedEmbeddings {
		n += int64(s.VocabSize) * h
	}
	return n
}

// FingerprintSize is the size of a model fingerprint in bytes.
const FingerprintSize = sha256.Size

// fingerprintDomain versions the fingerprint encoding: changing what enters
// it changes every fingerprint, hence every chunk key.
const fingerprintDomain = "kvloom/modelspec/v1\x00"

// Fingerprint is SHA-256 over a canonical encoding of every field that
// changes the KV: architecture, layer and head counts, head dim, hidden,
// intermediate and vocab sizes, norm eps, KV dtype, all RoPE parameters, and
// WeightsID. The first 8 bytes seed matcher salts (see Salt). The encoding is
// in docs/formats.md and pinned by test vectors.
func (s ModelSpec) Fingerprint() [FingerprintSize]byte {
	b := make([]byte, 0, 256)
	b = append(b, fingerprintDomain...)
	str := func(v string) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	u := func(v int) { b = binary.LittleEndian.AppendUint64(b, uint64(v)) }
	f := func(v float64) { b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v)) }
	str(s.Arch)
	u(s.Layers)
	u(s.AttnHeads)
	u(s.KVHeads)
	u(s.HeadDim)
	u(s.HiddenSize)
	u(s.IntermediateSize)
	u(s.VocabSize)
	f(s.NormEps)
	b = append(b, byte(s.DType))
	f(s.RoPE.Theta)
	b = append(b, byte(s.RoPE.Style))
	u(s.RotaryDim())
	sc := &s.RoPE.Scaling
	b = append(b, byte(sc.Type))
	f(sc.Factor)
	f(sc.LowFreqFactor)
	f(sc.HighFreqFactor)
	u(sc.OriginalMaxPositions)
	u(len(sc.FreqFactors))
	for _, v := range sc.FreqFactors {
		f(v)
	}
	str(s.WeightsID)
	return sha256.Sum256(b)
}

// Salt derives the matcher salt of a tenant under this model (see
// matcher.NewSalt); an empty tenant gives the shared salt.
func (s ModelSpec) Salt(tenant string) (matcher.Salt, error) {
	fp := s.Fingerprint()
	if tenant == "" {
		return matcher.SharedSalt(fp[:])
	}
	return matcher.NewSalt(fp[:], tenant)
}

// String is a one-line summary for logs and CLI output.
func (s ModelSpec) String() string {
	return fmt.Sprintf("%s (%s): %d layers, %d/%d heads, head dim %d, %s KV %d B/token, rope %s theta %g %s",
		s.Name, s.Arch, s.Layers, s.AttnHeads, s.KVHeads, s.HeadDim, s.DType, s.KVBytesPerToken(),
		s.RoPE.Style, s.RoPE.Theta, s.RoPE.Scaling.Type)
}

// MarshalText writes "neox" or "gptj".
func (r RotationStyle) MarshalText() ([]byte, error) {
	if r != RotateHalf && r != RotateInterleaved {
		return nil, fmt.Errorf("rotation style %d: %w", uint8(r), ErrInvalidSpec)
	}
	return []byte(r.String()), nil
}

// UnmarshalText reads "neox" (or "half") and "gptj" (or "interleaved").
func (r *RotationStyle) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "neox", "half":
		*r = RotateHalf
	case "gptj", "interleaved":
		*r = RotateInterleaved
	default:
		return fmt.Errorf("rotation style %q: want neox or gptj: %w", b, ErrInvalidSpec)
	}
	return nil
}

// MarshalText writes the scaling's name.
func (s ScalingType) MarshalText() ([]byte, error) {
	if s > ScalingFreqFactors {
		return nil, fmt.Errorf("scaling type %d: %w", uint8(s), ErrInvalidSpec)
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads none, linear, llama3 or freq-factors.
func (s *ScalingType) UnmarshalText(b []byte) error {
	for t := ScalingNone; t <= ScalingFreqFactors; t++ {
		if t.String() == strings.ToLower(string(b)) {
			*s = t
			return nil
		}
	}
	return fmt.Errorf("rope scaling %q: want none, linear, llama3 or freq-factors: %w", b, ErrUnsupported)
}
