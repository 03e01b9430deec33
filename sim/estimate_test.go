package sim

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestReuseTTFTHandComputed(t *testing.T) {
	// Four layers, loading 40 and computing 8 (10 and 2 per layer): layer i
	// starts when its KV lands at 10(i+1), so the last ends at 40 + 2.
	if got := reuseTTFT(4, 0, 40, 8); got != 42 {
		t.Fatalf("load-bound = %v, want 42", got)
	}
	// Compute-bound: loading 8 (2 per layer), computing 40: the first
	// layer waits 2, then compute runs back to back: 2 + 40.
	if got := reuseTTFT(4, 0, 8, 40); got != 42 {
		t.Fatalf("compute-bound = %v, want 42", got)
	}
	// A 4 ns first-byte latency shifts every layer's arrival.
	if got := reuseTTFT(4, 4, 44, 8); got != 46 {
		t.Fatalf("with latency = %v, want 46", got)
	}
}

func TestEstimateHandComputed(t *testing.T) {
	e := mustEngine(t, "llama-3-8b", "H100-SXM", EngineOptions{})
	// 8192 tokens, 8000 reused over a 100 Gbit/s channel, no fixed costs:
	// 8000·131,072 B = 1.048576 GB / 12.5 GB/s = 83.886 ms.
	est, err := e.Estimate(EstimateInput{Tokens: 8192, Reused: 8000, LoadGbps: 100})
	if err != nil {
		t.Fatal(err)
	}
	if est.LoadBytes != 8000*131072 || est.LoadMS != 83.88608 {
		t.Fatalf("load = %d B in %v ms, want 1048576000 B in 83.88608 ms", est.LoadBytes, est.LoadMS)
	}
	if want := ms(e.Prefill(0, 8192)); est.PrefillMS != want || est.TTFTFullMS != want+7 {
		t.Fatalf("prefill %v, full TTFT %v, want %v and that plus the 7 ms engine overhead", est.PrefillMS, est.TTFTFullMS, want)
	}
	if want := ms(e.Prefill(8000, 192)); est.RecomputeMS != want {
		t.Fatalf("recompute %v ms, want %v (192 new tokens after 8000 cached)", est.RecomputeMS, want)
	}
	want := ms(reuseTTFT(32, 0, e.Prefill(0, 0)+seconds(1048576000/12.5e9), e.Prefill(8000, 192)) + e.Overhead)
	if est.TTFTReuseMS != want || est.Bound != "load" {
		t.Fatalf("reuse TTFT %v ms (%s), want %v (load-bound)", est.TTFTReuseMS, est.Bound, want)
	}
	if r := est.Speedup / (est.TTFTFullMS / est.TTFTReuseMS); r < 1-1e-9 || r > 1+1e-9 {
		t.Fatalf("speedup %v", est.Speedup)
	}
	// At the breakeven bandwidth reuse and full prefill take the same time.
	at, err := e.Estimate(EstimateInput{Tokens: 8192, Reused: 8000, LoadGbps: est.BreakevenGbps})
	if err != nil {
		t.Fatal(err)
	}
	if d := at.TTFTReuseMS - at.TTFTFullMS; d > 0.01 || d < -0.01 {
		t.Fatalf("at breakeven (%v Gbit/s) reuse %v vs full %v ms", est.BreakevenGbps, at.TTFTReuseMS, at.TTFTFullMS)
	}
	// A full hit still computes the last token.
	full, err := e.Estimate(EstimateInput{Tokens: 100, Reused: 100})
	if err != nil || full.Reused != 99 || full.Computed != 1 {
		t.Fatalf("full hit: %+v, %v", full, err)
	}
	// CacheBlend: 15% of 8000 reused tokens recomputed.
	blend, err := e.Estimate(EstimateInput{Tokens: 8192, Reused: 8000, Recompute: 0.15, LoadFrom: "dram"})
	if err != nil || blend.Blended != 1200 {
		t.Fatalf("blend: %+v, %v", blend, err)
	}
	if want := ms(e.Prefill(8000, 192) + e.Recompute(8192, 1200)); blend.RecomputeMS != want {
		t.Fatalf("blend recompute %v, want %v", blend.RecomputeMS, want)
	}
}

