package sim

import (
	"errors"
	"testing"
	"time"

	"github.com/kvloom/kvloom/sim/topology"
)

func TestPipelineHandComputed(t *testing.T) {
	p := DefaultPipeline()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	// 8192 tokens, 32 probes, 4 events, 4 MiB prefetched.
	// H2D: 1 µs + (64 + 8192·4) B / 25.2062 GB/s = 1000 + 1303 ns.
	// Match: 32 + max(8192/16, 32/2) + 4 = 548 cycles at 250 MHz = 2192 ns.
	// D2H: 500 ns + 5·64 B / 25.2 GB/s = 513 ns.
	// Prefetch: 4 messages; wire 4 MiB / 12.5 GB/s = 335544 ns > 4·1µs/4;
	// plus one message latency: 336544 ns.
	got := p.Time(Work{Tokens: 8192, Lookups: 32, Events: 4, PrefetchBytes: 4 << 20})
	want := Timing{HostToDevice: 2303, Match: 2192, DeviceToHost: 513, Prefetch: 336544, Total: 2303 + 2192 + 336544}
	if got != want {
		t.Fatalf("Time = %+v\nwant   %+v", got, want)
	}
	// Probe-bound: 100 tokens but 300 probes → 32 + 150 + 4 = 186 cycles.
	got = p.Time(Work{Tokens: 100, Lookups: 300})
	if got.Match != 744*time.Nanosecond || got.HostToDevice != 1018 || got.DeviceToHost != 503 || got.Prefetch != 0 {
		t.Fatalf("probe-bound Time = %+v", got)
	}
	if got.Total != 1018+744+503 {
		t.Fatalf("Total = %v, want H2D + Match + D2H", got.Total)
	}
	// Overhead-bound prefetch: 1000 reads of 4 KiB, 16 outstanding:
	// wire 327.68 µs vs 1000·1µs/16 = 62.5 µs → 1 µs + 327.68 µs.
	got = p.Time(Work{PrefetchBytes: 1000 * 4096, PrefetchMessages: 1000})
	if got.Prefetch != 328680 {
		t.Fatalf("Prefetch = %v, want 328.68µs", got.Prefetch)
	}
	// With a 1 µs-per-message cost and depth 1, overhead dominates.
	p1 := p
	p1.PrefetchDepth = 1
	p1.NetworkBandwidth = 1e12
	if got := p1.Time(Work{PrefetchBytes: 1000 * 4096, PrefetchMessages: 1000}); got.Prefetch != 1001*time.Microsecond {
		t.Fatalf("depth-1 Prefetch = %v, want 1.001ms", got.Prefetch)
	}
	if r := p.TokensPerSecond(); r != 4e9 {
		t.Fatalf("TokensPerSecond = %v, want 4e9", r)
	}
	if p.Time(Work{}).Match != 0 {
		t.Fatal("an empty request spends no match cycles")
	}
}

func TestPipelineMonotone(t *testing.T) {
	// More of anything the device has never makes a request slower; more
	// work never makes it faster.
	p := DefaultPipeline()
	w := Work{Tokens: 12000, Lookups: 47, Events: 20, PrefetchBytes: 300 << 20}
	base := p.Time(w).Total
	for name, q := range map[string]Pipeline{
		"clock": func() Pipeline { q := p; q.ClockHz *= 2; return q }(),
		"lanes": func() Pipeline { q := p; q.Lanes *= 2; return q }(),
		"pcie":  func() Pipeline { q := p; q.PCIeBandwidth *= 2; return q }(),
		"net":   func() Pipeline { q := p; q.NetworkBandwidth *= 4; return q }(),
		"depth": func() Pipeline { q := p; q.PrefetchDepth *= 2; return q }(),
	} {
		if got := q.Time(w).Total; got > base {
			t.Errorf("more %s: %v > %v", name, got, base)
		}
	}
	for name, w2 := range map[string]Work{
		"tokens":   {Tokens: 24000, Lookups: 47, Events: 20, PrefetchBytes: 300 << 20},
		"prefetch": {Tokens: 12000, Lookups: 47, Events: 20, PrefetchBytes: 600 << 20},
		"events":   {Tokens: 12000, Lookups: 47, Events: 2000, PrefetchBytes: 300 << 20},
	} {
		if got := p.Time(w2).Total; got < base {
			t.Errorf("more %s: %v < %v", name, got, base)
		}
	}
}

func TestPipelineValidateAndAccel(t *testing.T) {
	var zero Pipeline
	err := zero.Validate()
	if !errors.Is(err, ErrPipeline) {
		t.Fatalf("zero pipeline: %v", err)
	}
	p := DefaultPipeline().WithAccel(&topology.Accel{ClockMHz: 300, Lanes: 8, TableEntries: 1024, LookupCycles: 6, QueueDepth: 64}, topology.GbitPerSec(400))
	if p.ClockHz != 300e6 || p.Lanes != 8 || p.TableEntries != 1024 || p.LookupCycles != 6 || p.RequestQueueDepth != 64 || p.NetworkBandwidth != 50e9 {
		t.Fatalf("WithAccel = %+v", p)
	}
	if q := DefaultPipeline().WithAccel(nil, topology.Bandwidth{}); q != DefaultPipeline() {
		t.Fatal("WithAccel with nothing changed the pipeline")
	}
}
