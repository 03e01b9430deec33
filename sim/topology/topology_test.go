package topology

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
)

func exampleFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testutil.RepoRoot(t), "examples", "topologies", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("found %d example topologies under examples/topologies, want at least 3", len(files))
	}
	return files
}

func TestParseUnits(t *testing.T) {
	bw := []struct {
		in   string
		want float64 // bytes/s
		str  string
	}{
		{"400Gbps", 50e9, "400Gbps"},
		{"400 Gb/s", 50e9, "400Gbps"},
		{"25GB/s", 25e9, "25GB/s"},
		{"6.9GBps", 6.9e9, "6.9GB/s"},
		{"1.5TB/s", 1.5e12, "1.5TB/s"},
		{"100Mbps", 12.5e6, "100Mbps"},
		{"1GiB/s", 1 << 30, "1GiB/s"},
	}
	for _, c := range bw {
		b, err := ParseBandwidth(c.in)
		if err != nil {
			t.Fatalf("ParseBandwidth(%q): %v", c.in, err)
		}
		if got := b.BytesPerSecond(); got != c.want {
			t.Errorf("ParseBandwidth(%q) = %v B/s, want %v", c.in, got, c.want)
		}
		if b.String() != c.str {
			t.Errorf("ParseBandwidth(%q).String() = %q, want %q", c.in, b.String(), c.str)
		}
	}
	for _, bad := range []string{"", "Gbps", "400", "400gbps", "400 furlongs", "NaNGbps", "1e400Gbps"} {
		if _, err := ParseBandwidth(bad); err == nil {
			t.Errorf("ParseBandwidth(%q) succeeded, want an error", bad)
		}
	}
	sizes := []struct {
		in   string
		want Size
		str  string
	}{
		{"80GiB", 80 << 30, "80GiB"},
		{"7680GB", 7680e9, "7680GB"},
		{"1.5KiB", 1536, "1536B"},
		{"1TB", 1e12, "1TB"},
		{"4096B", 4096, "4KiB"},
	}
	for _, c := range sizes {
		s, err := ParseSize(c.in)
		if err != nil {
			t.Fatalf("ParseSize(%q): %v", c.in, err)
		}
		if s != c.want || s.String() != c.str {
			t.Errorf("ParseSize(%q) = %d (%s), want %d (%s)", c.in, s, s, c.want, c.str)
		}
		back, err := ParseSize(s.String())
		if err != nil || back != s {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s.String(), back, err, s)
		}
	}
	for _, bad := range []string{"80", "80gib", "0.3B", "1e30TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded, want an error", bad)
		}
	}
	if got := Duration(1500 * time.Nanosecond).String(); got != "1.5us" {
		t.Errorf("Duration string = %q, want 1.5us", got)
	}
}

func TestPCIeBandwidth(t *testing.T) {
	// 16 GT/s × 128/130 × 16 lanes / 8 bits = 31.508 GB/s; gen5 doubles it.
	cases := []struct {
		gen, width int
		want       float64
	}{
		{4, 16, 16e9 * 128 / 130 * 16 / 8},
		{5, 16, 32e9 * 128 / 130 * 16 / 8},
		{4, 8, 16e9 * 128 / 130 * 8 / 8},
		{3, 16, 8e9 * 128 / 130 * 16 / 8},
	}
	for _, c := range cases {
		got := PCIeBandwidth(c.gen, c.width).BytesPerSecond()
		if d := got/c.want - 1; d > 1e-12 || d < -1e-12 {
			t.Errorf("PCIeBandwidth(%d, %d) = %v, want %v", c.gen, c.width, got, c.want)
		}
	}
	if !PCIeBandwidth(7, 16).IsZero() || !PCIeBandwidth(4, 0).IsZero() {
		t.Error("an unknown generation or width must give the zero bandwidth")
	}
}

func TestExamplesParseAndRoundTrip(t *testing.T) {
	for _, f := range exampleFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			top, err := ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := top.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(out)
			if err != nil {
				t.Fatalf("parse of marshalled output: %v\n%s", err, out)
			}
			if !reflect.DeepEqual(top, back) {
				t.Fatal("marshal → parse did not give back the same topology")
			}
			again, err := back.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, again) {
				t.Fatal("marshal is not deterministic")
			}
		})
	}
}

