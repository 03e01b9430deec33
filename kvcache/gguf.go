package kvcache

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"

	gguf "github.com/gpustack/gguf-parser-go"
)

// ggufRotation is the RoPE style llama.cpp uses per GGUF architecture
// (llama_model_rope_type: LLAMA_ROPE_TYPE_NORM rotates adjacent pairs, because
// convert_hf_to_gguf.py permutes Llama-family q/k weights; NEOX rotates
// halves). Architectures not listed are refused rather than guessed.
var ggufRotation = map[string]RotationStyle{
	"llama": RotateInterleaved, "mistral": RotateInterleaved, "mistral3": RotateInterleaved,
	"granite": RotateInterleaved, "deci": RotateInterleaved, "baichuan": RotateInterleaved,
	"internlm2": RotateInterleaved, "minicpm": RotateInterleaved, "xverse": RotateInterleaved,
	"command-r": RotateInterleaved, "olmo": RotateInterleaved, "deepseek": RotateInterleaved,
	"qwen": RotateHalf, "qwen2": RotateHalf, "qwen2moe": RotateHalf, "qwen3": RotateHalf,
	"qwen3moe": RotateHalf, "phi2": RotateHalf, "phi3": RotateHalf, "gemma": RotateHalf,
	"gemma2": RotateHalf, "gemma3": RotateHalf, "stablelm": RotateHalf, "starcoder2": RotateHalf,
	"falcon": RotateHalf, "gptneox": RotateHalf, "olmo2": RotateHalf, "nemotron": RotateHalf,
	"exaone": RotateHalf,
}

// ggufMeta reads typed values out of GGUF metadata without the parser's
// panicking accessors.
type ggufMeta struct{ kvs gguf.GGUFMetadataKVs }

func (m ggufMeta) number(key string) (float64, bool, error) {
	kv, ok := m.kvs.Get(key)
	if !ok {
		return 0, false, nil
	}
	var v float64
	switch x := kv.Value.(type) {
	case uint8:
		v = float64(x)
	case int8:
		v = float64(x)
	case uint16:
		v = float64(x)
	case int16:
		v = float64(x)
	case uint32:
		v = float64(x)
	case int32:
		v = float64(x)
	case uint64:
		v = float64(x)
	case int64:
		v = float64(x)
	case float32:
		v = float64(x)
	case float64:
		v = x
	default:
		return 0, true, fmt.Errorf("gguf key %s holds a %v, want a number: %w", key, kv.ValueType, ErrInvalidSpec)
	}
	return v, true, nil
}

func (m ggufMeta) int(key string, lo, hi int) (int, bool, error) {
	v, ok, err := m.number(key)
	if !ok || err != nil {
		return 0, ok, err
	}
	n, err := intInRange("gguf key "+key, v, lo, hi)
	return n, true, err
}

// uniformInt reads a number that may also be stored per layer as an array
// (llama.cpp allows that for head counts and FFN sizes); the values must be
// equal, because a ModelSpec has one shape per model.
func (m ggufMeta) uniformInt(key string, lo, hi int) (int, bool, error) {
	kv, ok := m.kvs.Get(key)
	if !ok {
		return 0, false, nil
	}
	if kv.ValueType != gguf.GGUFMetadataValueTypeArray {
		return m.int(key, lo, hi)
	}
	av, isArr := kv.Value.(gguf.GGUFMetadataKVArrayValue)
	if !isArr || len(av.Array) == 0 {
		return 0, true, fmt.Errorf("gguf key %s: empty or unreadable array: %w", key, ErrInvalidSpec)
	}
	first := -1
	for i, e := range av.Array {
		sub := ggufMeta{kvs: gguf.GGUFMetadataKVs{{Key: key, ValueType: av.Type, Value: e}}}
		n, _, err := sub.int(key, lo, hi)
		if err != nil {
			return 0, true, fmt.Errorf("gguf key %s[%d]: %w", key, i, err)
		}
		if first >= 0 && n != first {
			return 0, true, fmt.Errorf("gguf key %s differs between layers (%d vs %d): %w", key, first, n, ErrUnsupported)
		}
		first = n
	}
	return first, true, nil
}

func (m ggufMeta) string(key string) (string, bool, error) {
	kv, ok := m.kvs.Get(key)
	if !ok {
		return "", false, nil
	}
	s, isStr := kv.Value.(string)
	if kv.ValueType != gguf.GGUFMetadataValueTypeString || !isStr {
		return "", true, fmt.Errorf("gguf key %s holds a %v, want a string: %w", key, kv.ValueType, ErrInvalidSpec)
	}
	return s, true, nil
}

