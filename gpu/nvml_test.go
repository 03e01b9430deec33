package gpu

import (
	"fmt"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/kvloom/kvloom/internal/testutil"
)

// dgxGPUBuses are the GPUs of testutil.DGXLikeServer in PCI order, which is
// the order NVML numbers them in; GPUs 2k and 2k+1 share a PCIe complex.
var dgxGPUBuses = []int{0x05, 0x09, 0x45, 0x49, 0x85, 0x89, 0xc5, 0xc9}

// busIDArray writes s into NVML's NUL-terminated int8 buffer.
func busIDArray(s string) [32]int8 {
	var a [32]int8
	for i := range min(len(s), len(a)-1) {
		a[i] = int8(s[i])
	}
	return a
}

// dgxMock is go-nvml's DGX A100 mock with what it leaves unset filled in
// (hw-interfaces.md §4.5): PCI bus ids in NVML's 8-digit upper-case form
// pointing at the fake tree's GPUs, twelve NVLinks each into the NVSwitch
// fabric, P2P status, NUMA affinity, and common ancestors from ancestor(i, j).
func dgxMock(ancestor func(i, j int) nvml.GpuTopologyLevel) *server.Server {
	srv := dgxa100.NewWithGPUs(gpus.Multiple(8, gpus.A100_SXM4_80GB)...)
	index := map[nvml.Device]int{}
	for i, d := range srv.Devices {
		index[d] = i
	}
	for i, d := range srv.Devices {
		dev := d.(*server.Device)
		busID := fmt.Sprintf("%08X:%02X:00.0", 0, dgxGPUBuses[i])
		dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{Domain: 0, Bus: uint32(dgxGPUBuses[i]), PciDeviceId: 0x20b210de, BusId: busIDArray(busID)}, nvml.SUCCESS
		}
		dev.GetMemoryAffinityFunc = func(int, nvml.AffinityScope) ([]uint, nvml.Return) {
			if i == 0 {
				return nil, nvml.ERROR_NOT_SUPPORTED // sysfs fills it in
			}
			return []uint{1 << []int{1, 1, 3, 3, 5, 5, 7, 7}[i]}, nvml.SUCCESS
		}
		// A PCIe GPU's memory is no NUMA node of its own (that is Grace
		// Hopper and later).
		dev.GetNumaNodeIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		dev.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link >= 12 {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		dev.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{BusId: busIDArray(fmt.Sprintf("%08X:%02X:00.0", 0, 0xd0+link/2))}, nvml.SUCCESS
		}
		dev.GetNvLinkRemoteDeviceTypeFunc = func(int) (nvml.IntNvLinkDeviceType, nvml.Return) {
			return nvml.NVLINK_DEVICE_TYPE_SWITCH, nvml.SUCCESS
		}
		dev.GetTopologyCommonAncestorFunc = func(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			return ancestor(i, index[other]), nvml.SUCCESS
		}
		dev.GetP2PStatusFunc = func(nvml.Device, nvml.GpuP2PCapsIndex) (nvml.GpuP2PStatus, nvml.Return) {
			return nvml.P2P_STATUS_OK, nvml.SUCCESS
		}
	}
	return srv
}

// dgxAncestor is what NVML reports on the DGX-like layout, written from the
// hardware, not from our code: GPUs that share a PCIe complex meet in its
// first-level switch (MULTIPLE: two switch levels each side); the
// complexes sit on different NUMA nodes (SYSTEM).
func dgxAncestor(i, j int) nvml.GpuTopologyLevel {
	if i/2 == j/2 {
		return nvml.TOPOLOGY_MULTIPLE
	}
	return nvml.TOPOLOGY_SYSTEM
}

