package sim

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/sim/topology"
)

// EngineOptions configure an Engine. The zero value is bf16 compute, TP 1,
// the GPU's NVLink (or PCIe) for all-reduce, and vLLM's 0.9 memory
// utilisation.
type EngineOptions struct {
	// TP is the tensor-parallel degree; zero means 1.
	TP int
	// DType is the compute and weight dtype: "bf16" (default), "fp16" or
	// "fp8".
	DType string
	// MemoryUtilization is the fraction of device memory the engine may
	// use for weights, activations and KV (vLLM's gpu_memory_utilization);
	// zero means 0.9.
	MemoryUtilization float64
}

// Engine models one inference engine instance: a model served on TP GPUs of
// one type. All methods are pure.
type Engine struct {
	Model kvcache.ModelSpec
	GPU   topology.GPUSpec
	TP    int
	DType string
	// Derived quantities, kept for the report.
	PeakFLOPS        float64 // per GPU, dense, for DType
	WeightBytes      float64 // whole model
	KVBytesPerToken  int     // whole model, every layer
	AllReduceBW      float64 // bytes/s per direction, effective
	AllReduceLatency time.Duration
	MemoryUtil       float64
	// Overhead is the fixed time a request spends in the engine outside
	// the forward pass (scheduling, sampling, the API): added once to every
	// TTFT.
	Overhead time.Duration

	linearPerToken float64 // FLOPs of all projections and MLPs, one token, all layers
	attnPerPair    float64 // FLOPs of one (query, key) pair, all layers
	headPerToken   float64 // FLOPs of the LM head for one token
	actBytesPerTok float64 // bytes of one token's hidden state (all-reduce payload)
	perLayerLinear float64
	perLayerAttn   float64
}

// All-reduce model constants (docs/sim-model.md): NCCL reaches about 80%
// of the link's per-direction bandwidth on large messages; each all-reduce
// costs a fixed latency.
const (
	allReduceEfficiency = 0.8
	allReduceLatency    = 10 * time.Microsecond
	// activationReserve is memory an engine keeps for activations and
	// CUDA graphs outside weights and KV (vLLM's profile run typically
	// finds 1–4 GiB).
	activationReserve = 2 << 30
	// engineOverhead is calibrated on NVIDIA NIM's Llama-3.3-70B TTFTs
	// (docs/sim-validation.md): 500- and 5000-token prompts both leave
	// about 7 ms outside the forward pass.
	engineOverhead = 7 * time.Millisecond
	// blendEfficiency scales PrefillEfficiency for CacheBlend's selective
	// recompute, whose scattered token subsets and top-k selection run the
	// GPU less efficiently than a dense prefill. Calibrated on CacheBlend's
	// reported 2.2–3.3× (docs/sim-model.md says why this is a calibration,
	// not an independent check).
	blendEfficiency = 0.5
)

