package gpu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", name, got, want)
	}
}

// noNVML is an NVML library that is not there: Init fails the way go-nvml
// fails without libnvidia-ml.so.1, and any other call panics (the moq mock's
// nil functions do), which is what the real bindings would do after a
// failed Init.
func noNVML() *mock.Interface {
	return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
}

// logBuffer captures slog records as text.
func logBuffer() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func discoverFake(t *testing.T, s *testutil.FakeSysfs, lib NVMLLibrary) *Topology {
	t.Helper()
	log, _ := logBuffer()
	topo, err := Discover(t.Context(), Options{SysfsRoot: s.Root, NVML: lib, Logger: log})
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	return topo
}

func between(t *testing.T, topo *Topology, a, b string) string {
	t.Helper()
	c, err := topo.Between(a, b)
	if err != nil {
		t.Fatalf("Between(%s, %s): %v", a, b, err)
	}
	return c.String()
}

func TestDualSocketServer(t *testing.T) {
	s := testutil.DualSocketGPUServer(t)
	nv := noNVML()
	topo := discoverFake(t, s, nv)
	if len(nv.InitCalls()) != 1 {
		t.Fatalf("NVML Init called %d times, want 1", len(nv.InitCalls()))
	}
	if topo.NVML.Available || !strings.Contains(topo.NVML.Reason, "ERROR_LIBRARY_NOT_FOUND") {
		t.Fatalf("NVML status = %+v, want unavailable with the reason", topo.NVML)
	}
	if len(topo.GPUs) != 8 {
		t.Fatalf("found %d GPUs, want 8", len(topo.GPUs))
	}
	for _, g := range topo.GPUs {
		if g.Source != "sysfs" || g.UUID != "" {
			t.Errorf("GPU %+v: without NVML it must come from sysfs and claim no UUID", g)
		}
	}
	wantKinds := map[Kind]int{KindGPU: 8, KindNIC: 5, KindNVMe: 1}
	got := map[Kind]int{}
	for _, e := range topo.Endpoints {
		got[e.Kind]++
	}
	for k, n := range wantKinds {
		if got[k] != n {
			t.Errorf("%d %s endpoints, want %d", got[k], k, n)
		}
	}
	// Hand-derived from the layout: GPU0/GPU1/NIC0 share one PLX switch on
	// host bridge 17; GPU2 hangs off host bridge 3a of the same socket;
	// GPU4 is on the other socket; the NVMe and the Agilio sit on their own
	// root ports of host bridge 00 (socket 0).
	for _, c := range []struct{ a, b, want string }{
		{"GPU0", "GPU0", "X"},
		{"GPU0", "GPU1", "PIX"},
		{"0000:1a:00.0", "0000:1c:00.0", "PIX"},
		{"GPU0", "GPU2", "NODE"},
		{"GPU0", "GPU4", "SYS"},
		{"GPU7", "GPU6", "PIX"},
		{"NVME0", "GPU0", "NODE"},
		{"NVME0", "NIC0", "PHB"}, // NIC0 is the Agilio at 02:00.0
		{"NVME0", "GPU7", "SYS"},
	} {
		if got := between(t, topo, c.a, c.b); got != c.want {
			t.Errorf("%s↔%s = %s, want %s", c.a, c.b, got, c.want)
		}
	}
	g0, err := topo.Device("0000:1a:00.0")
	if err != nil {
		t.Fatal(err)
	}
	if g0.NUMANode != 0 || g0.LocalCPUs.String() != "0-23,48-71" || g0.Link.Speed.Gen() != 3 || g0.Link.Width != 16 {
		t.Errorf("GPU0 numa %d cpus %s link %+v", g0.NUMANode, g0.LocalCPUs, g0.Link)
	}
	roles := []string{}
	for _, p := range g0.Path {
		roles = append(roles, p.Role+" "+p.Addr)
	}
	if want := "root-port 0000:17:00.0,switch-upstream 0000:18:00.0,switch-downstream 0000:19:08.0"; strings.Join(roles, ",") != want {
		t.Errorf("GPU0 path = %v, want %s", roles, want)
	}
	desc, err := topo.Describe()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "topo/dual-socket.txt", desc)
}

func TestDGXLikeServer(t *testing.T) {
	topo := discoverFake(t, testutil.DGXLikeServer(t), noNVML())
	if len(topo.GPUs) != 8 {
		t.Fatalf("found %d GPUs, want 8 (NVSwitch functions are not GPUs)", len(topo.GPUs))
	}
	// GPUs by address: 05, 09 (NUMA 1); 45, 49 (NUMA 3); 85, 89 (NUMA 5); c5, c9 (NUMA 7).
	// Each GPU shares a second-level switch with the NIC two buses below it.
	for _, c := range []struct{ a, b, want string }{
		{"0000:05:00.0", "0000:06:00.0", "PIX"}, // GPU and NIC under one level-2 switch
		{"0000:05:00.0", "0000:0a:00.0", "PXB"}, // NIC under the sibling level-2 switch
		{"GPU0", "GPU1", "PXB"},
		{"GPU0", "GPU2", "SYS"},
		{"0000:21:00.0", "0000:21:00.1", "PIX"}, // two ports of the storage NIC
		{"0000:21:00.0", "GPU0", "SYS"},
		{"0000:4b:00.0", "0000:45:00.0", "PXB"}, // NVMe under the level-1 switch
	} {
		if got := between(t, topo, c.a, c.b); got != c.want {
			t.Errorf("%s↔%s = %s, want %s", c.a, c.b, got, c.want)
		}
	}
	desc, err := topo.Describe()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "topo/dgx-like.txt", desc)
}

