package sim

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// EstimateInput describes one request for Estimate.
type EstimateInput struct {
	// Tokens is the prompt length; Reused how many of them have KV stored
	// somewhere (a prefix when Recompute is zero).
	Tokens, Reused int
	// Recompute is CacheBlend's recompute ratio: the fraction of the reused
	// tokens whose KV is recomputed because it was stored out of context.
	// Zero for prefix reuse.
	Recompute float64
	// LoadFrom is where the reused KV comes from: "dram" (pinned host
	// memory over the GPUs' PCIe links), "nvme" (a local drive), "redis"
	// (a Redis server over 100 GbE TCP) or "peer" (another host's memory
	// over 200 Gb/s RoCE). Ignored when LoadGbps is set.
	LoadFrom string
	// LoadGbps, when positive, replaces LoadFrom with a channel of that many
	// Gbit/s and no fixed costs.
	LoadGbps float64
	// ChunkTokens is the storage granularity: one message per chunk. Zero
	// means 256 (LMCache's default).
	ChunkTokens int
}

// Estimate is the answer to "does loading beat recomputing on this
// hardware?" for one request. Times are milliseconds.
type Estimate struct {
	Model    string `json:"model"`
	GPU      string `json:"gpu"`
	TP       int    `json:"tp"`
	DType    string `json:"dtype"`
	Tokens   int    `json:"tokens"`
	Reused   int    `json:"reused"`
	Computed int    `json:"computed_tokens"`  // new tokens prefilled after the reused ones
	Blended  int    `json:"recompute_tokens"` // reused tokens recomputed (CacheBlend)

	LoadFrom   string  `json:"load_from"`
	LoadPath   string  `json:"load_path"`
	LoadGbps   float64 `json:"load_gbps"` // effective rate of the path
	LoadBytes  int64   `json:"load_bytes"`
	KVPerToken int     `json:"kv_bytes_per_token"`

	PrefillMS   float64 `json:"prefill_ms"`    // full prefill of every token (forward pass only)
	LoadMS      float64 `json:"load_ms"`       // loading the reused KV alone
	RecomputeMS float64 `json:"recompute_ms"`  // computing what is not loaded, alone
	TTFTFullMS  float64 `json:"ttft_full_ms"`  // prefill plus the engine's fixed overhead
	TTFTReuseMS float64 `json:"ttft_reuse_ms"` // load and compute overlapped layer by layer, plus the overhead
	Speedup     float64 `json:"speedup"`       // ttft_full / ttft_reuse
	// Bound says what limits the reuse path: "load" or "compute".
	Bound string `json:"bound"`
	// BreakevenGbps is the load bandwidth above which reuse beats a full
	// prefill (zero when no bandwidth would).
	BreakevenGbps float64 `json:"breakeven_gbps"`
	// DecodeStepMS is one decode step of this request alone (batch 1).
	DecodeStepMS float64 `json:"decode_step_ms"`
}

// LoadSourceNames returns the sources LoadPath and Estimate accept, in a
// fresh slice the caller may keep or change.
func LoadSourceNames() []string {
	return []string{"dram", "nvme", "redis", "peer"}
}

// LoadPath returns the links KV crosses from a named source to the GPUs of
// e, with the aggregate bandwidth of TP GPUs loading their shards in
// parallel where the source allows it.
func (e *Engine) LoadPath(source string) (Link, error) {
	pcie := PCIeLink(e.GPU.PCIeGen, 16)
	tp := float64(e.TP)
	perGPU := pcie
	perGPU.Bandwidth *= tp // each GPU loads its shard over its own link
	switch strings.ToLower(source) {
	case "dram":
		return Path{perGPU}.Bottleneck(), nil
	case "nvme":
		return Path{NVMeLink, perGPU}.Bottleneck(), nil
	case "redis":
		return Path{RedisLink, NetworkLink("ethernet", 100e9/8), perGPU}.Bottleneck(), nil
	case "peer":
		return Path{NetworkLink("ethernet", 200e9/8), perGPU}.Bottleneck(), nil
	}
	return Link{}, fmt.Errorf("load source %q, want one of %s: %w", source, strings.Join(LoadSourceNames(), ", "), ErrConfig)
}

// reuseTTFT pipelines loading and computing layer by layer: layer i's KV
// arrives at lat + (i+1)·perLayerLoad, and layer i's compute starts when
// both the KV and layer i−1's compute are done.
func reuseTTFT(layers int, lat, load, compute time.Duration) time.Duration {
	if layers <= 0 {
		return max(load, 0) + compute
	}
	perLoad := float64(load-lat) / float64(layers)
	perCompute := float64(compute) / float64(layers)
	finish := 0.0
	for i := range layers {
		ready := float64(lat) + float64(i+1)*perLoad
		finish = max(finish, ready) + perCompute
	}
	return time.Duration(math.Round(finish))
}