func TestNVMLMatchesSysfsOnDGX(t *testing.T) {
	srv := dgxMock(dgxAncestor)
	topo := discoverFake(t, testutil.DGXLikeServer(t), srv)
	if !topo.NVML.Available || topo.NVML.DriverVersion == "" {
		t.Fatalf("NVML status %+v, want available with a driver version", topo.NVML)
	}
	if len(topo.Warnings) != 0 {
		t.Fatalf("NVML and sysfs disagree: %q", topo.Warnings)
	}
	if len(topo.GPUs) != 8 || len(topo.GPUPairs) != 28 {
		t.Fatalf("%d GPUs, %d pairs; want 8 and 28", len(topo.GPUs), len(topo.GPUPairs))
	}
	g0 := topo.GPUs[0]
	if g0.Source != "nvml" || !strings.HasPrefix(g0.UUID, "GPU-") || g0.MemoryBytes != 80*1024*1024*1024 ||
		!strings.Contains(g0.Name, "A100-SXM4-80GB") || g0.Addr != "0000:05:00.0" {
		t.Fatalf("GPU0 = %+v", g0)
	}
	if g0.NUMANode != 1 || g0.NUMASource != "sysfs" || g0.GPUNUMAID != -1 {
		t.Errorf("GPU0 NUMA node %d from %q (GPU NUMA ID %d), want 1 from sysfs (NVML said NOT_SUPPORTED)", g0.NUMANode, g0.NUMASource, g0.GPUNUMAID)
	}
	if g7 := topo.GPUs[7]; g7.NUMANode != 7 || g7.NUMASource != "nvml" {
		t.Errorf("GPU7 NUMA node %d from %q, want 7 from NVML", g7.NUMANode, g7.NUMASource)
	}
	if len(g0.NVLinks) != 12 || g0.NVLinks[0].RemoteKind != "switch" {
		t.Errorf("GPU0 NVLinks = %+v, want 12 into the switch fabric", g0.NVLinks)
	}
	for _, p := range topo.GPUPairs {
		if p.P2PRead != "OK" || p.P2PNVLink != "OK" {
			t.Errorf("pair %d/%d P2P = %s/%s", p.A, p.B, p.P2PRead, p.P2PNVLink)
		}
	}
	for _, c := range []struct{ a, b, want string }{
		{"GPU0", "GPU1", "NV12"},
		{"GPU0", "GPU7", "NV12"},
		{"GPU0", "NIC0", "PIX"},
		{"GPU0", "NIC1", "PXB"},
	} {
		if got := between(t, topo, c.a, c.b); got != c.want {
			t.Errorf("%s↔%s = %s, want %s", c.a, c.b, got, c.want)
		}
	}
	desc, err := topo.Describe()
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "topo/dgx-like-nvml.txt", desc)
}

// TestNVMLDisagreementIsReported feeds an NVML whose answer for one pair
// differs from what the sysfs paths say.
func TestNVMLDisagreementIsReported(t *testing.T) {
	srv := dgxMock(func(i, j int) nvml.GpuTopologyLevel {
		if i+j == 1 {
			return nvml.TOPOLOGY_SINGLE
		}
		return dgxAncestor(i, j)
	})
	topo := discoverFake(t, testutil.DGXLikeServer(t), srv)
	if len(topo.Warnings) != 1 || topo.Warnings[0] != "GPU0/GPU1: NVML says PIX, sysfs paths say PXB" {
		t.Fatalf("warnings = %q, want the GPU0/GPU1 disagreement", topo.Warnings)
	}
}

// TestNVMLGPUMissingFromSysfs: a GPU NVML reports at a bus id sysfs does
// not have is kept, named in a warning, and left out of the matrix.
func TestNVMLGPUMissingFromSysfs(t *testing.T) {
	topo := discoverFake(t, testutil.BlueFieldBox(t), dgxMock(dgxAncestor))
	if len(topo.GPUs) != 8 {
		t.Fatalf("%d GPUs, want NVML's 8", len(topo.GPUs))
	}
	missing, notGPU := 0, 0
	for _, w := range topo.Warnings {
		if strings.Contains(w, "has no sysfs function") {
			missing++
		}
		if strings.Contains(w, "0000:05:00.0 is 144d:a824 nvme in sysfs, not an NVIDIA function") {
			notGPU++
		}
	}
	// 0000:05:00.0 exists in the BlueField box, but it is the NVMe drive.
	if missing != 7 || notGPU != 1 {
		t.Fatalf("%d GPUs without a sysfs function (want 7), %d on a non-NVIDIA function (want 1): %q", missing, notGPU, topo.Warnings)
	}
	for _, e := range topo.Endpoints {
		if e.Kind == KindGPU {
			t.Errorf("endpoint %+v: an NVML GPU sysfs does not confirm must not enter the matrix", e)
		}
	}
}