// parseGGUF runs the parser, turning its panics (it panics on some
// malformed metadata, e.g. a general.alignment that is not a uint32 or is
// zero) into errors: input must never crash kvloom.
func parseGGUF(path string) (gf *gguf.GGUFFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			gf, err = nil, fmt.Errorf("gguf parser rejected the file: %v: %w", r, ErrInvalidSpec)
		}
	}()
	gf, err = gguf.ParseGGUFFile(path, gguf.SkipLargeMetadata())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	return gf, nil
}

// LoadGGUF reads a model's spec from GGUF metadata ({arch}.block_count,
// .attention.head_count[_kv], .attention.key_length, .embedding_length,
// .feed_forward_length, .context_length, .rope.*), and llama.cpp's
// rope_freqs tensor when present (Llama 3.1 scaling as per-frequency
// factors). The KV dtype defaults to f16 and the weights identity to the
// file's SHA-256 (a full read of the file); see LoadOptions.
func LoadGGUF(path string, opts LoadOptions) (ModelSpec, error) {
	s, err := loadGGUF(path, opts)
	if err != nil {
		return ModelSpec{}, fmt.Errorf("load gguf %s: %w", path, err)
	}
	return s, nil
}

func loadGGUF(path string, opts LoadOptions) (ModelSpec, error) {
	gf, err := parseGGUF(path)
	if err != nil {
		return ModelSpec{}, err
	}
	m := ggufMeta{kvs: gf.Header.MetadataKV}
	arch, ok, err := m.string("general.architecture")
	if err != nil {
		return ModelSpec{}, err
	}
	if !ok || arch == "" {
		return ModelSpec{}, fmt.Errorf("no general.architecture: %w", ErrInvalidSpec)
	}
	style, known := ggufRotation[arch]
	if !known {
		return ModelSpec{}, fmt.Errorf("architecture %q: its RoPE layout is not known to kvcache: %w", arch, ErrUnsupported)
	}
	var errs []error
	need := func(key string, lo, hi int, uniform bool) int {
		var n int
		var found bool
		var err error
		if uniform {
			n, found, err = m.uniformInt(arch+"."+key, lo, hi)
		} else {
			n, found, err = m.int(arch+"."+key, lo, hi)
		}
		switch {
		case err != nil:
			errs = append(errs, err)
		case !found:
			errs = append(errs, fmt.Errorf("missing %s.%s: %w", arch, key, ErrInvalidSpec))
		}
		return n
	}
	s := ModelSpec{Arch: arch, DType: F16, RoPE: RoPE{Style: style, Theta: 10000}}
	s.Layers = need("block_count", 1, maxLayers, false)
	s.AttnHeads = need("attention.head_count", 1, maxHeads, true)
	s.HiddenSize = need("embedding_length", 1, maxDim, false)
	s.IntermediateSize = need("feed_forward_length", 1, maxDim, true)
	s.MaxPositions = need("context_length", 1, maxPositions, false)
	if len(errs) > 0 {
		return ModelSpec{}, joinErrors(errs)
	}
	opt := func(key string, lo, hi int, def int, uniform bool) int {
		var n int
		var found bool
		var err error
		if uniform {
			n, found, err = m.uniformInt(arch+"."+key, lo, hi)
		} else {
			n, found, err = m.int(arch+"."+key, lo, hi)
		}
		if err != nil {
			errs = append(errs, err)
		}
		if !found {
			return def
		}
		return n
	}
	s.KVHeads = opt("attention.head_count_kv", 1, maxHeads, s.AttnHeads, true)
	if s.HiddenSize%s.AttnHeads != 0 {
		s.HeadDim = opt("attention.key_length", 1, maxHeadDim, 0, false)
	} else {
		s.HeadDim = opt("attention.key_length", 1, maxHeadDim, s.HiddenSize/s.AttnHeads, false)
	}
	if vl := opt("attention.value_length", 1, maxHeadDim, s.HeadDim, false); vl != s.HeadDim {
		errs = append(errs, fmt.Errorf("value length %d differs from key length %d: %w", vl, s.HeadDim, ErrUnsupported))
	}
	if rd := opt("rope.dimension_count", 1, maxHeadDim, 0, false); rd != s.HeadDim {
		s.RoPE.Dim = rd
	}
	if v, ok, err := m.number(arch + ".rope.freq_base"); err != nil {
		errs = append(errs, err)
	} else if ok {
		s.RoPE.Theta = v
	}
	s.NormEps = 1e-5
	if v, ok, err := m.number(arch + ".attention.layer_norm_rms_epsilon"); err != nil {
		errs = append(errs, err)
	} else if ok {
		s.NormEps = v
	}
	s.VocabSize = opt("vocab_size", 1, maxVocab, 0, false)
	if s.VocabSize == 0 {
		if kv, ok := gf.Header.MetadataKV.Get("tokenizer.ggml.tokens"); ok {
			if av, isArr := kv.Value.(gguf.GGUFMetadataKVArrayValue); isArr && av.Len <= maxVocab {
				s.VocabSize = int(av.Len)
			}
		}
	}
	if s.VocabSize == 0 {
		errs = append(errs, fmt.Errorf("no vocab size (%s.vocab_size or tokenizer.ggml.tokens): %w", arch, ErrInvalidSpec))
	}
	if err := readGGUFScaling(m, arch, &s.RoPE.Scaling); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return ModelSpec{}, joinErrors(errs)
	}
	if name, ok, err := m.string("general.name"); err == nil && ok && name != "" {
		s.Name = name
	} else {
		s.Name = arch
	}
	_, hasOutput := gf.TensorInfos.Get("output.weight")
	s.TiedEmbeddings = !hasOutput
	_, s.QKVBias = gf.TensorInfos.Get("blk.0.attn_q.bias")
	if ti, ok := gf.TensorInfos.Get("rope_freqs.weight"); ok {
		if s.RoPE.Scaling.Type != ScalingNone {
			return ModelSpec{}, fmt.Errorf("both %s.rope.scaling.type %v and a rope_freqs tensor: %w", arch, s.RoPE.Scaling.Type, ErrUnsupported)
		}
		ff, err := readRopeFreqs(path, gf, ti)
		if err != nil {
			return ModelSpec{}, err
		}
		s.RoPE.Scaling = RoPEScaling{Type: ScalingFreqFactors, FreqFactors: ff}
	}
	s.Params = int64(gf.ModelParameters)
	if s.Params <= 0 || s.Params > 1<<50 {
		s.Params = s.ComputeParams()
	}
	if opts.WeightsID == "" {
		f, err := os.Open(path)
		if err != nil {
			return ModelSpec{}, err
		}
		defer f.Close()
		if s.WeightsID, err = hashFile(f); err != nil {
			return ModelSpec{}, err
		}
	}
	opts.apply(&s)
	if err := s.Validate(); err != nil {
		return ModelSpec{}, err
	}
	return s, nil
}

