package kvcache

import (
	"fmt"
	"slices"
	"strings"
)

// Stories260KWeightsID is the weights identity of the stories260K preset:
// the SHA-256 of stories260K.bin as published in
// ../shared/testdata/models/stories260K/README.md. LoadLlama2C computes the
// same string from the file.
const Stories260KWeightsID = "sha256:b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"

// presets returns fresh copies of the built-in model specs. Dimensions come
// from each model's published config.json (Hugging Face, repository named in
// WeightsID); Params are the published parameter counts, which the tests
// check against ComputeParams.
func presets() []ModelSpec {
	noScaling := func(theta float64) RoPE { return RoPE{Theta: theta, Style: RotateHalf} }
	return []ModelSpec{
		{
			Name: "llama-2-7b", Arch: "llama",
			Layers: 32, AttnHeads: 32, KVHeads: 32, HeadDim: 128,
			HiddenSize: 4096, IntermediateSize: 11008, VocabSize: 32000, Params: 6_738_415_616,
			NormEps: 1e-5, DType: F16, RoPE: noScaling(10000), MaxPositions: 4096,
			WeightsID: "hf:meta-llama/Llama-2-7b-hf",
		},
		{
			Name: "llama-3-8b", Arch: "llama",
			Layers: 32, AttnHeads: 32, KVHeads: 8, HeadDim: 128,
			HiddenSize: 4096, IntermediateSize: 14336, VocabSize: 128256, Params: 8_030_261_248,
			NormEps: 1e-5, DType: BF16, RoPE: noScaling(500000), MaxPositions: 8192,
			WeightsID: "hf:meta-llama/Meta-Llama-3-8B",
		},
		{
			Name: "llama-3.1-8b", Arch: "llama",
			Layers: 32, AttnHeads: 32, KVHeads: 8, HeadDim: 128,
			HiddenSize: 4096, IntermediateSize: 14336, VocabSize: 128256, Params: 8_030_261_248,
			NormEps: 1e-5, DType: BF16,
			RoPE: RoPE{Theta: 500000, Style: RotateHalf, Scaling: RoPEScaling{
				Type: ScalingLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192,
			}},
			MaxPositions: 131072,
			WeightsID:    "hf:meta-llama/Llama-3.1-8B",
		},
		{
			Name: "llama-3-70b", Arch: "llama",
			Layers: 80, AttnHeads: 64, KVHeads: 8, HeadDim: 128,
			HiddenSize: 8192, IntermediateSize: 28672, VocabSize: 128256, Params: 70_553_706_496,
			NormEps: 1e-5, DType: BF16, RoPE: noScaling(500000), MaxPositions: 8192,
			WeightsID: "hf:meta-llama/Meta-Llama-3-70B",
		},
		{
			Name: "mistral-7b", Arch: "mistral",
			Layers: 32, AttnHeads: 32, KVHeads: 8, HeadDim: 128,
			HiddenSize: 4096, IntermediateSize: 14336, VocabSize: 32000, Params: 7_241_732_096,
			NormEps: 1e-5, DType: BF16, RoPE: noScaling(10000), MaxPositions: 32768,
			WeightsID: "hf:mistralai/Mistral-7B-v0.1",
		},
		{
			Name: "yi-34b", Arch: "llama",
			Layers: 60, AttnHeads: 56, KVHeads: 8, HeadDim: 128,
			HiddenSize: 7168, IntermediateSize: 20480, VocabSize: 64000, Params: 34_388_917_248,
			NormEps: 1e-5, DType: BF16, RoPE: noScaling(5_000_000), MaxPositions: 4096,
			WeightsID: "hf:01-ai/Yi-34B",
		},
		{
			Name: "qwen2.5-7b", Arch: "qwen2",
			Layers: 28, AttnHeads: 28, KVHeads: 4, HeadDim: 128,
			HiddenSize: 3584, IntermediateSize: 18944, VocabSize: 152064, Params: 7_615_616_512,
			QKVBias: true, NormEps: 1e-6, DType: BF16, RoPE: noScaling(1_000_000), MaxPositions: 131072,
			WeightsID: "hf:Qwen/Qwen2.5-7B",
		},
		{
			// Karpathy's llama2.c model shipped in ../shared/testdata/models:
			// the header of stories260K.bin, keys rotated in adjacent pairs,
			// KV in float32 as run.c computes it.
			Name: "stories260K", Arch: "llama",
			Layers: 5, AttnHeads: 8, KVHeads: 4, HeadDim: 8,
			HiddenSize: 64, IntermediateSize: 172, VocabSize: 512, Params: 260_032,
			TiedEmbeddings: true, NormEps: 1e-5, DType: F32,
			RoPE:         RoPE{Theta: 10000, Style: RotateInterleaved},
			MaxPositions: 512,
			WeightsID:    Stories260KWeightsID,
		},
	}
}

// PresetNames lists the built-in presets in a stable order.
func PresetNames() []string {
	ps := presets()
	names := make([]string, len(ps))
	for i := range ps {
		names[i] = ps[i].Name
	}
	return names
}

// Preset returns a copy of the built-in spec named name (case-insensitive).
func Preset(name string) (ModelSpec, error) {
	ps := presets()
	i := slices.IndexFunc(ps, func(s ModelSpec) bool { return strings.EqualFold(s.Name, name) })
	if i < 0 {
		return ModelSpec{}, fmt.Errorf("preset %q (known: %s): %w", name, strings.Join(PresetNames(), ", "), ErrUnknownPreset)
	}
	return ps[i], nil
}

// Presets returns copies of every built-in spec.
func Presets() []ModelSpec { return presets() }