func TestEstimateErrors(t *testing.T) {
	e := mustEngine(t, "llama-3-8b", "A100-80G", EngineOptions{})
	for _, in := range []EstimateInput{
		{Tokens: 0},
		{Tokens: 10, Reused: 11},
		{Tokens: 10, Reused: -1},
		{Tokens: 10, Reused: 5, Recompute: 1.5},
		{Tokens: 10, Reused: 5, LoadGbps: -1},
		{Tokens: 10, Reused: 5, LoadFrom: "tape"},
		{Tokens: 10, Reused: 5, ChunkTokens: -4},
	} {
		if _, err := e.Estimate(in); !errors.Is(err, ErrConfig) {
			t.Errorf("Estimate(%+v): %v, want ErrConfig", in, err)
		}
	}
}

// TestLoadSourceNames: every name LoadSourceNames lists is one LoadPath
// accepts, an unknown one is refused naming them all, and the list is the
// caller's own (changing it changes nothing for the next caller).
func TestLoadSourceNames(t *testing.T) {
	e := mustEngine(t, "llama-3-8b", "A100-80G", EngineOptions{})
	names := LoadSourceNames()
	for _, src := range names {
		if l, err := e.LoadPath(src); err != nil || l.Bandwidth <= 0 {
			t.Errorf("LoadPath(%q) = %+v, %v", src, l, err)
		}
	}
	_, err := e.LoadPath("tape")
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("LoadPath(tape): %v, want ErrConfig", err)
	}
	for _, src := range names {
		if !strings.Contains(err.Error(), src) {
			t.Errorf("LoadPath(tape) error %q does not name source %q", err, src)
		}
	}
	names[0] = "tape"
	if LoadSourceNames()[0] == "tape" {
		t.Error("LoadSourceNames shares its slice between callers")
	}
	if _, err := e.LoadPath("tape"); !errors.Is(err, ErrConfig) {
		t.Errorf("LoadPath(tape) after a caller changed its list: %v", err)
	}
}

// TestMoreBandwidthNeverIncreasesTTFT is the property the issue names, on
// the analytic model: for random requests, raising the load bandwidth never
// raises the reuse TTFT.
func TestMoreBandwidthNeverIncreasesTTFT(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	engines := []*Engine{
		mustEngine(t, "llama-3-8b", "H100-SXM", EngineOptions{}),
		mustEngine(t, "mistral-7b", "A40", EngineOptions{}),
		mustEngine(t, "llama-3-70b", "H200", EngineOptions{TP: 4}),
	}
	for range 300 {
		e := engines[rng.IntN(len(engines))]
		n := 1 + rng.IntN(32000)
		in := EstimateInput{Tokens: n, Reused: rng.IntN(n + 1), Recompute: rng.Float64() * 0.3, LoadGbps: 1 + rng.Float64()*50}
		prev, err := e.Estimate(in)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			in.LoadGbps *= 1 + rng.Float64()*3
			next, err := e.Estimate(in)
			if err != nil {
				t.Fatal(err)
			}
			if next.TTFTReuseMS > prev.TTFTReuseMS {
				t.Fatalf("%+v: TTFT rose from %v to %v ms with more bandwidth", in, prev.TTFTReuseMS, next.TTFTReuseMS)
			}
			prev = next
		}
	}
	// Named tiers order as their bandwidths do.
	e := engines[0]
	var last float64
	for _, src := range []string{"dram", "peer", "nvme", "redis"} {
		est, err := e.Estimate(EstimateInput{Tokens: 16000, Reused: 15000, LoadFrom: src})
		if err != nil {
			t.Fatal(err)
		}
		if est.LoadMS < last {
			t.Fatalf("%s loads faster (%v ms) than a faster tier (%v ms)", src, est.LoadMS, last)
		}
		last = est.LoadMS
	}
}