// NewEngine builds the model of model served on gpu.
func NewEngine(model kvcache.ModelSpec, gpu topology.GPUSpec, opts EngineOptions) (*Engine, error) {
	if model.Layers <= 0 || model.HiddenSize <= 0 || model.HeadDim <= 0 || model.AttnHeads <= 0 || model.KVHeads <= 0 {
		return nil, fmt.Errorf("model %q: missing dimensions: %w", model.Name, ErrConfig)
	}
	tp := opts.TP
	if tp == 0 {
		tp = 1
	}
	if tp < 0 || tp > 64 {
		return nil, fmt.Errorf("tensor parallelism %d, want 1 to 64: %w", tp, ErrConfig)
	}
	if model.KVHeads%tp != 0 && tp%model.KVHeads != 0 {
		return nil, fmt.Errorf("tensor parallelism %d does not divide %d KV heads of %s: %w", tp, model.KVHeads, model.Name, ErrConfig)
	}
	dtype := strings.ToLower(opts.DType)
	if dtype == "" {
		dtype = "bf16"
	}
	peak := gpu.TFLOPS(dtype) * 1e12
	if peak <= 0 {
		return nil, fmt.Errorf("GPU %s has no %s tensor throughput: %w", gpu.Name, dtype, ErrConfig)
	}
	wbytes := 2.0
	if dtype == "fp8" {
		wbytes = 1
	}
	mu := opts.MemoryUtilization
	if mu == 0 {
		mu = 0.9
	}
	if !(mu > 0 && mu <= 1) {
		return nil, fmt.Errorf("memory utilisation %v, want (0, 1]: %w", mu, ErrConfig)
	}
	if gpu.PrefillEfficiency <= 0 || gpu.DecodeEfficiency <= 0 {
		return nil, fmt.Errorf("GPU %s has no efficiency factors: %w", gpu.Name, ErrConfig)
	}
	params := model.Params
	if params == 0 {
		params = model.ComputeParams()
	}
	h := float64(model.HiddenSize)
	q := float64(model.AttnHeads * model.HeadDim)
	kv := float64(model.KVHeads * model.HeadDim)
	linear := h*q + 2*h*kv + q*h + 3*h*float64(model.IntermediateSize)
	e := &Engine{
		Model: model, GPU: gpu, TP: tp, DType: dtype,
		PeakFLOPS:       peak,
		WeightBytes:     float64(params) * wbytes,
		KVBytesPerToken: model.KVBytesPerToken(),
		MemoryUtil:      mu,
		Overhead:        engineOverhead,
		perLayerLinear:  2 * linear,
		perLayerAttn:    4 * q,
		actBytesPerTok:  2 * h,
	}
	e.linearPerToken = e.perLayerLinear * float64(model.Layers)
	e.attnPerPair = e.perLayerAttn * float64(model.Layers)
	e.headPerToken = 2 * h * float64(model.VocabSize)
	// All-reduce over NVLink when the GPU has it, else over PCIe.
	if bw := gpu.NVLink.BytesPerSecond(); bw > 0 {
		e.AllReduceBW = bw / 2 * allReduceEfficiency
	} else {
		e.AllReduceBW = topology.PCIeBandwidth(gpu.PCIeGen, 16).BytesPerSecond() * allReduceEfficiency
	}
	e.AllReduceLatency = allReduceLatency
	if e.WeightBytes/float64(tp) > float64(gpu.Memory)*mu {
		return nil, fmt.Errorf("%s needs %.1f GiB of weights per GPU at TP %d, more than %.0f%% of %s's %s: %w",
			model.Name, e.WeightBytes/float64(tp)/(1<<30), tp, mu*100, gpu.Name, gpu.Memory, ErrConfig)
	}
	return e, nil
}

// PrefillFLOPs returns the FLOPs (all GPUs together) of prefilling n new
// tokens after cached tokens already in the KV cache: every projection and
// MLP for the n tokens, causal attention of each new token against every
// earlier one (cached·n + n(n+1)/2 pairs: the quadratic term), and the LM
// head for the last token only.
func (e *Engine) PrefillFLOPs(cached, n int) float64 {
	if n <= 0 {
		return 0
	}
	c, m := float64(cached), float64(n)
	pairs := c*m + m*(m+1)/2
	return e.linearPerToken*m + e.attnPerPair*pairs + e.headPerToken
}

// RecomputeFLOPs returns the FLOPs of CacheBlend's selective recompute in a
// context of total tokens: the first layer is computed in full (to find the
// tokens whose KV deviates most), then r tokens in every other layer, each
// attending to half the context on average.
func (e *Engine) RecomputeFLOPs(total, r int) float64 {
	if r <= 0 || total <= 0 {
		return 0
	}
	t, rr := float64(total), float64(min(r, total))
	layers := float64(e.Model.Layers)
	first := e.perLayerLinear*t + e.perLayerAttn*t*(t+1)/2
	rest := (layers - 1) * (e.perLayerLinear*rr + e.perLayerAttn*rr*t/2)
	return first + rest
}

// computeTime turns FLOPs and bytes read from device memory into time with
// a roofline: the slower of the two, spread over TP GPUs, plus the tokens'
// all-reduces (two per layer).
func (e *Engine) computeTime(flops, memBytes float64, tokens int) time.Duration {
	return e.computeTimeAt(flops, memBytes, tokens, 1)
}

