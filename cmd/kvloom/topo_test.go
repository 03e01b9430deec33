package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/sim/topology"
)

type topoJSON struct {
	NVML struct {
		Available bool   `json:"available"`
		Reason    string `json:"reason"`
	} `json:"nvml"`
	PCI []struct {
		Addr   string `json:"addr"`
		Vendor uint16 `json:"vendor"`
		Device uint16 `json:"device"`
		Class  uint32 `json:"class"`
		Kind   string `json:"kind"`
	} `json:"pci"`
	Endpoints []struct {
		Name string `json:"name"`
		Addr string `json:"addr"`
	} `json:"endpoints"`
	Matrix struct {
		Names []string `json:"names"`
		Cells [][]struct {
			Text string `json:"text"`
		} `json:"cells"`
	} `json:"matrix"`
}

// TestTopoMatchesLspci runs `kvloom topo --json` on this machine and
// compares its PCI functions with what `lspci -n -D` lists.
func TestTopoMatchesLspci(t *testing.T) {
	lspci := testutil.RequireTool(t, "lspci", "pciutils")
	raw, err := exec.CommandContext(t.Context(), lspci, "-n", "-D").Output()
	if err != nil {
		t.Fatalf("lspci -n -D: %v", err)
	}
	var want []string
	for line := range strings.SplitSeq(strings.TrimSpace(string(raw)), "\n") {
		// "0000:00:03.0 0200: 1af4:1041 (rev 01)"
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("unexpected lspci line %q", line)
		}
		want = append(want, f[0]+" "+strings.TrimSuffix(f[1], ":")+" "+f[2])
	}
	out, err := runCLI(t, "topo", "--json")
	if err != nil {
		t.Fatalf("kvloom topo --json: %v\n%s", err, out)
	}
	var rep topoJSON
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("kvloom topo --json printed invalid JSON: %v", err)
	}
	var got []string
	for _, d := range rep.PCI {
		got = append(got, fmt.Sprintf("%s %04x %04x:%04x", strings.ToLower(d.Addr), d.Class>>8, d.Vendor, d.Device))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("kvloom topo and lspci disagree\nkvloom: %q\nlspci:  %q", got, want)
	}
	if len(got) == 0 {
		t.Fatal("no PCI functions on this machine; the comparison proved nothing")
	}
	if !rep.NVML.Available && rep.NVML.Reason == "" {
		t.Fatal("NVML unavailable without a reason")
	}
	text, err := runCLI(t, "topo")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if !strings.Contains(text, strings.Fields(w)[0]) {
			t.Errorf("kvloom topo does not print %s", strings.Fields(w)[0])
		}
	}
}

func TestTopoFakeTreeAndExport(t *testing.T) {
	s := testutil.DGXLikeServer(t)
	out, err := runCLI(t, "topo", "--sysfs", s.Root, "--no-nvml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "NVML: not available: disabled") || !strings.Contains(out, "GPU7") || !strings.Contains(out, "NVME1") {
		t.Fatalf("kvloom topo on the DGX-like tree:\n%s", out)
	}
	js, err := runCLI(t, "topo", "--sysfs", s.Root, "--no-nvml", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rep topoJSON
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Matrix.Names) != 20 || rep.Matrix.Cells[0][8].Text != "PIX" {
		t.Fatalf("matrix %v, GPU0↔NIC0 %q; want 20 endpoints and PIX", rep.Matrix.Names, rep.Matrix.Cells[0][8].Text)
	}
	file := filepath.Join(t.TempDir(), "dgx.yaml")
	if _, err := runCLI(t, "topo", "--sysfs", s.Root, "--no-nvml", "--export", file, "--host", "dgx1"); err != nil {
		t.Fatal(err)
	}
	top, err := topology.ReadFile(file)
	if err != nil {
		t.Fatalf("exported file: %v", err)
	}
	h, ok := top.Host("dgx1")
	if !ok || len(h.GPUs) != 8 {
		t.Fatalf("exported host %+v", h)
	}
	if d, err := h.Distance("gpu0", "nic0"); err != nil || d != topology.PIX {
		t.Fatalf("gpu0↔nic0 in the exported file: %v, %v", d, err)
	}
	v100 := testutil.DualSocketGPUServer(t)
	if _, err := runCLI(t, "topo", "--sysfs", v100.Root, "--no-nvml", "--export", file); err == nil || !strings.Contains(err.Error(), "--gpu-model") {
		t.Fatalf("export of GPUs without a preset: %v, want advice to use --gpu-model", err)
	}
	if _, err := runCLI(t, "topo", "--sysfs", v100.Root, "--no-nvml", "--export", file, "--gpu-model", "A40", "--nic-bandwidth", "25Gbps"); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "topo", "--nic-bandwidth", "fast"); err == nil {
		t.Fatal("a bad --nic-bandwidth was accepted")
	}
	if _, err := runCLI(t, "topo", "--sysfs", t.TempDir()); err == nil {
		t.Fatal("an empty sysfs root was accepted")
	}
}
