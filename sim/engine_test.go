package sim

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kvloom/kvloom/sim/topology"
)

func mustEngine(t testing.TB, model, gpu string, opts EngineOptions) *Engine {
	t.Helper()
	m, err := LookupModel(model)
	if err != nil {
		t.Fatal(err)
	}
	g, err := LookupGPU(gpu)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(m, g, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestEngineHandComputed checks the prefill, decode, capacity and TP
// models of Llama-3-8B on an H100 against values computed by hand from the
// published dimensions (docs/sim-model.md has the formulas).
func TestEngineHandComputed(t *testing.T) {
	e := mustEngine(t, "llama-3-8b", "H100-SXM", EngineOptions{})
	// Per layer: 2·(H·q + 2·H·kv + q·H + 3·H·I) = 2·(4096·4096 + 2·4096·1024
	// + 4096·4096 + 3·4096·14336) = 436,207,616 FLOPs per token.
	// All 32 layers: 13,958,643,712; attention 4·q·L = 524,288 per pair;
	// LM head 2·4096·128256 = 1,050,673,152.
	// 1000 tokens: 13,958,643,712·1000 + 524,288·500,500 + 1,050,673,152.
	if got, want := e.PrefillFLOPs(0, 1000), 14222100529152.0; got != want {
		t.Fatalf("PrefillFLOPs(0, 1000) = %v, want %v", got, want)
	}
	// Compute-bound: 1.42221e13 / (989.4e12 · 0.5) = 28.748940 ms; the
	// memory side (16.06 GB weights + 1000·128 KiB) / (3.35 TB/s · 0.75)
	// is 6.44 ms.
	if got := e.Prefill(0, 1000); got != 28748940*time.Nanosecond {
		t.Fatalf("Prefill(0, 1000) = %v, want 28.748940ms", got)
	}
	// A cached prefix adds only its attention pairs (c·n) for the new
	// tokens; the projections do not see it.
	cached := e.PrefillFLOPs(4000, 1000) - e.PrefillFLOPs(0, 1000)
	if want := 524288.0 * 4000 * 1000; cached != want {
		t.Fatalf("4000 cached tokens add %v FLOPs, want %v", cached, want)
	}
	// Decode, batch 1, 1000 tokens of context: memory-bound,
	// (16,060,522,496 + 1000·131,072) B / 2.5125 TB/s = 6.444416 ms.
	if got := e.DecodeStep(1, 1000); got != 6444416*time.Nanosecond {
		t.Fatalf("DecodeStep(1, 1000) = %v, want 6.444416ms", got)
	}
	// KV capacity: (80 GiB·0.9 − 16.06 GB − 2 GiB) / 131,072 B per token.
	if got := e.KVCapacityTokens(); got != 450907 {
		t.Fatalf("KVCapacityTokens = %d, want 450907", got)
	}
	if e.KVBytes(10) != 10*131072 {
		t.Fatalf("KVBytes(10) = %d", e.KVBytes(10))
	}
	// TP 2: half the FLOPs per GPU plus 2·32 all-reduces of 1000 tokens'
	// hidden states (8 MB): each 10 µs + (2·1/2)·8,192,000 B / 360 GB/s.
	e2 := mustEngine(t, "llama-3-8b", "H100-SXM", EngineOptions{TP: 2})
	if got, want := e2.allReduce(1000), 64*(10*time.Microsecond+22756*time.Nanosecond); got != want {
		t.Fatalf("allReduce(1000) at TP 2 = %v, want %v", got, want)
	}
	if got, want := e2.Prefill(0, 1000), time.Duration(14374470)+e2.allReduce(1000); got != want {
		t.Fatalf("Prefill at TP 2 = %v, want %v", got, want)
	}
}

func TestEngineErrors(t *testing.T) {
	m, _ := LookupModel("llama-3-70b")
	g, _ := LookupGPU("L40S")
	if _, err := NewEngine(m, g, EngineOptions{}); !errors.Is(err, ErrConfig) {
		t.Errorf("70B on one 48 GiB GPU: %v, want ErrConfig", err)
	}
	if _, err := NewEngine(m, g, EngineOptions{TP: 3}); !errors.Is(err, ErrConfig) {
		t.Errorf("TP 3 with 8 KV heads: %v, want ErrConfig", err)
	}
	a40, _ := LookupGPU("A40")
	if _, err := NewEngine(m, a40, EngineOptions{TP: 4, DType: "fp8"}); !errors.Is(err, ErrConfig) {
		t.Errorf("fp8 on an A40 (no fp8 tensor cores): %v, want ErrConfig", err)
	}
	if _, err := LookupModel("gpt-5"); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("LookupModel(gpt-5): %v", err)
	}
	if _, err := LookupGPU("H300"); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("LookupGPU(H300): %v", err)
	}
}