// computeTimeAt is computeTime with the prefill efficiency scaled by eff.
func (e *Engine) computeTimeAt(flops, memBytes float64, tokens int, eff float64) time.Duration {
	tp := float64(e.TP)
	compute := flops / (tp * e.PeakFLOPS * e.GPU.PrefillEfficiency * eff)
	memory := memBytes / (tp * e.GPU.MemoryBandwidth.BytesPerSecond() * e.GPU.DecodeEfficiency)
	return seconds(max(compute, memory)) + e.allReduce(tokens)
}

// allReduce is the time of a forward pass's all-reduces for tokens tokens:
// two ring all-reduces per layer, each moving 2(tp−1)/tp of the payload.
func (e *Engine) allReduce(tokens int) time.Duration {
	if e.TP == 1 || tokens <= 0 {
		return 0
	}
	tp := float64(e.TP)
	payload := e.actBytesPerTok * float64(tokens)
	per := e.AllReduceLatency + seconds(2*(tp-1)/tp*payload/e.AllReduceBW)
	return time.Duration(2*e.Model.Layers) * per
}

// Prefill returns the time to prefill n new tokens after cached tokens of
// context: the whole forward pass up to the first token's logits.
func (e *Engine) Prefill(cached, n int) time.Duration {
	if n <= 0 {
		return 0
	}
	mem := e.WeightBytes + float64(cached+n)*float64(e.KVBytesPerToken)
	return e.computeTime(e.PrefillFLOPs(cached, n), mem, n)
}

// Recompute returns the time of CacheBlend's selective recompute of r
// tokens in a context of total tokens (see RecomputeFLOPs), at
// blendEfficiency of a dense prefill's efficiency.
func (e *Engine) Recompute(total, r int) time.Duration {
	if r <= 0 {
		return 0
	}
	mem := e.WeightBytes + float64(total)*float64(e.KVBytesPerToken)
	return e.computeTimeAt(e.RecomputeFLOPs(total, r), mem, r, blendEfficiency)
}

// DecodeStep returns the time of one decode step for batch sequences whose
// contexts hold contextTokens tokens together: memory-bound on reading the
// weights once and every sequence's KV, unless the batch is large enough to
// be compute-bound.
func (e *Engine) DecodeStep(batch, contextTokens int) time.Duration {
	if batch <= 0 {
		return 0
	}
	flops := (e.linearPerToken+e.headPerToken)*float64(batch) + e.attnPerPair*float64(contextTokens)
	mem := e.WeightBytes + float64(contextTokens)*float64(e.KVBytesPerToken)
	tp := float64(e.TP)
	compute := flops / (tp * e.PeakFLOPS * e.GPU.PrefillEfficiency)
	memory := mem / (tp * e.GPU.MemoryBandwidth.BytesPerSecond() * e.GPU.DecodeEfficiency)
	return seconds(max(compute, memory)) + e.allReduce(batch)
}

// KVBytes returns the KV size of tokens tokens (all layers, all TP ranks).
func (e *Engine) KVBytes(tokens int) int64 { return int64(tokens) * int64(e.KVBytesPerToken) }

// KVCapacityTokens returns how many tokens of KV fit in the engine's GPUs
// after weights and an activation reserve, within MemoryUtilization.
func (e *Engine) KVCapacityTokens() int {
	perGPU := float64(e.GPU.Memory)*e.MemoryUtil - e.WeightBytes/float64(e.TP) - activationReserve
	if perGPU <= 0 {
		return 0
	}
	return int(math.Floor(perGPU * float64(e.TP) / float64(e.KVBytesPerToken)))
}

// Layers returns the model's layer count.
func (e *Engine) Layers() int { return e.Model.Layers }

// LookupModel returns a kvcache preset by name.
func LookupModel(name string) (kvcache.ModelSpec, error) {
	m, err := kvcache.Preset(name)
	if err != nil {
		return kvcache.ModelSpec{}, fmt.Errorf("model %q (known: %s): %w", name, strings.Join(kvcache.PresetNames(), ", "), ErrUnknownModel)
	}
	return m, nil
}

// LookupGPU returns a GPU preset by name.
func LookupGPU(name string) (topology.GPUSpec, error) {
	g, ok := topology.GPUPreset(name)
	if !ok {
		return topology.GPUSpec{}, fmt.Errorf("GPU %q (known: %s): %w", name, strings.Join(topology.GPUPresetNames(), ", "), ErrUnknownModel)
	}
	return g, nil
}
