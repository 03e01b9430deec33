package gpu

import (
	"errors"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/sim/topology"
)

// exportRoundTrip exports topo, writes and re-reads the file, and checks
// that sim/topology's Distance agrees with ours on every endpoint pair.
func exportRoundTrip(t *testing.T, topo *Topology, opts ExportOptions) (*topology.Topology, []string) {
	t.Helper()
	out, notes, err := topo.Export(opts)
	if err != nil {
		t.Fatalf("Export: %v", err)
	}
	data, err := out.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	back, err := topology.Parse(data)
	if err != nil {
		t.Fatalf("the exported file does not parse: %v\n%s", err, data)
	}
	h, ok := back.Host(out.Hosts[0].Name)
	if !ok {
		t.Fatal("host missing after the round trip")
	}
	for _, a := range topo.Endpoints {
		for _, b := range topo.Endpoints {
			da, _ := topo.Device(a.Addr)
			db, _ := topo.Device(b.Addr)
			want := PCIDistance(da, db).String()
			got, err := h.Distance(strings.ToLower(a.Name), strings.ToLower(b.Name))
			if err != nil {
				t.Fatalf("sim/topology Distance(%s, %s): %v", a.Name, b.Name, err)
			}
			if got.String() != want {
				t.Errorf("%s↔%s: sim/topology says %s, gpu says %s", a.Name, b.Name, got, want)
			}
		}
	}
	return back, notes
}

func TestExportDGX(t *testing.T) {
	topo := discoverFake(t, testutil.DGXLikeServer(t), noNVML())
	back, notes := exportRoundTrip(t, topo, ExportOptions{HostName: "dgx"})
	if len(notes) != 0 {
		t.Errorf("notes %q: every GPU has a preset and every NIC a rate", notes)
	}
	h := back.Hosts[0]
	if len(h.GPUs) != 8 || len(h.NICs) != 10 || len(h.NVMe) != 2 {
		t.Fatalf("exported %d GPUs, %d NICs, %d NVMe; want 8, 10, 2", len(h.GPUs), len(h.NICs), len(h.NVMe))
	}
	if h.GPUs[0].Model != "A100-80G" {
		t.Errorf("GPU model %q, want the A100-80G preset", h.GPUs[0].Model)
	}
	kinds := map[topology.BridgeKind]int{}
	for _, b := range h.PCIe {
		kinds[b.Kind]++
	}
	// 5 host bridges (4 complexes + the storage NIC's), 5 root ports, 4 × 3 switches.
	if kinds[topology.BridgeHost] != 5 || kinds[topology.BridgeRootPort] != 5 || kinds[topology.BridgeSwitch] != 12 {
		t.Errorf("bridges by kind %v, want 5 host bridges, 5 root ports, 12 switches", kinds)
	}
	if n := h.NICs[0]; n.Fabric != topology.InfiniBand || n.Bandwidth.BytesPerSecond() != 25e9 {
		t.Errorf("NIC0 %+v: want InfiniBand at 200 Gb/s", n)
	}
}

func TestExportBlueFieldBox(t *testing.T) {
	topo := discoverFake(t, testutil.BlueFieldBox(t), noNVML())
	back, _ := exportRoundTrip(t, topo, ExportOptions{})
	kinds := map[topology.NICKind]int{}
	for _, n := range back.Hosts[0].NICs {
		kinds[n.Kind]++
	}
	if kinds[topology.DPU] != 2 || kinds[topology.FPGA] != 1 || kinds[topology.NICPlain] != 1 {
		t.Fatalf("NIC kinds %v, want 2 dpu ports, 1 fpga, 1 plain nic", kinds)
	}
	data, err := back.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "topo/bluefield-box.yaml", string(data))
}

func TestExportNeedsAModelForUnknownGPUs(t *testing.T) {
	topo := discoverFake(t, testutil.DualSocketGPUServer(t), noNVML())
	if _, _, err := topo.Export(ExportOptions{}); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "10de:1db6") {
		t.Fatalf("V100 without a preset: %v, want ErrBadRequest naming 10de:1db6", err)
	}
	if _, _, err := topo.Export(ExportOptions{GPUModel: "V100"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown --gpu-model: %v", err)
	}
	_, notes := exportRoundTrip(t, topo, ExportOptions{GPUModel: "A40"})
	var gpuNotes, nicNotes int
	for _, n := range notes {
		switch {
		case strings.Contains(n, "exported as A40"):
			gpuNotes++
		case strings.Contains(n, "line rate not reported"):
			nicNotes++
		}
	}
	if gpuNotes != 8 || nicNotes != 1 {
		t.Fatalf("notes %q: want 8 GPU model notes and 1 for the Agilio without a link", notes)
	}
}
