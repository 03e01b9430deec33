package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/sim/topology"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenCases run each example topology on a small workload.
func goldenCases(t *testing.T) []struct {
	name string
	top  *topology.Topology
	w    *Workload
	o    RunOptions
} {
	chat, err := Chat(ChatOptions{Sessions: 150, SessionRate: 10, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	rag, err := RAG(RAGOptions{Requests: 300, Rate: 6, Documents: 100, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return []struct {
		name string
		top  *topology.Topology
		w    *Workload
		o    RunOptions
	}{
		{"h100x8-2nic-rag", exampleTopology(t, "h100x8-2nic.yaml"), rag, RunOptions{Model: "llama-3-8b"}},
		{"rack4-2storage-mooncake", exampleTopology(t, "rack4-2storage.yaml"), mooncake(t).Head(500).Speed(8), RunOptions{}},
		{"cluster64-chat", exampleTopology(t, "cluster64.yaml"), chat, RunOptions{}},
	}
}

// golden trims a report to what the golden files keep: every figure, and
// the ten busiest links of each policy.
func golden(t *testing.T, r *Report) []byte {
	t.Helper()
	c := *r
	c.Policies = append([]PolicyReport(nil), r.Policies...)
	for i := range c.Policies {
		c.Policies[i].Links = c.Policies[i].Links[:min(10, len(c.Policies[i].Links))]
	}
	if len(c.NICAssignment) > 16 {
		c.NICAssignment = c.NICAssignment[:16]
	}
	out, err := json.MarshalIndent(&c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func TestGoldenExampleTopologies(t *testing.T) {
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Run(c.top, c.w, c.o)
			if err != nil {
				t.Fatal(err)
			}
			got := golden(t, rep)
			path := filepath.Join("testdata", "golden", c.name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./sim -run Golden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("report differs from %s (rerun with -update if the change is intended):\n%s", path, firstDiff(got, want))
			}
			// Every policy ran on the same arrivals, and the ones that reuse
			// KV never do worse on median TTFT than recomputing in these
			// workloads.
			base, _ := rep.Policy(PolicyRecompute)
			for _, p := range rep.Policies {
				if len(p.TTFTs()) != len(c.w.Requests) {
					t.Fatalf("%s reported %d TTFTs for %d requests", p.Policy, len(p.TTFTs()), len(c.w.Requests))
				}
				if p.TTFT.P50 > base.TTFT.P50*1.001 {
					t.Errorf("%s p50 %.1f ms is worse than recompute's %.1f ms", p.Policy, p.TTFT.P50, base.TTFT.P50)
				}
			}
		})
	}
}

func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("lengths differ: %d vs %d lines", len(la), len(lb))
}

// TestRunDeterministic runs the same inputs twice, with a timeline, and
// wants byte-identical reports and timelines.
func TestRunDeterministic(t *testing.T) {
	top := exampleTopology(t, "rack4-2storage.yaml")
	w := mooncake(t).Head(300).Speed(4)
	var outs, tls [2][]byte
	for i := range 2 {
		tl := NewTimeline(300)
		rep, err := Run(top, w, RunOptions{Timeline: tl})
		if err != nil {
			t.Fatal(err)
		}
		outs[i], _ = json.Marshal(rep)
		var buf bytes.Buffer
		if err := tl.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		tls[i] = buf.Bytes()
		if tl.Spans() == 0 {
			t.Fatal("the timeline recorded nothing")
		}
	}
	if !bytes.Equal(outs[0], outs[1]) {
		t.Fatal("two runs of the same inputs gave different reports")
	}
	if !bytes.Equal(tls[0], tls[1]) {
		t.Fatal("two runs of the same inputs gave different timelines")
	}
	// The timeline is Chrome trace JSON: complete events with µs times.
	var tr struct {
		TraceEvents []struct {
			Name string  `json:"name"`
			Ph   string  `json:"ph"`
			Ts   float64 `json:"ts"`
			Dur  float64 `json:"dur"`
			Pid  int     `json:"pid"`
		} `json:"traceEvents"`
	}
	if err := json.Unmarshal(tls[0], &tr); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, e := range tr.TraceEvents {
		if e.Ph == "X" {
			kinds[strings.Fields(e.Name)[0]] = true
			if e.Ts < 0 || e.Dur < 0 {
				t.Fatalf("span %+v has negative time", e)
			}
		}
	}
	for _, k := range []string{"prefill", "match", "load"} {
		if !kinds[k] {
			t.Errorf("timeline has no %q span (has %v)", k, kinds)
		}
	}
	// Seeds matter for generated workloads.
	a, _ := Chat(ChatOptions{Sessions: 30, Seed: 1})
	b, _ := Chat(ChatOptions{Sessions: 30, Seed: 2})
	ra, err := Run(top, a, RunOptions{Policies: []Policy{PolicyInNet}})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Run(top, b, RunOptions{Policies: []Policy{PolicyInNet}})
	if err != nil {
		t.Fatal(err)
	}
	if ra.Policies[0].TTFT == rb.Policies[0].TTFT {
		t.Fatal("different seeds gave the same TTFTs")
	}
}

// smallTopology is one host with one H100 and an accelerator NIC, and one
// storage node, with every bandwidth scaled by bw and the host's DRAM tier
// of dram bytes.
func smallTopology(t *testing.T, bw float64, dram topology.Size) *topology.Topology {
	t.Helper()
	gb := func(v float64) topology.Bandwidth { return topology.GBytePerSec(v * bw) }
	top := &topology.Topology{
		Version: 1, Name: "small",
		Hosts: []topology.Host{
			{
				Name: "h",
				GPUs: []topology.GPU{{Name: "g", Model: "H100-SXM"}},
				NICs: []topology.NIC{{Name: "n", Kind: topology.FPGA, Bandwidth: gb(12.5)}},
				NVMe: []topology.NVMe{{Name: "d", Read: gb(7), Write: gb(4), Capacity: 2 * topology.TB}},
				Tiers: []topology.Tier{
					{Kind: topology.TierDRAM, Capacity: dram, Read: gb(50), Write: gb(50)},
					{Kind: topology.TierNVMe, Capacity: 1 * topology.TB, Device: "d"},
				},
			},
			{
				Name: "s", Role: topology.RoleStorage,
				NICs:  []topology.NIC{{Name: "n", Kind: topology.NICPlain, Bandwidth: gb(25)}},
				Tiers: []topology.Tier{{Kind: topology.TierDRAM, Capacity: 4 * topology.TB, Read: gb(50), Write: gb(50)}},
			},
		},
		Switches: []topology.Switch{{Name: "sw"}},
		Links: []topology.Link{
			{A: "h/n", B: "sw", Bandwidth: gb(12.5)},
			{A: "s/n", B: "sw", Bandwidth: gb(25)},
		},
	}
	if err := top.Validate(); err != nil {
		t.Fatal(err)
	}
	return top
}

// TestMoreBandwidthNeverIncreasesTTFTInCluster checks the property on the
// simulator: one instance, a chat workload, every bandwidth of the
// topology raised step by step; no request's TTFT may rise.
func TestMoreBandwidthNeverIncreasesTTFTInCluster(t *testing.T) {
	w, err := Chat(ChatOptions{Sessions: 60, SessionRate: 1, ThinkTime: 5e9, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	o := RunOptions{Model: "llama-3-8b", Policies: []Policy{PolicyGPUPrefix, PolicyHostOffload, PolicyInNet}}
	var prev *Report
	for _, f := range []float64{0.25, 0.5, 1, 2, 8} {
		rep, err := Run(smallTopology(t, f, 256*topology.GiB), w, o)
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			for i, p := range rep.Policies {
				before, after := prev.Policies[i].TTFTs(), p.TTFTs()
				for r := range after {
					if after[r] > before[r]+1e-9 {
						t.Fatalf("%s: request %d's TTFT rose from %.3f to %.3f ms when bandwidth went ×%g", p.Policy, r, before[r], after[r], f)
					}
				}
			}
		}
		prev = rep
	}
	if p, _ := prev.Policy(PolicyInNet); p.TotalHit == 0 {
		t.Fatal("the workload reused nothing; the property was not exercised")
	}
}

// TestBiggerTierNeverHitsLessInCluster: host-offload on one instance, with
// the host's DRAM tier growing; the token hit ratio may not fall.
func TestBiggerTierNeverHitsLessInCluster(t *testing.T) {
	w := mooncake(t).Head(800)
	last := -1.0
	for _, gib := range []topology.Size{4, 16, 64, 256, 1024} {
		rep, err := Run(smallTopology(t, 1, gib*topology.GiB), w, RunOptions{Model: "llama-3-8b", Policies: []Policy{PolicyHostOffload}})
		if err != nil {
			t.Fatal(err)
		}
		h := rep.Policies[0].TotalHit
		if h < last {
			t.Fatalf("a %d GiB DRAM tier hit %.4f, less than a smaller tier's %.4f", gib, h, last)
		}
		last = h
	}
	if last <= 0 {
		t.Fatal("nothing hit")
	}
}

func TestRunErrors(t *testing.T) {
	top := exampleTopology(t, "h100x8-2nic.yaml")
	w := mooncake(t).Head(20)
	for name, o := range map[string]RunOptions{
		"bad model":       {Model: "gpt-5"},
		"bad tp":          {TP: 3},
		"bad recompute":   {RecomputeRatio: 2},
		"bad compression": {Compression: 9},
		"bad mem":         {MemFraction: 1.5},
		"bad nic":         {NICAssignment: map[string]string{"gpu0/gpu0": "nic9"}},
		"bad pipeline":    {Pipeline: &Pipeline{}},
	} {
		if _, err := Run(top, w, o); err == nil {
			t.Errorf("%s: Run succeeded", name)
		} else if !errors.Is(err, ErrConfig) && !errors.Is(err, ErrUnknownModel) && !errors.Is(err, ErrPipeline) {
			t.Errorf("%s: %v does not wrap a sim sentinel", name, err)
		}
	}
	if _, err := Run(top, &Workload{}, RunOptions{}); !errors.Is(err, ErrConfig) {
		t.Errorf("empty workload: %v", err)
	}
	storageOnly := &topology.Topology{Version: 1, Hosts: []topology.Host{{Name: "s", Role: topology.RoleStorage}}}
	if _, err := Run(storageOnly, w, RunOptions{TP: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("no GPUs: %v", err)
	}
	if _, err := ParsePolicy("magic"); !errors.Is(err, ErrConfig) {
		t.Errorf("ParsePolicy(magic): %v", err)
	}
	policies := Policies()
	for _, p := range policies {
		if got, err := ParsePolicy(string(p)); err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %q, %v", p, got, err)
		}
	}
	policies[0] = "magic"
	if Policies()[0] != PolicyRecompute {
		t.Error("Policies shares its slice between callers")
	}
}

func TestPlotAndText(t *testing.T) {
	rep, err := Run(exampleTopology(t, "rack4-2storage.yaml"), mooncake(t).Head(200), RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"svg", "png"} {
		var buf bytes.Buffer
		if err := PlotTTFT(&buf, rep, format); err != nil {
			t.Fatal(err)
		}
		head := buf.String()[:min(200, buf.Len())]
		if format == "svg" && !strings.Contains(head, "<svg") || format == "png" && !strings.HasPrefix(head, "\x89PNG") {
			t.Fatalf("%s plot starts %q", format, head)
		}
	}
	if err := PlotTTFT(&bytes.Buffer{}, rep, "gif"); !errors.Is(err, ErrConfig) {
		t.Fatalf("gif plot: %v", err)
	}
	if f, err := PlotFormat("out/x.PNG"); err != nil || f != "png" {
		t.Fatalf("PlotFormat = %q, %v", f, err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text, 3); err != nil {
		t.Fatal(err)
	}
	for _, p := range Policies() {
		if !strings.Contains(text.String(), string(p)) {
			t.Errorf("text report does not mention %s", p)
		}
	}
	for _, s := range []string{"TTFT p50", "hit ratio by tier", "busiest links"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q", s)
		}
	}
}