func TestBlueFieldBox(t *testing.T) {
	topo := discoverFake(t, testutil.BlueFieldBox(t), noNVML())
	var bf, fpga, nic8086 int
	for _, d := range topo.PCI {
		if d.BlueField && d.Kind == KindNIC {
			bf++
		}
		if d.Kind == KindFPGA {
			fpga++
		}
		if d.Kind == KindNIC && d.Vendor == pciid.VendorIntel {
			nic8086++
		}
	}
	if bf != 2 || fpga != 1 || nic8086 != 1 || len(topo.GPUs) != 1 {
		t.Fatalf("BlueField NIC functions %d (want 2), FPGAs %d (want 1), Intel NICs %d (want 1), GPUs %d (want 1)", bf, fpga, nic8086, len(topo.GPUs))
	}
	for _, c := range []struct{ a, b, want string }{
		{"GPU0", "NIC0", "PHB"},
		{"NIC0", "NIC1", "PIX"},
		{"GPU0", "FPGA0", "PHB"},
		{"GPU0", "NVME0", "PHB"},
	} {
		if got := between(t, topo, c.a, c.b); got != c.want {
			t.Errorf("%s↔%s = %s, want %s", c.a, c.b, got, c.want)
		}
	}
	nic0, err := topo.Endpoint("NIC0")
	if err != nil {
		t.Fatal(err)
	}
	if nic0.Label != "mlx5_0" {
		t.Errorf("NIC0 label %q, want mlx5_0", nic0.Label)
	}
	desc, err := topo.Describe()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "topo/bluefield-box.txt", desc)
	js, err := json.MarshalIndent(topo, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var back Topology
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatalf("JSON does not read back: %v", err)
	}
	if len(back.PCI) != len(topo.PCI) || len(back.Endpoints) != len(topo.Endpoints) {
		t.Fatalf("JSON round trip lost devices")
	}
}

// TestNVMLAbsentReportedOnce runs discovery against an NVML that is not
// there and checks the one warning, and that no other NVML call was made.
func TestNVMLAbsentReportedOnce(t *testing.T) {
	s := testutil.BlueFieldBox(t)
	log, buf := logBuffer()
	nv := noNVML()
	topo, err := Discover(t.Context(), Options{SysfsRoot: s.Root, NVML: nv, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(buf.String(), "nvml_unavailable"); n != 1 {
		t.Fatalf("NVML absence logged %d times, want once:\n%s", n, buf.String())
	}
	if len(nv.ShutdownCalls()) != 0 || len(nv.DeviceGetCountCalls()) != 0 {
		t.Fatalf("NVML was called after a failed Init")
	}
	if topo.NVML.Available {
		t.Fatal("NVML reported available")
	}
}

// TestDiscoverThisHost runs against the real /sys and the real NVML
// library: where libnvidia-ml is absent (CI) the status says why and every
// GPU comes from sysfs; where it is present every GPU comes from NVML.
func TestDiscoverThisHost(t *testing.T) {
	log, buf := logBuffer()
	topo, err := Discover(t.Context(), Options{Logger: log})
	if err != nil {
		t.Fatalf("Discover on this host: %v", err)
	}
	if len(topo.PCI) == 0 {
		t.Fatal("no PCI functions found in /sys/bus/pci/devices")
	}
	want := "sysfs"
	if topo.NVML.Available {
		want = "nvml"
	} else {
		if topo.NVML.Reason == "" {
			t.Fatal("NVML unavailable without a reason")
		}
		if strings.Count(buf.String(), "nvml_unavailable") != 1 {
			t.Fatalf("want exactly one nvml_unavailable record:\n%s", buf.String())
		}
	}
	for _, g := range topo.GPUs {
		if g.Source != want {
			t.Errorf("GPU %s from %s, want %s", g.Addr, g.Source, want)
		}
	}
}

func TestDiscoverErrors(t *testing.T) {
	_, err := Discover(t.Context(), Options{SysfsRoot: t.TempDir(), DisableNVML: true})
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Discover on an empty root: %v, want a not-exist error", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	s := testutil.BlueFieldBox(t)
	if _, err := Discover(ctx, Options{SysfsRoot: s.Root, DisableNVML: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Discover with a cancelled context: %v", err)
	}
	// A malformed function is skipped with a warning; the rest is found.
	if err := os.WriteFile(filepath.Join(s.Root, "bus/pci/devices/0000:05:00.0/current_link_speed"), []byte("fast\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	topo, err := Discover(t.Context(), Options{SysfsRoot: s.Root, DisableNVML: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topo.Device("0000:05:00.0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("malformed function was not skipped: %v", err)
	}
	if len(topo.Warnings) != 1 || !strings.Contains(topo.Warnings[0], "current_link_speed") {
		t.Fatalf("warnings = %q, want one naming current_link_speed", topo.Warnings)
	}
	if _, err := topo.Between("GPU0", "GPU9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Between unknown endpoint: %v", err)
	}
}