func TestNVMLCountFailure(t *testing.T) {
	srv := dgxa100.New()
	srv.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	topo := discoverFake(t, testutil.BlueFieldBox(t), srv)
	if topo.NVML.Available || !strings.Contains(topo.NVML.Reason, "DeviceGetCount") {
		t.Fatalf("NVML status %+v, want unavailable naming DeviceGetCount", topo.NVML)
	}
	if len(topo.GPUs) != 1 || topo.GPUs[0].Source != "sysfs" {
		t.Fatalf("GPUs %+v, want the one sysfs GPU", topo.GPUs)
	}
	if len(srv.ShutdownCalls()) != 1 {
		t.Fatalf("Shutdown called %d times after a successful Init, want 1", len(srv.ShutdownCalls()))
	}
}

// vmTree is the H200 VM scripts/gpu-check.sh ran on
// (/work/brief/gpu-run1): one host bridge, every numa_node -1 because the
// hypervisor's firmware gives no _PXM, a Gen5 x16 GPU and a virtio NIC.
func vmTree(t *testing.T) *testutil.FakeSysfs {
	s := testutil.NewFakeSysfs(t)
	host := s.HostBridge(0, 0)
	s.Add(host, testutil.PCIFunc{Addr: "0000:00:00.0", Vendor: 0x8086, Device: 0x0d57, Class: 0x060000, NUMA: -1, CPUs: "0-15", PortType: testutil.NoPCIe})
	s.Add(host, testutil.PCIFunc{Addr: "0000:00:03.0", Vendor: 0x1af4, Device: 0x1041, SubVendor: 0x1af4, SubDevice: 0x1041, Class: 0x020000, NUMA: -1, CPUs: "0-15", PortType: testutil.NoPCIe, Driver: "virtio-pci", Net: []string{"eth0"}})
	s.Add(host, testutil.PCIFunc{Addr: "0000:00:06.0", Vendor: 0x10de, Device: 0x2335, SubVendor: 0x10de, SubDevice: 0x18bf, Class: 0x030200, NUMA: -1, CPUs: "0-15", Speed: "32.0 GT/s PCIe", Width: 16, PortType: testutil.PortEndpoint, BARs: []uint64{0x1000000}, Driver: "nvidia"})
	return s
}