func TestEngineMonotone(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, gpu := range topology.GPUPresetNames() {
		e := mustEngine(t, "llama-3-8b", gpu, EngineOptions{})
		for range 200 {
			n := 1 + rng.IntN(30000)
			c := rng.IntN(30000)
			if e.Prefill(c, n+1) < e.Prefill(c, n) {
				t.Fatalf("%s: prefilling more tokens got faster", gpu)
			}
			if e.Prefill(c+1, n) < e.Prefill(c, n) {
				t.Fatalf("%s: a longer cached context made prefill faster", gpu)
			}
			if e.DecodeStep(2, c+1) < e.DecodeStep(1, c) {
				t.Fatalf("%s: a bigger decode batch got faster", gpu)
			}
		}
	}
	// The faster GPU is faster.
	h100 := mustEngine(t, "llama-3-8b", "H100-SXM", EngineOptions{})
	a40 := mustEngine(t, "llama-3-8b", "A40", EngineOptions{})
	if h100.Prefill(0, 8000) >= a40.Prefill(0, 8000) {
		t.Fatal("H100 prefill not faster than A40")
	}
	if math.IsNaN(h100.RecomputeFLOPs(8000, 1200)) || h100.RecomputeFLOPs(8000, 1200) >= h100.PrefillFLOPs(0, 8000) {
		t.Fatal("recomputing 15% must cost less than a full prefill")
	}
}

func TestLinks(t *testing.T) {
	// 1 GB over 10 GB/s in 4 messages of 10 µs, depth 2: latency 5 µs +
	// max(100 ms, 4·10µs/2) + 10 µs.
	l := Link{Bandwidth: 10e9, Latency: 5 * time.Microsecond, PerMessage: 10 * time.Microsecond}
	if got, want := l.Time(1e9, 4, 2), 5*time.Microsecond+100*time.Millisecond+10*time.Microsecond; got != want {
		t.Fatalf("Time = %v, want %v", got, want)
	}
	// Tiny messages: overhead-bound, 1000·10µs/1.
	if got, want := l.Time(1000, 1000, 1), 5*time.Microsecond+10*time.Millisecond+10*time.Microsecond; got != want {
		t.Fatalf("overhead-bound Time = %v, want %v", got, want)
	}
	if l.Time(0, 0, 1) != 0 {
		t.Fatal("nothing to move takes time")
	}
	// PCIe gen4 ×16: 31.5077 GB/s × 0.8.
	if got, want := PCIeLink(4, 16).Bandwidth, 16e9*128/130*16/8*0.8; math.Abs(got-want) > 1 {
		t.Fatalf("PCIe gen4 ×16 = %v B/s, want %v", got, want)
	}
	p := Path{PCIeLink(5, 16), NetworkLink(topology.Ethernet, 400e9/8), NVMeLink}.Bottleneck()
	if p.Bandwidth != 7e9 || p.PerMessage != NVMeLink.PerMessage || p.Latency != PCIeLink(5, 16).Latency+2*time.Microsecond+NVMeLink.Latency {
		t.Fatalf("Bottleneck = %+v", p)
	}
	for _, name := range LinkPresetNames() {
		l, err := LinkPreset(name)
		if err != nil || !(l.Bandwidth > 0) {
			t.Fatalf("LinkPreset(%s) = %+v, %v", name, l, err)
		}
	}
	if _, err := LinkPreset("carrier-pigeon"); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown link: %v", err)
	}
}
