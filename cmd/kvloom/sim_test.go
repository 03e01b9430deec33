package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/sim/tune"
)

func TestSimEstimate(t *testing.T) {
	out, err := runCLI(t, "sim", "estimate", "--model", "llama-3-70b", "--gpu", "H100-SXM", "--tp", "2", "--dtype", "fp8",
		"--tokens", "5000", "--reused", "4000", "--load-from", "peer", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var est map[string]any
	if err := json.Unmarshal([]byte(out), &est); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"prefill_ms", "load_ms", "recompute_ms", "ttft_full_ms", "ttft_reuse_ms", "speedup"} {
		v, ok := est[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, est[k])
		}
	}
	if est["ttft_reuse_ms"].(float64) >= est["ttft_full_ms"].(float64) {
		t.Errorf("reusing 4000 of 5000 tokens over RoCE should beat a full prefill: %v", out)
	}
	text, err := runCLI(t, "sim", "estimate", "--model", "mistral-7b", "--gpu", "A40", "--tokens", "6000", "--reused", "5900",
		"--recompute", "0.15", "--load-gbps", "25")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ttft_reuse_ms", "speedup", "25 Gbit/s", "breakeven"} {
		if !strings.Contains(text, s) {
			t.Errorf("text output lacks %q:\n%s", s, text)
		}
	}
	for _, bad := range [][]string{
		{"sim", "estimate", "--model", "gpt-5"},
		{"sim", "estimate", "--gpu", "H300"},
		{"sim", "estimate", "--tokens", "10", "--reused", "20"},
		{"sim", "estimate", "--load-from", "dram", "--load-gbps", "10"},
		{"sim", "estimate", "--load-from", "tape", "--reused", "5"},
	} {
		if _, err := runCLI(t, bad...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
}

func TestSimRun(t *testing.T) {
	dir := t.TempDir()
	plot, timeline := filepath.Join(dir, "ttft.svg"), filepath.Join(dir, "tl.json")
	topo := filepath.Join(testutil.RepoRoot(t), "examples", "topologies", "rack4-2storage.yaml")
	args := []string{"sim", "run", "--topology", topo, "--trace", testutil.MooncakeTrace(t), "--requests", "300", "--speed", "4",
		"--plot", plot, "--timeline", timeline, "--timeline-requests", "40", "--json"}
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Requests int `json:"requests"`
		Policies []struct {
			Policy string `json:"policy"`
			TTFT   struct {
				P50 float64 `json:"p50_ms"`
				P99 float64 `json:"p99_ms"`
			} `json:"ttft"`
			HitRatio map[string]float64 `json:"hit_ratio"`
			Links    []struct {
				Name  string `json:"name"`
				Bytes int64  `json:"bytes"`
			} `json:"links"`
		} `json:"policies"`
	}
	// The command prints a progress line on stderr, which runCLI merges:
	// the JSON starts at the first brace.
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if rep.Requests != 300 || len(rep.Policies) != 5 {
		t.Fatalf("%d requests, %d policies", rep.Requests, len(rep.Policies))
	}
	for _, p := range rep.Policies {
		if p.TTFT.P50 <= 0 || p.TTFT.P99 < p.TTFT.P50 {
			t.Errorf("%s TTFT %+v", p.Policy, p.TTFT)
		}
		if p.Policy == "innet" && (len(p.HitRatio) == 0 || len(p.Links) == 0) {
			t.Errorf("innet reports no hits or links")
		}
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(svg), "<svg") {
		t.Fatalf("plot: %v", err)
	}
	tl, err := os.ReadFile(timeline)
	if err != nil {
		t.Fatal(err)
	}
	var trace struct {
		TraceEvents []json.RawMessage `json:"traceEvents"`
	}
	if err := json.Unmarshal(tl, &trace); err != nil || len(trace.TraceEvents) == 0 {
		t.Fatalf("timeline: %v, %d events", err, len(trace.TraceEvents))
	}
	// Deterministic: the same command prints the same report.
	again, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	if again[strings.Index(again, "{"):] != out[strings.Index(out, "{"):] {
		t.Fatal("two runs printed different reports")
	}
	text, err := runCLI(t, "sim", "run", "--topology", topo, "--workload", "rag", "--sessions", "100", "--model", "llama-3-8b")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "innet-blend") || !strings.Contains(text, "hit ratio by tier") {
		t.Fatalf("text report:\n%s", text)
	}
}

func TestSimRunErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nhosts:\n  - name: h\n    gpus: [{name: g, model: H300}]\n    nics: [{name: n, kind: nic, bandwidth: -5Gbps}]\nlinks: [{a: h/n, b: nowhere}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := runCLI(t, "sim", "run", "--topology", bad, "--workload", "chat")
	if err == nil {
		t.Fatal("a bad topology was accepted")
	}
	for _, s := range []string{"bad.yaml", "line 4", "H300", "line 5", "-5Gbps", "line 6", "nowhere"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not mention %q:\n%v", s, err)
		}
	}
	topo := filepath.Join(testutil.RepoRoot(t), "examples", "topologies", "h100x8-2nic.yaml")
	for _, args := range [][]string{
		{"sim", "run"},
		{"sim", "run", "--topology", topo},
		{"sim", "run", "--topology", topo, "--workload", "poetry"},
		{"sim", "run", "--topology", topo, "--workload", "chat", "--policies", "magic"},
		{"sim", "run", "--topology", topo, "--workload", "chat", "--model", "gpt-5"},
	} {
		if _, err := runCLI(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	badTrace := filepath.Join(dir, "t.jsonl")
	if err := os.WriteFile(badTrace, []byte(`{"timestamp": 0, "input_length": 1500, "output_length": 1, "hash_ids": [1]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "sim", "run", "--topology", topo, "--trace", badTrace); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("bad trace: %v", err)
	}
}

func TestTuneCLI(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "kvloomd.yaml")
	topo := filepath.Join(testutil.RepoRoot(t), "examples", "topologies", "rack4-2storage.yaml")
	stdout, err := runCLI(t, "tune", "--topology", topo, "--trace", testutil.MooncakeTrace(t), "--requests", "150", "--speed", "6",
		"--budget", "4", "--objective", "cost", "--out", out, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res tune.Result
	if err := json.Unmarshal([]byte(stdout[strings.Index(stdout, "{"):]), &res); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if res.Objective != "cost" || len(res.Top) == 0 || len(res.Sensitivity) == 0 {
		t.Fatalf("result %+v", res)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := tune.ParseDaemonConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ChunkTokens != res.Best.Knobs.ChunkTokens || cfg.Device.TableEntries != res.Best.Knobs.TableEntries || !strings.HasPrefix(cfg.Tiers, "mem:") {
		t.Fatalf("config %+v does not carry the best knobs %+v", cfg, res.Best.Knobs)
	}
	text, err := runCLI(t, "tune", "--topology", topo, "--trace", testutil.MooncakeTrace(t), "--requests", "100", "--speed", "6", "--budget", "3")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"best", "sensitivity", "rank"} {
		if !strings.Contains(text, s) {
			t.Errorf("text output lacks %q", s)
		}
	}
	for _, args := range [][]string{
		{"tune"},
		{"tune", "--topology", topo, "--trace", testutil.MooncakeTrace(t), "--objective", "joy"},
		{"tune", "--topology", topo, "--trace", testutil.MooncakeTrace(t), "--budget", "1"},
		{"tune", "--topology", topo, "--trace", testutil.MooncakeTrace(t), "--policy", "magic"},
	} {
		if _, err := runCLI(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