// Estimate answers, for one request on engine e, how long a full prefill
// takes and how long reusing the stored KV takes from a given source, with
// loading and recompute overlapped layer by layer (CacheBlend §5).
func (e *Engine) Estimate(in EstimateInput) (Estimate, error) {
	if in.Tokens <= 0 {
		return Estimate{}, fmt.Errorf("tokens %d, want > 0: %w", in.Tokens, ErrConfig)
	}
	if in.Reused < 0 || in.Reused > in.Tokens {
		return Estimate{}, fmt.Errorf("reused %d, want 0 to tokens (%d): %w", in.Reused, in.Tokens, ErrConfig)
	}
	if !(in.Recompute >= 0 && in.Recompute <= 1) {
		return Estimate{}, fmt.Errorf("recompute ratio %v, want [0, 1]: %w", in.Recompute, ErrConfig)
	}
	if in.LoadGbps < 0 || math.IsInf(in.LoadGbps, 0) || math.IsNaN(in.LoadGbps) {
		return Estimate{}, fmt.Errorf("load bandwidth %v Gbit/s, want > 0: %w", in.LoadGbps, ErrConfig)
	}
	chunk := in.ChunkTokens
	if chunk == 0 {
		chunk = 256
	}
	if chunk < 0 {
		return Estimate{}, fmt.Errorf("chunk of %d tokens, want > 0: %w", chunk, ErrConfig)
	}
	var link Link
	source := in.LoadFrom
	if in.LoadGbps > 0 {
		link = Link{Name: fmt.Sprintf("%g Gbit/s", in.LoadGbps), Bandwidth: in.LoadGbps * 1e9 / 8}
		source = "gbps"
	} else {
		if source == "" {
			source = "dram"
		}
		var err error
		if link, err = e.LoadPath(source); err != nil {
			return Estimate{}, err
		}
	}
	// vLLM recomputes the last token of a full hit to get its logits.
	reused := min(in.Reused, in.Tokens-1)
	blend := int(math.Round(in.Recompute * float64(reused)))
	computed := in.Tokens - reused
	bytes := e.KVBytes(reused)
	messages := int(ceilDiv(int64(reused), int64(chunk)))

	full := e.Prefill(0, in.Tokens)
	compute := e.Prefill(reused, computed) + e.Recompute(in.Tokens, blend)
	var load time.Duration
	if reused > 0 {
		load = link.Time(bytes, messages, 8)
	}
	ttft := full
	if reused > 0 {
		ttft = reuseTTFT(e.Layers(), link.Latency, load, compute)
	}
	full += e.Overhead
	ttft += e.Overhead
	out := Estimate{
		Model: e.Model.Name, GPU: e.GPU.Name, TP: e.TP, DType: e.DType,
		Tokens: in.Tokens, Reused: reused, Computed: computed, Blended: blend,
		LoadFrom: source, LoadPath: link.Name, LoadGbps: link.Bandwidth * 8 / 1e9,
		LoadBytes: bytes, KVPerToken: e.KVBytesPerToken,
		PrefillMS: ms(full - e.Overhead), LoadMS: ms(load), RecomputeMS: ms(compute),
		TTFTFullMS: ms(full), TTFTReuseMS: ms(ttft),
		DecodeStepMS: ms(e.DecodeStep(1, in.Tokens)),
		Bound:        "compute",
	}
	if ttft > 0 {
		out.Speedup = float64(full) / float64(ttft)
	}
	if load > compute {
		out.Bound = "load"
	}
	out.BreakevenGbps = e.breakeven(in.Tokens, reused, compute, bytes, full-e.Overhead)
	return out, nil
}

// breakeven finds by bisection the bandwidth at which reuse (with no fixed
// costs) takes exactly as long as a full prefill.
func (e *Engine) breakeven(tokens, reused int, compute time.Duration, bytes int64, full time.Duration) float64 {
	if reused == 0 || compute >= full {
		return 0
	}
	at := func(gbps float64) time.Duration {
		return reuseTTFT(e.Layers(), 0, seconds(float64(bytes)/(gbps*1e9/8)), compute)
	}
	lo, hi := 1e-3, 1e6 // Gbit/s
	if at(hi) >= full {
		return 0
	}
	for range 100 {
		mid := math.Sqrt(lo * hi)
		if at(mid) > full {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