func readGGUFScaling(m ggufMeta, arch string, sc *RoPEScaling) error {
	typ, ok, err := m.string(arch + ".rope.scaling.type")
	if err != nil {
		return err
	}
	factor, fok, err := m.number(arch + ".rope.scaling.factor")
	if err != nil {
		return err
	}
	switch {
	case !ok && !fok, typ == "none":
		return nil
	case typ == "linear" || (!ok && fok):
		// llama.cpp reads a bare factor as linear scaling.
		if fok && factor == 1 && !ok {
			return nil
		}
		*sc = RoPEScaling{Type: ScalingLinear, Factor: factor}
		return nil
	}
	return fmt.Errorf("%s.rope.scaling.type %q (supported: none, linear; llama3 via rope_freqs): %w", arch, typ, ErrUnsupported)
}

// readRopeFreqs reads llama.cpp's rope_freqs tensor: rope dim/2 float32
// divisors of the RoPE frequencies.
func readRopeFreqs(path string, gf *gguf.GGUFFile, ti gguf.GGUFTensorInfo) ([]float64, error) {
	if ti.Type != gguf.GGMLTypeF32 || ti.NDimensions != 1 || len(ti.Dimensions) != 1 || ti.Dimensions[0] == 0 || ti.Dimensions[0] > maxHeadDim {
		return nil, fmt.Errorf("rope_freqs tensor: type %v, dims %v, want 1..%d float32s: %w", ti.Type, ti.Dimensions, maxHeadDim, ErrInvalidSpec)
	}
	n := int(ti.Dimensions[0])
	off := gf.TensorDataStartOffset + int64(ti.Offset)
	if ti.Offset > math.MaxInt32 || off < 0 || off+int64(4*n) > int64(gf.Size) {
		return nil, fmt.Errorf("rope_freqs tensor at offset %d (+%d bytes) lies outside the %d-byte file: %w", off, 4*n, int64(gf.Size), ErrInvalidSpec)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 4*n)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read rope_freqs tensor: %w", err)
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:])))
	}
	return out, nil
}
