package kvcache

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

var writeSeeds = flag.Bool("write-seeds", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// hfJSONFromSpec writes the config.json Hugging Face would hold for s.
func hfJSONFromSpec(s ModelSpec) []byte {
	m := map[string]any{
		"model_type": s.Arch, "num_hidden_layers": s.Layers, "num_attention_heads": s.AttnHeads,
		"num_key_value_heads": s.KVHeads, "head_dim": s.HeadDim, "hidden_size": s.HiddenSize,
		"intermediate_size": s.IntermediateSize, "vocab_size": s.VocabSize,
		"max_position_embeddings": s.MaxPositions, "rms_norm_eps": s.NormEps, "rope_theta": s.RoPE.Theta,
		"torch_dtype":         map[DType]string{F16: "float16", BF16: "bfloat16", F32: "float32"}[s.DType],
		"tie_word_embeddings": s.TiedEmbeddings, "attention_bias": s.QKVBias,
	}
	if s.RoPE.Dim != 0 {
		m["partial_rotary_factor"] = float64(s.RoPE.Dim) / float64(s.HeadDim)
	}
	switch sc := s.RoPE.Scaling; sc.Type {
	case ScalingLinear:
		m["rope_scaling"] = map[string]any{"type": "linear", "factor": sc.Factor}
	case ScalingLlama3:
		m["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": sc.Factor, "low_freq_factor": sc.LowFreqFactor,
			"high_freq_factor": sc.HighFreqFactor, "original_max_position_embeddings": sc.OriginalMaxPositions}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

func hfSeeds() [][]byte {
	var seeds [][]byte
	for _, name := range []string{"llama-2-7b", "llama-3-8b", "llama-3.1-8b", "llama-3-70b", "mistral-7b", "yi-34b", "qwen2.5-7b"} {
		b, err := os.ReadFile(filepath.Join("testdata", "hf", name, "config.json"))
		if err != nil {
			panic(err)
		}
		seeds = append(seeds, b)
	}
	return append(seeds,
		[]byte(`{"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"hidden_size":64,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":64,"rope_scaling":{"type":"linear","factor":2}}`),
		[]byte(`{"model_type":"x","text_config":{"num_hidden_layers":1}}`),
		[]byte(`{"num_hidden_layers":1e400}`),
		[]byte(`[]`),
	)
}

func FuzzParseHFConfig(f *testing.F) {
	for _, s := range hfSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseHFConfig(data, LoadOptions{WeightsID: "fuzz"})
		if err != nil {
			if !reflect.DeepEqual(s, ModelSpec{}) {
				t.Fatalf("error %v with a non-zero spec", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("parsed spec does not validate: %v", err)
		}
		again, err := ParseHFConfig(hfJSONFromSpec(s), LoadOptions{WeightsID: "fuzz"})
		if err != nil {
			t.Fatalf("re-encoded config fails: %v\n%s", err, hfJSONFromSpec(s))
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, s)
		}
	})
}

func ggufSeeds() [][]byte {
	var seeds [][]byte
	for _, s := range Presets() {
		if _, ok := ggufRotation[s.Arch]; !ok {
			s.Arch = "llama"
		}
		s.RoPE.Style = ggufRotation[s.Arch]
		s.DType = F16
		seeds = append(seeds, ggufFromSpec(s))
	}
	s, _ := Preset("stories260K")
	s.RoPE.Scaling = RoPEScaling{Type: ScalingFreqFactors, FreqFactors: []float64{1, 2, 4, 8}}
	seeds = append(seeds, ggufFromSpec(s))
	return append(seeds,
		writeGGUF([]ggufKV{{"general.architecture", gStr, "llama"}, {"general.alignment", gU32, 0}}, nil),
		writeGGUF([]ggufKV{{"general.architecture", gStr, "llama"}, {"llama.attention.head_count", gArr, ggufArray{gU32, []any{4, 4}}}}, nil),
		[]byte("GGUF\x03\x00\x00\x00"),
	)
}

func FuzzLoadGGUF(f *testing.F) {
	for _, s := range ggufSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "m.gguf")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := LoadGGUF(p, LoadOptions{WeightsID: "fuzz"})
		if err != nil {
			if !reflect.DeepEqual(s, ModelSpec{}) {
				t.Fatalf("error %v with a non-zero spec", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("loaded spec does not validate: %v", err)
		}
		q := filepath.Join(dir, "again.gguf")
		if err := os.WriteFile(q, ggufFromSpec(s), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := LoadGGUF(q, LoadOptions{WeightsID: "fuzz"})
		if err != nil {
			t.Fatalf("re-encoded file fails: %v", err)
		}
		again.Params = s.Params // counted from the tensors, which differ
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, s)
		}
	})
}

// TestWriteFuzzSeeds rewrites the seed-NN files of testdata/fuzz/<target>/
// from the seed builders when run with -write-seeds; otherwise it checks the
// corpora exist.
func TestWriteFuzzSeeds(t *testing.T) {
	corpora := map[string][][]byte{
		"FuzzParseHFConfig":      hfSeeds(),
		"FuzzLoadGGUF":           ggufSeeds(),
		"FuzzDecodeBlob":         blobSeeds(t),
		"FuzzParsePolicy":        policySeeds(),
		"FuzzParseLlama2CHeader": llama2cSeeds(),
	}
	for target, seeds := range corpora {
		dir := filepath.Join("testdata", "fuzz", target)
		if !*writeSeeds {
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) == 0 {
				t.Errorf("seed corpus %s missing (run go test -run TestWriteFuzzSeeds -write-seeds): %v", dir, err)
			}
			continue
		}
		// Only seed-NN files are rewritten: inputs the fuzzer found stay.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func policySeeds() [][]byte {
	return [][]byte{[]byte("none"), []byte("full"), []byte("epic:4"), []byte("ratio:0.15"), []byte("ratio:15%"), []byte("epic:"), []byte("ratio:1e-300")}
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range policySeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePolicy(string(data))
		if err != nil {
			if p != (Policy{}) {
				t.Fatalf("error %v with policy %+v", err, p)
			}
			return
		}
		again, err := ParsePolicy(p.String())
		if err != nil || again != p {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", data, p, p.String(), again, err)
		}
	})
}

func llama2cSeeds() [][]byte {
	h := func(v ...int32) []byte {
		b := make([]byte, 0, 28)
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, uint32(x))
		}
		return b
	}
	return [][]byte{h(64, 172, 5, 8, 4, 512, 512), h(288, 768, 6, 6, 6, -32000, 256), h(64, 172, 5, 8, 3, 512, 512), h(0, 0, 0, 0, 0, 0, 0), []byte("short")}
}

func FuzzParseLlama2CHeader(f *testing.F) {
	for _, s := range llama2cSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseLlama2CHeader(data)
		if err != nil {
			if h != (Llama2CHeader{}) {
				t.Fatalf("error %v with header %+v", err, h)
			}
			return
		}
		s := h.Spec()
		s.WeightsID = "fuzz"
		if err := s.Validate(); err != nil {
			t.Fatalf("header %+v accepted but its spec is invalid: %v", h, err)
		}
		if h.FileFloats() <= 0 {
			t.Fatalf("header %+v implies %d floats", h, h.FileFloats())
		}
	})
}