func TestExampleCounts(t *testing.T) {
	want := map[string]struct{ compute, storage, gpus, switches int }{
		"h100x8-2nic.yaml":    {1, 0, 8, 1},
		"rack4-2storage.yaml": {4, 2, 32, 1},
		"cluster64.yaml":      {64, 8, 512, 12},
	}
	for _, f := range exampleFiles(t) {
		w, ok := want[filepath.Base(f)]
		if !ok {
			continue
		}
		top, err := ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var compute, storage, gpus int
		for _, h := range top.Hosts {
			if h.IsStorage() {
				storage++
			} else {
				compute++
			}
			gpus += len(h.GPUs)
		}
		if compute != w.compute || storage != w.storage || gpus != w.gpus || len(top.Switches) != w.switches {
			t.Errorf("%s: %d compute, %d storage hosts, %d GPUs, %d switches; want %+v",
				filepath.Base(f), compute, storage, gpus, len(top.Switches), w)
		}
	}
}

// TestDistanceMatrix checks the 8×H100 example against the matrix
// nvidia-smi would print for that tree: GPUs and the NIC under one switch
// are PIX, switches of one socket NODE, across sockets SYS.
func TestDistanceMatrix(t *testing.T) {
	top, err := ReadFile(filepath.Join(testutil.RepoRoot(t), "examples", "topologies", "h100x8-2nic.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	h := &top.Hosts[0]
	devs := []string{"gpu0", "gpu1", "gpu2", "gpu4", "gpu6", "nic0", "nic1", "nvme0"}
	want := [][]string{
		//  gpu0   gpu1   gpu2   gpu4   gpu6   nic0   nic1   nvme0
		{"X", "PIX", "NODE", "SYS", "SYS", "PIX", "SYS", "NODE"},
		{"PIX", "X", "NODE", "SYS", "SYS", "PIX", "SYS", "NODE"},
		{"NODE", "NODE", "X", "SYS", "SYS", "NODE", "SYS", "PXB"},
		{"SYS", "SYS", "SYS", "X", "NODE", "SYS", "PIX", "SYS"},
		{"SYS", "SYS", "SYS", "NODE", "X", "SYS", "NODE", "SYS"},
		{"PIX", "PIX", "NODE", "SYS", "SYS", "X", "SYS", "NODE"},
		{"SYS", "SYS", "SYS", "PIX", "NODE", "SYS", "X", "SYS"},
		{"NODE", "NODE", "PXB", "SYS", "SYS", "NODE", "SYS", "X"},
	}
	for i, a := range devs {
		for j, b := range devs {
			d, err := h.Distance(a, b)
			if err != nil {
				t.Fatal(err)
			}
			if d.String() != want[i][j] {
				t.Errorf("Distance(%s, %s) = %s, want %s", a, b, d, want[i][j])
			}
			back, err := ParseDistance(d.String())
			if err != nil || back != d {
				t.Errorf("ParseDistance(%q) = %v, %v", d.String(), back, err)
			}
		}
	}
	if _, err := h.Distance("gpu0", "gpu99"); err == nil {
		t.Error("Distance to a missing device succeeded")
	}
}

func TestDistanceSmallTrees(t *testing.T) {
	// Two nested switches under one root port: PXB between the levels; two
	// parentless devices on one node: PHB; on two nodes: SYS.
	src := `version: 1
hosts:
  - name: h
    numa: [{node: 0, socket: 0}, {node: 1, socket: 1}]
    pcie:
      - {name: hb, kind: host-bridge}
      - {name: rp, kind: root-port, parent: hb}
      - {name: top, kind: switch, parent: rp}
      - {name: a, kind: switch, parent: top}
      - {name: b, kind: switch, parent: top}
    gpus:
      - {name: g0, model: A100-80G, parent: a}
      - {name: g1, model: A100-80G, parent: b}
      - {name: g2, model: A100-80G, parent: a}
      - {name: g3, model: L40S}
      - {name: g4, model: L40S}
      - {name: g5, model: L40S, numa: 1}
`
	top, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	h := &top.Hosts[0]
	for _, c := range []struct {
		a, b string
		want Distance
	}{
		{"g0", "g2", PIX}, {"g0", "g1", PXB}, {"g3", "g4", PHB}, {"g3", "g5", SYS}, {"g0", "g3", NODE},
	} {
		if d, err := h.Distance(c.a, c.b); err != nil || d != c.want {
			t.Errorf("Distance(%s, %s) = %v, %v; want %v", c.a, c.b, d, err, c.want)
		}
	}
	hops, err := h.Route("g0", "g1")
	if err != nil {
		t.Fatal(err)
	}
	// g0→a→top, then top→b→g1: four links, the first two upward.
	if len(hops) != 4 || !hops[0].Up || !hops[1].Up || hops[2].Up || hops[3].Up ||
		hops[0].Child != "g0" || hops[1].Parent != "top" || hops[3].Child != "g1" {
		t.Errorf("Route(g0, g1) = %+v", hops)
	}
	if hops[0].Gen != 4 || hops[0].Width != 16 {
		t.Errorf("A100's own link = gen%d ×%d, want the preset's gen4 ×16", hops[0].Gen, hops[0].Width)
	}
	hr, err := h.HostRoute("g3")
	if err != nil || len(hr) != 1 || hr[0].Parent != "" {
		t.Errorf("HostRoute(g3) = %+v, %v; want one link to the root complex", hr, err)
	}
}

func TestParseErrors(t *testing.T) {
	const good = `version: 1
hosts:
  - name: h
    gpus:
      - {name: g0, model: H100-SXM}
    nics:
      - {name: n0, kind: fpga, bandwidth: 100Gbps}
switches:
  - {name: sw}
links:
  - {a: h/n0, b: sw}
`
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatalf("the base case must parse: %v", err)
	}
	cases := []struct {
		name     string
		src      string
		sentinel error
		want     []string // substrings of the message, including lines
	}{
		{"empty", "  \n", ErrSyntax, []string{"empty topology"}},
		{"not a mapping", "- a\n- b\n", ErrSyntax, []string{"line 1", "mapping"}},
		{"bad yaml", "version: 1\nhosts: [\n", ErrSyntax, []string{"line"}},
		{"unknown key", strings.Replace(good, "model: H100-SXM", "model: H100-SXM, colour: red", 1), ErrSyntax,
			[]string{"line 5", `unknown key "colour" in a gpu`, "known: gen, model"}},
		{"duplicate key", strings.Replace(good, "version: 1\n", "version: 1\nversion: 1\n", 1), ErrSyntax, []string{"already defined"}},
		{"wrong type", strings.Replace(good, "version: 1", "version: one", 1), ErrSyntax, []string{"line 1", `"one"`, "integer"}},
		{"two documents", good + "---\nversion: 1\n", ErrSyntax, []string{"more than one"}},
		{"bad unit", strings.Replace(good, "100Gbps", "100 furlongs", 1), ErrSyntax, []string{"line 7", "furlongs"}},
		{"version", strings.Replace(good, "version: 1", "version: 7", 1), ErrVersion, []string{"line 1", "version 7"}},
		{"missing version", strings.Replace(good, "version: 1\n", "", 1), ErrVersion, []string{"version: missing"}},
		{"unknown preset", strings.Replace(good, "H100-SXM", "H300", 1), ErrUnknownPreset,
			[]string{"line 5", "hosts[0].gpus[0].model", `"H300"`, "A100-80G"}},
		{"negative bandwidth", strings.Replace(good, "100Gbps", "-100Gbps", 1), ErrNegative,
			[]string{"line 7", "hosts[0].nics[0].bandwidth", "-100Gbps"}},
		{"link to nowhere", strings.Replace(good, "b: sw}", "b: nowhere}", 1), ErrDangling,
			[]string{"line 11", "links[0].b", `"nowhere"`}},
		{"link to missing nic", strings.Replace(good, "a: h/n0", "a: h/n9", 1), ErrDangling, []string{"links[0].a", `"n9"`}},
		{"duplicate device", strings.Replace(good, "name: n0", "name: g0", 1), ErrDuplicate, []string{"hosts[0].nics[0].name"}},
		{"bad pci", strings.Replace(good, "{name: g0,", "{name: g0, pci: 3b:00.0,", 1), ErrInvalid, []string{"line 5", "3b:00.0"}},
		{"dangling parent", strings.Replace(good, "{name: g0,", "{name: g0, parent: sw9,", 1), ErrDangling, []string{"sw9"}},
		{"negative latency", strings.Replace(good, "b: sw}", "b: sw, latency: -2us}", 1), ErrNegative, []string{"line 11", "-2us"}},
		{"accel on plain nic", strings.Replace(good, "kind: fpga, bandwidth: 100Gbps", "kind: nic, bandwidth: 100Gbps, accel: {lanes: 4}", 1), ErrInvalid, []string{"plain NIC"}},
		{"cycle", `version: 1
hosts:
  - name: h
    pcie:
      - {name: a, kind: switch, parent: b}
      - {name: b, kind: switch, parent: a}
`, ErrInvalid, []string{"cycle"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			top, err := Parse([]byte(c.src))
			if err == nil {
				t.Fatal("parse succeeded, want an error")
			}
			if top != nil {
				t.Fatal("a failed parse returned a topology")
			}
			if !errors.Is(err, c.sentinel) {
				t.Errorf("error %q does not wrap %v", err, c.sentinel)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestParseReportsAllProblems checks that validation does not stop at the
// first problem.
func TestParseReportsAllProblems(t *testing.T) {
	src := `version: 1
hosts:
  - name: h
    gpus:
      - {name: g0, model: H300}
    nics:
      - {name: n0, kind: nic, bandwidth: -1Gbps}
    tiers:
      - {kind: dram, capacity: 0B}
links:
  - {a: h/n0, b: nowhere}
`
	_, err := Parse([]byte(src))
	if err == nil {
		t.Fatal("parse succeeded")
	}
	for _, s := range []error{ErrUnknownPreset, ErrNegative, ErrDangling} {
		if !errors.Is(err, s) {
			t.Errorf("error does not report %v:\n%v", s, err)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Line == 0 {
		t.Errorf("errors carry no FieldError with a line: %v", err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 4 {
		t.Errorf("got %d problems, want 4:\n%v", n, err)
	}
}

func TestCustomGPUModel(t *testing.T) {
	src := `version: 1
gpu_models:
  - name: MI300X
    memory: 192GiB
    memory_bandwidth: 5.3TB/s
    bf16_tflops: 1307.4
    fp16_tflops: 1307.4
    fp8_tflops: 2614.9
    pcie_gen: 5
    prefill_efficiency: 0.4
    decode_efficiency: 0.7
hosts:
  - name: h
    gpus: [{name: g0, model: MI300X}]
`
	top, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := top.GPUModel("mi300x")
	if !ok || g.Memory != 192*GiB || g.MemoryBandwidth.BytesPerSecond() != 5.3e12 {
		t.Fatalf("GPUModel(mi300x) = %+v, %v", g, ok)
	}
	shadow := strings.Replace(src, "name: MI300X", "name: H100-SXM", 1)
	if _, err := Parse([]byte(shadow)); !errors.Is(err, ErrDuplicate) {
		t.Errorf("a custom model shadowing a preset: %v, want ErrDuplicate", err)
	}
}

func TestGPUPresets(t *testing.T) {
	for _, name := range GPUPresetNames() {
		g, ok := GPUPreset(name)
		if !ok {
			t.Fatalf("preset %s listed but not found", name)
		}
		top := Topology{Version: 1, GPUModels: nil, Hosts: []Host{{Name: "h", GPUs: []GPU{{Name: "g", Model: name}}}}}
		if err := top.Validate(); err != nil {
			t.Errorf("preset %s: %v", name, err)
		}
		// The presets must pass the checks a custom model gets.
		var p problems
		custom := Topology{Version: 1, GPUModels: []GPUSpec{g}, Hosts: top.Hosts}
		custom.GPUModels[0].Name = "x-" + name
		custom.validate(&p)
		if len(p.errs) > 0 {
			t.Errorf("preset %s fails model checks: %v", name, p.err())
		}
		for _, id := range g.PCIDeviceIDs {
			if n, ok := GPUPresetByPCIID(id); !ok || n != name {
				t.Errorf("GPUPresetByPCIID(%#x) = %q, %v; want %s", id, n, ok, name)
			}
		}
	}
	if g, _ := GPUPreset("h100-sxm"); g.TFLOPS("bf16") != 989.4 || g.TFLOPS("fp8") != 1978.9 || g.TFLOPS("int3") != 0 {
		t.Errorf("H100 TFLOPS = %v/%v", g.TFLOPS("bf16"), g.TFLOPS("fp8"))
	}
}
