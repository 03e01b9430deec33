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
// fabric, P2P status, NUMA ids, and common ancestors from ancestor(i, j).
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
		dev.GetNumaNodeIdFunc = func() (int, nvml.Return) {
			if i == 0 {
				return 0, nvml.ERROR_NOT_SUPPORTED // sysfs fills it in
			}
			return []int{1, 1, 3, 3, 5, 5, 7, 7}[i], nvml.SUCCESS
		}
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
	if g0.NUMANode != 1 {
		t.Errorf("GPU0 NUMA node %d, want 1 from sysfs (NVML said NOT_SUPPORTED)", g0.NUMANode)
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