// vmNVML is NVML on that VM: one H200 at 0000:00:06.0 whose memory
// affinity is node 0 (what nvidia-smi printed), or not answered.
func vmNVML(affinity []uint, r nvml.Return) *server.Server {
	srv := dgxa100.NewWithGPUs(gpus.A100_SXM4_80GB)
	dev := srv.Devices[0].(*server.Device)
	dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		return nvml.PciInfo{PciDeviceId: 0x233510de, BusId: busIDArray("00000000:00:06.0")}, nvml.SUCCESS
	}
	dev.GetMemoryAffinityFunc = func(n int, scope nvml.AffinityScope) ([]uint, nvml.Return) {
		if scope != nvml.AFFINITY_SCOPE_NODE || n < 64 {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		return affinity, r
	}
	dev.GetNumaNodeIdFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	dev.GetNvLinkStateFunc = func(int) (nvml.EnableState, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	return srv
}

// numaColumn is the "NUMA Affinity" cell of a row of Describe's matrix.
func numaColumn(t *testing.T, desc, row string) string {
	t.Helper()
	for _, line := range strings.Split(desc, "\n") {
		if f := strings.Fields(line); strings.HasPrefix(line, row+" ") {
			return f[len(f)-1]
		}
	}
	t.Fatalf("no row %s in:\n%s", row, desc)
	return ""
}

// TestNUMAAffinityFromNVML: where sysfs does not know the NUMA node of a
// GPU (-1) and NVML does, the matrix and the exported topology use NVML's
// node, for the GPU and for the functions under the same host bridge;
// where neither knows, it is N/A.
func TestNUMAAffinityFromNVML(t *testing.T) {
	for _, c := range []struct {
		name     string
		affinity []uint
		r        nvml.Return
		gpu, nic string
		node     int
	}{
		{"NVML names node 0", []uint{1}, nvml.SUCCESS, "0", "0", 0},
		{"NVML names nodes 1 and 2", []uint{0b110}, nvml.SUCCESS, "1-2", "1-2", 1},
		{"NVML names node 65", []uint{0, 2}, nvml.SUCCESS, "65", "65", 65},
		{"NVML does not answer", nil, nvml.ERROR_NOT_SUPPORTED, "N/A", "N/A", -1},
		{"NVML answers an empty set", []uint{0}, nvml.SUCCESS, "N/A", "N/A", -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			tree := vmTree(t)
			topo := discoverFake(t, tree, vmNVML(c.affinity, c.r))
			if len(topo.GPUs) != 1 || topo.GPUs[0].NUMANode != c.node {
				t.Fatalf("GPUs %+v, want one at NUMA node %d", topo.GPUs, c.node)
			}
			if d, _ := topo.Device("0000:00:06.0"); d.NUMANode != -1 {
				t.Fatalf("sysfs numa_node of the GPU became %d; NVML's answer must not overwrite what sysfs said", d.NUMANode)
			}
			desc, err := topo.Describe()
			if err != nil {
				t.Fatal(err)
			}
			if got := numaColumn(t, desc, "GPU0"); got != c.gpu {
				t.Errorf("GPU0 NUMA Affinity %q, want %q", got, c.gpu)
			}
			if got := numaColumn(t, desc, "NIC0"); got != c.nic {
				t.Errorf("NIC0 (same host bridge) NUMA Affinity %q, want %q", got, c.nic)
			}
			out, _, err := topo.Export(ExportOptions{GPUModel: "H100-SXM"})
			if err != nil {
				t.Fatal(err)
			}
			h := out.Hosts[0]
			if h.GPUs[0].NUMA != c.node || h.NICs[0].NUMA != c.node || h.PCIe[0].NUMA != c.node {
				t.Errorf("exported NUMA: GPU %d, NIC %d, host bridge %d; want %d", h.GPUs[0].NUMA, h.NICs[0].NUMA, h.PCIe[0].NUMA, c.node)
			}
		})
	}
}

// TestNUMAAffinitySysfsKnown: where the kernel knows a function's node,
// that is what the matrix shows for it; NVML's answer is used for the GPU
// itself (it is the driver's view, and it is what nvidia-smi prints).
func TestNUMAAffinitySysfsKnown(t *testing.T) {
	topo := discoverFake(t, testutil.DGXLikeServer(t), dgxMock(dgxAncestor))
	for _, c := range []struct{ addr, want string }{
		{"0000:05:00.0", "1"}, // GPU0: NVML said NOT_SUPPORTED, sysfs 1
		{"0000:c9:00.0", "7"}, // GPU7: NVML 7
		{"0000:21:00.0", "2"}, // a storage NIC: sysfs 2
	} {
		if got := CPUSet(topo.NUMAAffinity(c.addr)).String(); got != c.want {
			t.Errorf("NUMA affinity of %s = %q, want %q", c.addr, got, c.want)
		}
	}
	if got := topo.NUMAAffinity("not a bus id"); got != nil {
		t.Errorf("NUMA affinity of a bad address = %v", got)
	}
}

// TestNVMLWithoutAffinitySymbols: an old driver without
// nvmlDeviceGetMemoryAffinity or nvmlDeviceGetNumaNodeId is not called
// for them (calling a missing symbol would abort the process).
func TestNVMLWithoutAffinitySymbols(t *testing.T) {
	srv := vmNVML([]uint{1}, nvml.SUCCESS)
	dev := srv.Devices[0].(*server.Device)
	dev.GetMemoryAffinityFunc = nil // the mock panics if called
	dev.GetNumaNodeIdFunc = nil
	srv.LookupSymbolFunc = func(sym string) error {
		if sym == "nvmlDeviceGetMemoryAffinity" || sym == "nvmlDeviceGetNumaNodeId" {
			return fmt.Errorf("%s: undefined symbol", sym)
		}
		return nil
	}
	topo := discoverFake(t, vmTree(t), srv)
	if len(topo.GPUs) != 1 || topo.GPUs[0].NUMANode != -1 || topo.GPUs[0].GPUNUMAID != -1 {
		t.Fatalf("GPUs %+v", topo.GPUs)
	}
}
