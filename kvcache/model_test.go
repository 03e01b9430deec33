package kvcache

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
)

func TestPresetKVBytesPerToken(t *testing.T) {
	// Published KV sizes per token in 16-bit precision.
	tests := []struct {
		name string
		want int
	}{
		{"llama-2-7b", 512 << 10},
		{"llama-3-8b", 128 << 10},
		{"llama-3.1-8b", 128 << 10},
		{"mistral-7b", 128 << 10},
		{"llama-3-70b", 320 << 10},
		{"yi-34b", 240 << 10},
		{"qwen2.5-7b", 56 << 10},
		{"stories260K", 1280}, // README: 5 layers × (32 + 32) float32
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Preset(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.KVBytesPerToken(); got != tc.want {
				t.Fatalf("KVBytesPerToken = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestPresetsValidAndParamsConsistent(t *testing.T) {
	if len(PresetNames()) < 7 {
		t.Fatalf("only %d presets", len(PresetNames()))
	}
	fps := map[[32]byte]string{}
	for _, s := range Presets() {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		if got := s.ComputeParams(); got != s.Params {
			t.Errorf("%s: ComputeParams = %d, published %d", s.Name, got, s.Params)
		}
		fp := s.Fingerprint()
		if other, dup := fps[fp]; dup {
			t.Errorf("%s and %s share a fingerprint", s.Name, other)
		}
		fps[fp] = s.Name
	}
	if _, err := Preset("gpt-5"); !errors.Is(err, ErrUnknownPreset) {
		t.Fatalf("Preset(gpt-5) err = %v, want ErrUnknownPreset", err)
	}
	// Presets returns copies: changing one must not change the next call's.
	p := Presets()
	p[0].Layers = 1
	if q, _ := Preset(p[0].Name); q.Layers == 1 {
		t.Fatal("Presets shares state between calls")
	}
}

func TestFingerprintVectors(t *testing.T) {
	// Pinned: a change to the fingerprint encoding changes every chunk key
	// and must be deliberate (bump fingerprintDomain, update docs/formats.md).
	want := map[string]string{
		"stories260K": "",
		"llama-3-8b":  "",
	}
	golden, err := os.ReadFile(filepath.Join("testdata", "fingerprints.txt"))
	if err != nil {
		t.Fatalf("read pinned fingerprints: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(golden)), "\n") {
		name, hexfp, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad line %q in testdata/fingerprints.txt", line)
		}
		want[name] = hexfp
	}
	for name, w := range want {
		s, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		fp := s.Fingerprint()
		if got := hex.EncodeToString(fp[:]); got != w {
			t.Errorf("%s fingerprint = %s, pinned %s", name, got, w)
		}
	}
}

func TestFingerprintCoversKVFields(t *testing.T) {
	base, err := Preset("llama-3.1-8b")
	if err != nil {
		t.Fatal(err)
	}
	fp := base.Fingerprint()
	changes := map[string]func(*ModelSpec){
		"arch":         func(s *ModelSpec) { s.Arch = "mistral" },
		"layers":       func(s *ModelSpec) { s.Layers++ },
		"heads":        func(s *ModelSpec) { s.AttnHeads = 16 },
		"kv heads":     func(s *ModelSpec) { s.KVHeads = 4 },
		"head dim":     func(s *ModelSpec) { s.HeadDim = 64 },
		"hidden":       func(s *ModelSpec) { s.HiddenSize++ },
		"intermediate": func(s *ModelSpec) { s.IntermediateSize++ },
		"vocab":        func(s *ModelSpec) { s.VocabSize++ },
		"norm eps":     func(s *ModelSpec) { s.NormEps = 1e-6 },
		"dtype":        func(s *ModelSpec) { s.DType = F16 },
		"theta":        func(s *ModelSpec) { s.RoPE.Theta = 10000 },
		"style":        func(s *ModelSpec) { s.RoPE.Style = RotateInterleaved },
		"rope dim":     func(s *ModelSpec) { s.RoPE.Dim = 64 },
		"scaling type": func(s *ModelSpec) { s.RoPE.Scaling = RoPEScaling{Type: ScalingLinear, Factor: 8} },
		"factor":       func(s *ModelSpec) { s.RoPE.Scaling.Factor = 4 },
		"low freq":     func(s *ModelSpec) { s.RoPE.Scaling.LowFreqFactor = 2 },
		"high freq":    func(s *ModelSpec) { s.RoPE.Scaling.HighFreqFactor = 8 },
		"original max": func(s *ModelSpec) { s.RoPE.Scaling.OriginalMaxPositions = 4096 },
		"weights":      func(s *ModelSpec) { s.WeightsID += "-instruct" },
		"freq factors": func(s *ModelSpec) {
			s.RoPE.Scaling = RoPEScaling{Type: ScalingFreqFactors, FreqFactors: make([]float64, 64)}
		},
		"freq factor 0": func(s *ModelSpec) { s.RoPE.Scaling = RoPEScaling{Type: ScalingFreqFactors, FreqFactors: []float64{2}} },
	}
	for name, change := range changes {
		s := base
		change(&s)
		if s.Fingerprint() == fp {
			t.Errorf("changing %s does not change the fingerprint", name)
		}
	}
	same := map[string]func(*ModelSpec){
		"name":          func(s *ModelSpec) { s.Name = "other" },
		"max positions": func(s *ModelSpec) { s.MaxPositions = 4096 },
		"params":        func(s *ModelSpec) { s.Params = 1 },
		"rope dim = head dim": func(s *ModelSpec) {
			s.RoPE.Dim = s.HeadDim // explicit full rotary is the same KV as the default
		},
	}
	for name, change := range same {
		s := base
		change(&s)
		if s.Fingerprint() != fp {
			t.Errorf("changing %s changes the fingerprint, but not the KV", name)
		}
	}
	salt, err := base.Salt("tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(salt.Model[:], fp[:8]) || salt.IsShared() {
		t.Fatalf("salt %v does not carry the fingerprint prefix %x", salt, fp[:8])
	}
	shared, err := base.Salt("")
	if err != nil || !shared.IsShared() {
		t.Fatalf("Salt(\"\") = %v, %v; want the shared salt", shared, err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	s, _ := Preset("llama-3-8b")
	s.Layers = 0
	s.KVHeads = 5
	s.WeightsID = ""
	s.RoPE.Theta = -1
	s.RoPE.Scaling = RoPEScaling{Type: ScalingLlama3, Factor: 8, LowFreqFactor: 4, HighFreqFactor: 1, OriginalMaxPositions: 8192}
	err := s.Validate()
	if !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("err = %v, want ErrInvalidSpec", err)
	}
	for _, want := range []string{"layers = 0", "not a multiple of kv heads 5", "weights id", "rope theta", "low < high"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestStories260KPresetMatchesCheckpoint(t *testing.T) {
	path := filepath.Join(testutil.Stories260K(t), "stories260K.bin")
	got, err := LoadLlama2C(path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := Preset("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadLlama2C = %+v\npreset      = %+v", got, want)
	}
	if got.HeadDim != 8 || got.KVHeads*got.HeadDim != 32 || got.GQAGroup() != 2 {
		t.Fatalf("head size %d, kv dim %d, kv_mul %d; README says 8, 32, 2", got.HeadDim, got.KVHeads*got.HeadDim, got.GQAGroup())
	}
}

func TestLoadLlama2CErrors(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(testutil.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badHeads := append([]byte(nil), data[:28]...)
	badHeads[12] = 7 // n_heads 7 does not divide dim 64
	tests := map[string]struct {
		path string
		want string
	}{
		"truncated file": {write("trunc.bin", data[:len(data)-4]), "header implies 1056540"},
		"short header":   {write("short.bin", data[:10]), "header"},
		"bad heads":      {write("heads.bin", badHeads), "n_heads"},
		"missing":        {filepath.Join(dir, "nope.bin"), "no such file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := LoadLlama2C(tc.path, LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			if !reflect.DeepEqual(s, ModelSpec{}) {
				t.Fatalf("error returned a spec: %+v", s)
			}
		})
	}
}

func TestHFConfigMatchesPresets(t *testing.T) {
	for _, name := range []string{"llama-2-7b", "llama-3-8b", "llama-3.1-8b", "llama-3-70b", "mistral-7b", "yi-34b", "qwen2.5-7b"} {
		t.Run(name, func(t *testing.T) {
			want, err := Preset(name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := LoadHFConfig(filepath.Join("testdata", "hf", name), LoadOptions{WeightsID: want.WeightsID})
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != name {
				t.Errorf("name = %q, want the directory name %q", got.Name, name)
			}
			got.Name = want.Name
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("config.json gives %+v\npreset is      %+v", got, want)
			}
		})
	}
}

func TestParseHFConfigErrors(t *testing.T) {
	base := `"model_type":"llama","num_hidden_layers":2,"num_attention_heads":4,"hidden_size":64,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":64`
	tests := []struct {
		name, json string
		opts       LoadOptions
		want       error
		msg        string
	}{
		{"no weights id", `{` + base + `}`, LoadOptions{}, ErrInvalidSpec, "weights id"},
		{"not json", `{"model_type":`, LoadOptions{WeightsID: "w"}, ErrInvalidSpec, "unexpected EOF"},
		{"missing", `{"model_type":"llama"}`, LoadOptions{WeightsID: "w"}, ErrInvalidSpec, "missing num_hidden_layers"},
		{"yarn", `{` + base + `,"rope_scaling":{"type":"yarn","factor":4}}`, LoadOptions{WeightsID: "w"}, ErrUnsupported, `"yarn"`},
		{"gqa", `{` + base + `,"num_key_value_heads":3}`, LoadOptions{WeightsID: "w"}, ErrInvalidSpec, "multiple of kv heads 3"},
		{"negative", `{` + base + `,"head_dim":-8}`, LoadOptions{WeightsID: "w"}, ErrInvalidSpec, "head dim = -8"},
		{"dtype", `{` + base + `,"torch_dtype":"int8"}`, LoadOptions{WeightsID: "w"}, ErrUnsupported, "int8"},
		{"partial", `{` + base + `,"partial_rotary_factor":1.5}`, LoadOptions{WeightsID: "w"}, ErrInvalidSpec, "partial_rotary_factor"},
		{"llama3 incomplete", `{` + base + `,"rope_scaling":{"rope_type":"llama3","factor":8}}`, LoadOptions{WeightsID: "w"}, ErrInvalidSpec, "low < high"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseHFConfig([]byte(tc.json), tc.opts)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			if !reflect.DeepEqual(s, ModelSpec{}) {
				t.Fatalf("error returned a spec: %+v", s)
			}
		})
	}
}

func TestParseHFConfigVariants(t *testing.T) {
	base := `"model_type":"phi3","num_hidden_layers":2,"num_attention_heads":4,"hidden_size":64,"intermediate_size":128,"vocab_size":100,"max_position_embeddings":64`
	s, err := ParseHFConfig([]byte(`{`+base+`,"partial_rotary_factor":0.5,"rope_scaling":{"type":"linear","factor":2.0}}`), LoadOptions{WeightsID: "w", KVDType: FP8E4M3})
	if err != nil {
		t.Fatal(err)
	}
	if s.RoPE.Dim != 8 || s.HeadDim != 16 || !reflect.DeepEqual(s.RoPE.Scaling, RoPEScaling{Type: ScalingLinear, Factor: 2}) || s.DType != FP8E4M3 || s.KVHeads != 4 {
		t.Fatalf("spec = %+v", s)
	}
	// transformers v5 rope_parameters, and a multimodal text_config.
	v5 := `{"model_type":"llava","torch_dtype":"bfloat16","text_config":{` + base + `,"rope_parameters":{"rope_type":"default","rope_theta":1e6}}}`
	s, err = ParseHFConfig([]byte(v5), LoadOptions{WeightsID: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if s.RoPE.Theta != 1e6 || s.DType != BF16 || s.Arch != "phi3" {
		t.Fatalf("spec = %+v", s)
	}
}

func TestLoadGGUF(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, name := range []string{"llama-3-8b", "qwen2.5-7b", "stories260K", "llama-2-7b"} {
		t.Run(name, func(t *testing.T) {
			want, _ := Preset(name)
			want.Arch = map[string]string{"qwen2": "qwen2"}[want.Arch]
			if want.Arch == "" {
				want.Arch = "llama"
			}
			want.RoPE.Style = ggufRotation[want.Arch]
			want.DType = F16
			got, err := LoadGGUF(write(name+".gguf", ggufFromSpec(want)), LoadOptions{WeightsID: want.WeightsID})
			if err != nil {
				t.Fatal(err)
			}
			want.Params = got.Params
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("gguf gives %+v\nwant       %+v", got, want)
			}
		})
	}
	t.Run("llama3 rope_freqs and file hash", func(t *testing.T) {
		want, _ := Preset("llama-3.1-8b")
		want.RoPE.Style = RotateInterleaved
		want.DType = F16
		ff := make([]float64, want.HeadDim/2)
		for i := range ff {
			ff[i] = float64(1 + i%8)
		}
		want.RoPE.Scaling = RoPEScaling{Type: ScalingFreqFactors, FreqFactors: ff}
		path := write("l31.gguf", ggufFromSpec(want))
		got, err := LoadGGUF(path, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.RoPE.Scaling.FreqFactors, ff) || !strings.HasPrefix(got.WeightsID, "sha256:") || len(got.WeightsID) != 71 {
			t.Fatalf("scaling %+v, weights id %q", got.RoPE.Scaling, got.WeightsID)
		}
	})
	errCases := map[string]struct {
		data []byte
		want error
		msg  string
	}{
		"unknown arch":   {writeGGUF([]ggufKV{{"general.architecture", gStr, "mamba"}}, nil), ErrUnsupported, `"mamba"`},
		"no arch":        {writeGGUF(nil, nil), ErrInvalidSpec, "general.architecture"},
		"missing keys":   {writeGGUF([]ggufKV{{"general.architecture", gStr, "llama"}}, nil), ErrInvalidSpec, "missing llama.block_count"},
		"string count":   {writeGGUF([]ggufKV{{"general.architecture", gStr, "llama"}, {"llama.block_count", gStr, "32"}}, nil), ErrInvalidSpec, "want a number"},
		"bad alignment":  {writeGGUF([]ggufKV{{"general.alignment", gStr, "x"}}, nil), ErrInvalidSpec, "gguf parser rejected"},
		"zero alignment": {writeGGUF([]ggufKV{{"general.alignment", gU32, 0}}, nil), ErrInvalidSpec, "gguf parser rejected"},
		"not gguf":       {[]byte("hello world, not a model"), ErrInvalidSpec, "invalid GGUF"},
		"yarn": {func() []byte {
			s, _ := Preset("llama-3-8b")
			b := ggufFromSpec(s)
			return writeGGUF(append(ggufKVsOf(t, b), ggufKV{"llama.rope.scaling.type", gStr, "yarn"}), nil)
		}(), ErrUnsupported, "yarn"},
		"per-layer heads differ": {writeGGUF([]ggufKV{
			{"general.architecture", gStr, "llama"}, {"llama.block_count", gU32, 2}, {"llama.attention.head_count", gArr, ggufArray{gU32, []any{4, 8}}},
			{"llama.embedding_length", gU32, 64}, {"llama.feed_forward_length", gU32, 128}, {"llama.context_length", gU32, 64},
		}, nil), ErrUnsupported, "differs between layers"},
	}
	for name, tc := range errCases {
		t.Run(name, func(t *testing.T) {
			s, err := LoadGGUF(write(strings.ReplaceAll(name, " ", "_")+".gguf", tc.data), LoadOptions{WeightsID: "w"})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			if !reflect.DeepEqual(s, ModelSpec{}) {
				t.Fatalf("error returned a spec: %+v", s)
			}
		})
	}
}

// ggufKVsOf re-reads the metadata of a GGUF file written by ggufFromSpec (for
// building variants of it).
func ggufKVsOf(t *testing.T, b []byte) []ggufKV {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x.gguf")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	gf, err := parseGGUF(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []ggufKV
	for _, kv := range gf.Header.MetadataKV {
		switch v := kv.Value.(type) {
		case string:
			out = append(out, ggufKV{kv.Key, gStr, v})
		case uint32:
			out = append(out, ggufKV{kv.Key, gU32, int(v)})
		case float32:
			out = append(out, ggufKV{kv.Key, gF32, v})
		}
	}
	return out
}

func TestSpecJSONRoundTrip(t *testing.T) {
	for _, s := range Presets() {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back ModelSpec
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v\n%s", s.Name, err, b)
		}
		if !reflect.DeepEqual(back, s) {
			t.Fatalf("%s: JSON round trip differs:\n%s", s.Name, b)
		}
		if s.Name == "llama-3.1-8b" && !strings.Contains(string(b), `"Type":"llama3"`) {
			t.Fatalf("enums not written by name: %s", b)
		}
	}
	var d DType
	if err := json.Unmarshal([]byte(`"int4"`), &d); err == nil {
		t.Fatal("bad dtype accepted")
	}
}

// Small GGUF files written by this package's own writer are kept in
// testdata/gguf (rewritten with -update) and loaded like any model file.
func TestGGUFTestdataFiles(t *testing.T) {
	files := map[string]func() ModelSpec{
		"llama-3-8b.gguf": func() ModelSpec {
			s, _ := Preset("llama-3-8b")
			s.RoPE.Style, s.DType = RotateInterleaved, F16
			return s
		},
		"qwen2.5-7b.gguf": func() ModelSpec {
			s, _ := Preset("qwen2.5-7b")
			s.DType = F16
			return s
		},
		"llama-3.1-8b-rope-freqs.gguf": func() ModelSpec {
			s, _ := Preset("llama-3.1-8b")
			s.RoPE.Style, s.DType = RotateInterleaved, F16
			ff := make([]float64, 64)
			for i := range ff {
				ff[i] = float64(1 + i/16)
			}
			s.RoPE.Scaling = RoPEScaling{Type: ScalingFreqFactors, FreqFactors: ff}
			return s
		},
	}
	for name, mk := range files {
		want := mk()
		path := filepath.Join("testdata", "gguf", name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, ggufFromSpec(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := LoadGGUF(path, LoadOptions{WeightsID: want.WeightsID})
		if err != nil {
			t.Fatalf("%s: %v (run go test -run TestGGUFTestdataFiles -update)", name, err)
		}
		want.Params = got.Params
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", name, got, want)
		}
	}
}
