package topology

import (
	"slices"
	"strings"
)

// GPUSpec describes a GPU model: datasheet numbers plus the fractions of
// them that real serving software reaches. The presets' numbers and their
// sources are in docs/sim-model.md; a topology file may add its own models
// under gpu_models, with the same fields.
type GPUSpec struct {
	Name string `yaml:"name"`
	// Memory is the device memory (HBM or GDDR).
	Memory Size `yaml:"memory"`
	// MemoryBandwidth is the datasheet device-memory bandwidth.
	MemoryBandwidth Bandwidth `yaml:"memory_bandwidth"`
	// Dense tensor-core throughput in TFLOPS, without structured sparsity.
	// Zero means the data type is not supported in hardware.
	BF16TFLOPS float64 `yaml:"bf16_tflops"`
	FP16TFLOPS float64 `yaml:"fp16_tflops"`
	FP8TFLOPS  float64 `yaml:"fp8_tflops,omitempty"`
	// PCIeGen is the host interface generation; the link is ×16.
	PCIeGen int `yaml:"pcie_gen"`
	// NVLink is the total NVLink bandwidth per GPU (both directions); zero
	// when the model has none.
	NVLink Bandwidth `yaml:"nvlink,omitempty"`
	// PrefillEfficiency is the fraction of dense tensor throughput a
	// serving engine reaches during long prefills (model FLOPs utilisation).
	PrefillEfficiency float64 `yaml:"prefill_efficiency"`
	// DecodeEfficiency is the fraction of MemoryBandwidth reached while
	// decoding (reading weights and KV once per step).
	DecodeEfficiency float64 `yaml:"decode_efficiency"`
	// PCIDeviceIDs are the NVIDIA (vendor 0x10de) device ids of the model,
	// so that discovery can name the preset of a GPU it finds.
	PCIDeviceIDs []uint16 `yaml:"pci_device_ids,flow,omitempty"`
}

// TFLOPS returns the dense throughput for a data type name ("bf16", "fp16",
// "fp8"), or zero when the GPU does not support it.
func (g GPUSpec) TFLOPS(dtype string) float64 {
	switch strings.ToLower(dtype) {
	case "bf16":
		return g.BF16TFLOPS
	case "fp16", "f16":
		return g.FP16TFLOPS
	case "fp8", "fp8-e4m3", "e4m3":
		return g.FP8TFLOPS
	}
	return 0
}

// gpuPresets holds the built-in GPU models. Datasheet values are NVIDIA's
// (dense, no sparsity); the efficiencies come from public measurements
// quoted in docs/sim-model.md.
var gpuPresets = []GPUSpec{
	{
		Name: "A40", Memory: 48 * GiB, MemoryBandwidth: GBytePerSec(696),
		BF16TFLOPS: 149.7, FP16TFLOPS: 149.7, PCIeGen: 4, NVLink: GBytePerSec(112.5),
		PrefillEfficiency: 0.45, DecodeEfficiency: 0.75,
		PCIDeviceIDs: []uint16{0x2235},
	},
	{
		Name: "A100-80G", Memory: 80 * GiB, MemoryBandwidth: GBytePerSec(2039),
		BF16TFLOPS: 312, FP16TFLOPS: 312, PCIeGen: 4, NVLink: GBytePerSec(600),
		PrefillEfficiency: 0.55, DecodeEfficiency: 0.75,
		PCIDeviceIDs: []uint16{0x20b2, 0x20b5},
	},
	{
		Name: "H100-SXM", Memory: 80 * GiB, MemoryBandwidth: GBytePerSec(3350),
		BF16TFLOPS: 989.4, FP16TFLOPS: 989.4, FP8TFLOPS: 1978.9, PCIeGen: 5, NVLink: GBytePerSec(900),
		PrefillEfficiency: 0.5, DecodeEfficiency: 0.75,
		PCIDeviceIDs: []uint16{0x2330},
	},
	{
		Name: "H200", Memory: 141 * GB, MemoryBandwidth: GBytePerSec(4800),
		BF16TFLOPS: 989.4, FP16TFLOPS: 989.4, FP8TFLOPS: 1978.9, PCIeGen: 5, NVLink: GBytePerSec(900),
		PrefillEfficiency: 0.5, DecodeEfficiency: 0.75,
		PCIDeviceIDs: []uint16{0x2335, 0x233b},
	},
	{
		Name: "L40S", Memory: 48 * GiB, MemoryBandwidth: GBytePerSec(864),
		BF16TFLOPS: 362.05, FP16TFLOPS: 362.05, FP8TFLOPS: 733, PCIeGen: 4,
		PrefillEfficiency: 0.45, DecodeEfficiency: 0.75,
		PCIDeviceIDs: []uint16{0x26b9},
	},
}

// GPUPreset returns the built-in GPU model with that name (case-insensitive,
// e.g. "H100-SXM").
func GPUPreset(name string) (GPUSpec, bool) {
	for _, g := range gpuPresets {
		if strings.EqualFold(g.Name, name) {
			g.PCIDeviceIDs = slices.Clone(g.PCIDeviceIDs)
			return g, true
		}
	}
	return GPUSpec{}, false
}

// GPUPresetNames lists the built-in GPU model names in a stable order.
func GPUPresetNames() []string {
	names := make([]string, len(gpuPresets))
	for i, g := range gpuPresets {
		names[i] = g.Name
	}
	return names
}

// GPUPresetByPCIID names the preset of an NVIDIA GPU from its PCI device
// id, for discovery (`kvloom topo --export`).
func GPUPresetByPCIID(device uint16) (string, bool) {
	for _, g := range gpuPresets {
		if slices.Contains(g.PCIDeviceIDs, device) {
			return g.Name, true
		}
	}
	return "", false
}

// GPUModel resolves a model name against the file's own gpu_models first,
// then the built-in presets.
func (t *Topology) GPUModel(name string) (GPUSpec, bool) {
	for _, g := range t.GPUModels {
		if strings.EqualFold(g.Name, name) {
			return g, true
		}
	}
	return GPUPreset(name)
}
