// Package testutil holds test helpers shared by kvloom's packages: fake
// sysfs trees, real services started for a test, golden files.
package testutil

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// PCIe port types for PCIFunc.PortType (PCI_EXP_FLAGS_TYPE).
const (
	NoPCIe         = -1 // conventional PCI: no PCI Express capability
	PortEndpoint   = 0x0
	PortRoot       = 0x4
	PortUpstream   = 0x5
	PortDownstream = 0x6
)

// PCIFunc is one PCI function of a fake sysfs tree.
type PCIFunc struct {
	Addr                 string // "0000:3b:00.0"
	Vendor, Device       uint16
	SubVendor, SubDevice uint16
	Class                uint32 // 24-bit class code, e.g. 0x030200
	NUMA                 int    // numa_node; -1 for unknown
	CPUs                 string // local_cpulist
	// Speed is current_link_speed ("16.0 GT/s PCIe"); empty writes no link
	// files, as for a conventional PCI function.
	Speed    string
	Width    int
	PortType int      // NoPCIe, PortEndpoint, PortRoot, …
	BARs     []uint64 // sizes of BARs 0.. (0 = unused)
	Driver   string
	Net      []string // network interfaces (net/<name>)
	IB       []string // RDMA devices (infiniband/<name>)
	NVMe     []string // NVMe controllers (nvme/<name>)
	// NetSpeed is written to net/<if>/speed (Mb/s) when non-zero; IBRate to
	// infiniband/<dev>/ports/1/rate when not empty ("200 Gb/sec (4X HDR)").
	NetSpeed int
	IBRate   string
}

// FakeSysfs builds a sysfs tree the way the kernel lays it out: function
// directories nested under their bridges in devices/pciDDDD:BB/…, and
// relative symlinks from bus/pci/devices, so that filepath.EvalSymlinks
// resolves them exactly as on a host.
type FakeSysfs struct {
	Root string
	t    testing.TB
	bar  uint64 // next BAR address handed out
}

// NewFakeSysfs makes an empty tree in t.TempDir().
func NewFakeSysfs(t testing.TB) *FakeSysfs {
	t.Helper()
	s := &FakeSysfs{Root: t.TempDir(), t: t, bar: 0x90000000}
	s.mkdir("bus/pci/devices")
	return s
}

func (s *FakeSysfs) mkdir(rel string) {
	s.t.Helper()
	if err := os.MkdirAll(filepath.Join(s.Root, rel), 0o755); err != nil {
		s.t.Fatalf("fake sysfs: %v", err)
	}
}

func (s *FakeSysfs) write(rel, content string) {
	s.t.Helper()
	if err := os.WriteFile(filepath.Join(s.Root, rel), []byte(content), 0o644); err != nil {
		s.t.Fatalf("fake sysfs: %v", err)
	}
}

func (s *FakeSysfs) symlink(target, rel string) {
	s.t.Helper()
	if err := os.Symlink(target, filepath.Join(s.Root, rel)); err != nil {
		s.t.Fatalf("fake sysfs: %v", err)
	}
}

// HostBridge adds a root complex (devices/pciDDDD:BB) and returns its path
// relative to Root, to pass as the parent of Add.
func (s *FakeSysfs) HostBridge(domain uint16, bus uint8) string {
	s.t.Helper()
	rel := fmt.Sprintf("devices/pci%04x:%02x", domain, bus)
	s.mkdir(rel)
	return rel
}

// Add creates f's directory under parent (a host bridge or a bridge
// function added before) and returns its path relative to Root.
func (s *FakeSysfs) Add(parent string, f PCIFunc) string {
	s.t.Helper()
	rel := parent + "/" + f.Addr
	s.mkdir(rel)
	w := func(name, format string, args ...any) { s.write(rel+"/"+name, fmt.Sprintf(format, args...)) }
	w("vendor", "0x%04x\n", f.Vendor)
	w("device", "0x%04x\n", f.Device)
	w("subsystem_vendor", "0x%04x\n", f.SubVendor)
	w("subsystem_device", "0x%04x\n", f.SubDevice)
	w("class", "0x%06x\n", f.Class)
	w("revision", "0x%02x\n", 1)
	w("irq", "%d\n", 0)
	w("numa_node", "%d\n", f.NUMA)
	w("local_cpulist", "%s\n", f.CPUs)
	w("resource", "%s", s.resource(f.BARs))
	if f.Speed != "" {
		w("current_link_speed", "%s\n", f.Speed)
		w("max_link_speed", "%s\n", f.Speed)
		w("current_link_width", "%d\n", f.Width)
		w("max_link_width", "%d\n", f.Width)
	}
	w("config", "%s", configSpace(f))
	if f.Driver != "" {
		s.mkdir("bus/pci/drivers/" + f.Driver)
		s.symlink(strings.Repeat("../", strings.Count(rel, "/")+1)+"bus/pci/drivers/"+f.Driver, rel+"/driver")
	}
	for _, sub := range []struct {
		dir   string
		names []string
	}{{"net", f.Net}, {"infiniband", f.IB}, {"nvme", f.NVMe}} {
		for _, n := range sub.names {
			s.mkdir(rel + "/" + sub.dir + "/" + n)
			s.mkdir("class/" + sub.dir)
			s.symlink("../../"+rel+"/"+sub.dir+"/"+n, "class/"+sub.dir+"/"+n)
			switch {
			case sub.dir == "net" && f.NetSpeed != 0:
				s.write(rel+"/net/"+n+"/speed", fmt.Sprintf("%d\n", f.NetSpeed))
			case sub.dir == "infiniband" && f.IBRate != "":
				s.mkdir(rel + "/infiniband/" + n + "/ports/1")
				s.write(rel+"/infiniband/"+n+"/ports/1/rate", f.IBRate+"\n")
			}
		}
	}
	s.symlink("../../../"+rel, "bus/pci/devices/"+f.Addr)
	return rel
}

// resource writes BARs 0–5, the ROM and the bridge windows (13 lines is
// what the kernel prints for a function without SR-IOV).
func (s *FakeSysfs) resource(bars []uint64) string {
	var b strings.Builder
	for i := range 13 {
		var size uint64
		if i < len(bars) {
			size = bars[i]
		}
		if size == 0 {
			b.WriteString("0x0000000000000000 0x0000000000000000 0x0000000000000000\n")
			continue
		}
		start := (s.bar + size - 1) &^ (size - 1)
		s.bar = start + size
		fmt.Fprintf(&b, "0x%016x 0x%016x 0x%016x\n", start, start+size-1, uint64(0x0014220c))
	}
	return b.String()
}

var speedCodes = map[string]uint16{"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}

// configSpace is a 256-byte config header with, for PCIe functions, a PCI
// Express capability at 0x40 carrying the port type and the link.
func configSpace(f PCIFunc) string {
	c := make([]byte, 256)
	binary.LittleEndian.PutUint16(c[0x00:], f.Vendor)
	binary.LittleEndian.PutUint16(c[0x02:], f.Device)
	c[0x08] = 1
	c[0x09] = byte(f.Class)
	c[0x0a] = byte(f.Class >> 8)
	c[0x0b] = byte(f.Class >> 16)
	if f.Class>>8 == 0x0604 {
		c[0x0e] = 1 // header type 1: PCI-to-PCI bridge
	} else {
		binary.LittleEndian.PutUint16(c[0x2c:], f.SubVendor)
		binary.LittleEndian.PutUint16(c[0x2e:], f.SubDevice)
	}
	if f.PortType == NoPCIe {
		return string(c)
	}
	binary.LittleEndian.PutUint16(c[0x06:], 0x0010) // status: capability list
	c[0x34] = 0x40
	c[0x40] = 0x10 // PCI Express
	c[0x41] = 0x00 // last capability
	binary.LittleEndian.PutUint16(c[0x42:], uint16(2|f.PortType<<4))
	code := speedCodes[strings.Fields(f.Speed + " ")[0]]
	link := code | uint16(f.Width)<<4
	binary.LittleEndian.PutUint32(c[0x4c:], uint32(link))
	binary.LittleEndian.PutUint16(c[0x52:], link)
	return string(c)
}

// numaCPUs returns a cpulist for node n of a machine with nodes×per cores
// and SMT siblings numbered after all cores.
func numaCPUs(n, nodes, per int) string {
	lo := n * per
	return fmt.Sprintf("%d-%d,%d-%d", lo, lo+per-1, nodes*per+lo, nodes*per+lo+per-1)
}

func bdf(bus int, dev, fn int) string { return fmt.Sprintf("0000:%02x:%02x.%d", bus, dev, fn) }

// DualSocketGPUServer builds a two-socket Xeon server with eight PCIe GPUs
// (Tesla V100 PCIe) and four ConnectX-5 NICs: per socket two host bridges,
// each with a root port, a PLX switch and two GPUs plus a NIC behind it. The
// first host bridge of socket 0 also carries an NVMe drive and a Netronome
// Agilio NIC on their own root ports.
//
// GPUs sit at buses 1a, 1b (NUMA 0), 3d, 3e (NUMA 0), 88, 89 (NUMA 1), b1,
// b2 (NUMA 1); the ConnectX-5s at 1c, 3f, 8a, b3; the NVMe at 01, the
// Agilio at 02.
func DualSocketGPUServer(t testing.TB) *FakeSysfs {
	t.Helper()
	s := NewFakeSysfs(t)
	cpus := func(node int) string { return numaCPUs(node, 2, 24) }
	hb0 := s.HostBridge(0, 0x00)
	s.Add(hb0, PCIFunc{Addr: bdf(0, 0, 0), Vendor: 0x8086, Device: 0x2020, Class: 0x060000, NUMA: 0, CPUs: cpus(0), PortType: NoPCIe})
	rp := s.Add(hb0, PCIFunc{Addr: bdf(0, 0x1d, 0), Vendor: 0x8086, Device: 0xa190, Class: 0x060400, NUMA: 0, CPUs: cpus(0), Speed: "8.0 GT/s PCIe", Width: 4, PortType: PortRoot, Driver: "pcieport"})
	s.Add(rp, PCIFunc{Addr: bdf(1, 0, 0), Vendor: 0x144d, Device: 0xa808, SubVendor: 0x144d, SubDevice: 0xa801, Class: 0x010802, NUMA: 0, CPUs: cpus(0), Speed: "8.0 GT/s PCIe", Width: 4, PortType: PortEndpoint, BARs: []uint64{0x4000}, Driver: "nvme", NVMe: []string{"nvme0"}})
	rp = s.Add(hb0, PCIFunc{Addr: bdf(0, 0x1c, 0), Vendor: 0x8086, Device: 0xa110, Class: 0x060400, NUMA: 0, CPUs: cpus(0), Speed: "8.0 GT/s PCIe", Width: 8, PortType: PortRoot, Driver: "pcieport"})
	s.Add(rp, PCIFunc{Addr: bdf(2, 0, 0), Vendor: 0x19ee, Device: 0x4000, SubVendor: 0x19ee, SubDevice: 0x4001, Class: 0x020000, NUMA: 0, CPUs: cpus(0), Speed: "8.0 GT/s PCIe", Width: 8, PortType: PortEndpoint, BARs: []uint64{0x1000000}, Driver: "nfp", Net: []string{"enp2s0np0"}})
	gpu, nic := 0, 0
	for i, hb := range []int{0x17, 0x3a, 0x85, 0xae} {
		node := i / 2
		host := s.HostBridge(0, uint8(hb))
		port := func(addr string, dev uint16, pt int) PCIFunc {
			return PCIFunc{Addr: addr, Vendor: 0x10b5, Device: dev, Class: 0x060400, NUMA: node, CPUs: cpus(node), Speed: "8.0 GT/s PCIe", Width: 16, PortType: pt, Driver: "pcieport"}
		}
		rp := port(bdf(hb, 0, 0), 0, PortRoot)
		rp.Vendor, rp.Device = 0x8086, 0x2030
		r := s.Add(host, rp)
		usp := s.Add(r, port(bdf(hb+1, 0, 0), 0x8796, PortUpstream))
		for j, leaf := range []int{hb + 3, hb + 4, hb + 5} {
			dsp := s.Add(usp, port(bdf(hb+2, 8*(j+1), 0), 0x8796, PortDownstream))
			f := PCIFunc{Addr: bdf(leaf, 0, 0), NUMA: node, CPUs: cpus(node), Speed: "8.0 GT/s PCIe", Width: 16, PortType: PortEndpoint}
			if j < 2 {
				f.Vendor, f.Device, f.SubVendor, f.SubDevice, f.Class = 0x10de, 0x1db6, 0x10de, 0x124a, 0x030200
				f.BARs, f.Driver = []uint64{0x1000000, 0, 0x800000000, 0, 0x2000000}, "nvidia"
				gpu++
			} else {
				f.Vendor, f.Device, f.SubVendor, f.SubDevice, f.Class = 0x15b3, 0x1017, 0x15b3, 0x0007, 0x020000
				f.BARs, f.Driver = []uint64{0x2000000}, "mlx5_core"
				f.Net, f.IB, f.NetSpeed = []string{fmt.Sprintf("ens%df0", nic+1)}, []string{fmt.Sprintf("mlx5_%d", nic)}, 100000
				nic++
			}
			s.Add(dsp, f)
		}
	}
	return s
}

// DGXLikeServer builds a DGX A100-like layout: two EPYC sockets in NPS4
// (eight NUMA nodes), four PCIe complexes each with a root port, a
// two-level Broadcom switch tree and, per second-level switch, one A100
// SXM4 80GB and one ConnectX-6 HDR InfiniBand NIC; NVMe drives on complexes 0 and 2, an NVSwitch
// function on complexes 1 and 3, and a dual-port storage NIC on its own
// root port.
func DGXLikeServer(t testing.TB) *FakeSysfs {
	t.Helper()
	s := NewFakeSysfs(t)
	cpus := func(node int) string { return numaCPUs(node, 8, 16) }
	nic, nvme := 0, 0
	// complex index → host bridge bus, NUMA node
	for c, cx := range []struct{ bus, node int }{{0x40, 3}, {0x00, 1}, {0xc0, 7}, {0x80, 5}} {
		b, node := cx.bus, cx.node
		host := s.HostBridge(0, uint8(b))
		gen4 := func(addr string, vendor, dev uint16, class uint32, pt int) PCIFunc {
			return PCIFunc{Addr: addr, Vendor: vendor, Device: dev, Class: class, NUMA: node, CPUs: cpus(node), Speed: "16.0 GT/s PCIe", Width: 16, PortType: pt}
		}
		rp := s.Add(host, gen4(bdf(b, 1, 1), 0x1022, 0x1483, 0x060400, PortRoot))
		usp1 := s.Add(rp, gen4(bdf(b+1, 0, 0), 0x1000, 0xc010, 0x060400, PortUpstream))
		for k, leafBus := range []int{b + 3, b + 7} {
			dsp1 := s.Add(usp1, gen4(bdf(b+2, k, 0), 0x1000, 0xc010, 0x060400, PortDownstream))
			usp2 := s.Add(dsp1, gen4(bdf(leafBus, 0, 0), 0x1000, 0xc010, 0x060400, PortUpstream))
			dspG := s.Add(usp2, gen4(bdf(leafBus+1, 0, 0), 0x1000, 0xc010, 0x060400, PortDownstream))
			dspN := s.Add(usp2, gen4(bdf(leafBus+1, 1, 0), 0x1000, 0xc010, 0x060400, PortDownstream))
			g := gen4(bdf(leafBus+2, 0, 0), 0x10de, 0x20b2, 0x030200, PortEndpoint)
			g.SubVendor, g.SubDevice, g.BARs, g.Driver = 0x10de, 0x134f, []uint64{0x1000000, 0, 0x1000000000, 0, 0x2000000}, "nvidia"
			s.Add(dspG, g)
			n := gen4(bdf(leafBus+3, 0, 0), 0x15b3, 0x101b, 0x020700, PortEndpoint)
			n.SubVendor, n.SubDevice, n.BARs, n.Driver = 0x15b3, 0x0007, []uint64{0x2000000}, "mlx5_core"
			n.Net, n.IB, n.IBRate = []string{fmt.Sprintf("ibp%ds0", leafBus+3)}, []string{fmt.Sprintf("mlx5_%d", nic)}, "200 Gb/sec (4X HDR)"
			nic++
			s.Add(dspN, n)
		}
		dsp3 := s.Add(usp1, gen4(bdf(b+2, 2, 0), 0x1000, 0xc010, 0x060400, PortDownstream))
		if c%2 == 0 {
			d := gen4(bdf(b+11, 0, 0), 0x144d, 0xa824, 0x010802, PortEndpoint)
			d.Width, d.BARs, d.Driver, d.NVMe = 4, []uint64{0x8000}, "nvme", []string{fmt.Sprintf("nvme%d", nvme)}
			nvme++
			s.Add(dsp3, d)
		} else {
			sw := gen4(bdf(b+11, 0, 0), 0x10de, 0x1af1, 0x068000, PortEndpoint)
			sw.Width, sw.BARs, sw.Driver = 2, []uint64{0x2000000}, "nvidia-nvswitch"
			s.Add(dsp3, sw)
		}
	}
	host := s.HostBridge(0, 0x20)
	rp := s.Add(host, PCIFunc{Addr: bdf(0x20, 3, 1), Vendor: 0x1022, Device: 0x1483, Class: 0x060400, NUMA: 2, CPUs: cpus(2), Speed: "16.0 GT/s PCIe", Width: 16, PortType: PortRoot})
	for fn := range 2 {
		n := PCIFunc{Addr: bdf(0x21, 0, fn), Vendor: 0x15b3, Device: 0x101b, SubVendor: 0x15b3, SubDevice: 0x0008, Class: 0x020000, NUMA: 2, CPUs: cpus(2), Speed: "16.0 GT/s PCIe", Width: 16, PortType: PortEndpoint, BARs: []uint64{0x2000000}, Driver: "mlx5_core"}
		n.Net, n.IB, n.NetSpeed = []string{fmt.Sprintf("enp33s0f%d", fn)}, []string{fmt.Sprintf("mlx5_%d", 8+fn)}, 200000
		s.Add(rp, n)
	}
	return s
}

// BlueFieldBox builds a single-socket EPYC box (one NUMA node) with one
// A100 PCIe GPU, a BlueField-2 DPU (its internal switch and two ConnectX-6
// Dx ports), an NVMe drive, an Intel X710 NIC and a Xilinx Alveo U50, each on
// its own root port of one host bridge.
func BlueFieldBox(t testing.TB) *FakeSysfs {
	t.Helper()
	s := NewFakeSysfs(t)
	const cpus = "0-31"
	host := s.HostBridge(0, 0)
	f := func(addr string, vendor, dev uint16, class uint32, speed string, width, pt int) PCIFunc {
		return PCIFunc{Addr: addr, Vendor: vendor, Device: dev, Class: class, NUMA: 0, CPUs: cpus, Speed: speed, Width: width, PortType: pt}
	}
	s.Add(host, f(bdf(0, 0, 0), 0x1022, 0x1480, 0x060000, "", 0, NoPCIe))
	rp := s.Add(host, f(bdf(0, 1, 1), 0x1022, 0x1483, 0x060400, "16.0 GT/s PCIe", 16, PortRoot))
	g := f(bdf(1, 0, 0), 0x10de, 0x20b5, 0x030200, "16.0 GT/s PCIe", 16, PortEndpoint)
	g.SubVendor, g.SubDevice, g.BARs, g.Driver = 0x10de, 0x1533, []uint64{0x1000000, 0, 0x2000000000, 0, 0x2000000}, "nvidia"
	s.Add(rp, g)
	rp = s.Add(host, f(bdf(0, 3, 1), 0x1022, 0x1483, 0x060400, "16.0 GT/s PCIe", 16, PortRoot))
	usp := s.Add(rp, f(bdf(2, 0, 0), 0x15b3, 0x1978, 0x060400, "16.0 GT/s PCIe", 16, PortUpstream))
	dsp := s.Add(usp, f(bdf(3, 0, 0), 0x15b3, 0x1978, 0x060400, "16.0 GT/s PCIe", 16, PortDownstream))
	for fn := range 2 {
		n := f(bdf(4, 0, fn), 0x15b3, 0xa2d6, 0x020000, "16.0 GT/s PCIe", 16, PortEndpoint)
		n.SubVendor, n.SubDevice, n.BARs, n.Driver = 0x15b3, 0x0061, []uint64{0x2000000}, "mlx5_core"
		n.Net, n.IB, n.NetSpeed = []string{fmt.Sprintf("enp4s0f%dnp%d", fn, fn)}, []string{fmt.Sprintf("mlx5_%d", fn)}, 100000
		s.Add(dsp, n)
	}
	rp = s.Add(host, f(bdf(0, 7, 1), 0x1022, 0x1483, 0x060400, "16.0 GT/s PCIe", 4, PortRoot))
	d := f(bdf(5, 0, 0), 0x144d, 0xa824, 0x010802, "16.0 GT/s PCIe", 4, PortEndpoint)
	d.BARs, d.Driver, d.NVMe = []uint64{0x8000}, "nvme", []string{"nvme0"}
	s.Add(rp, d)
	rp = s.Add(host, f(bdf(0, 8, 1), 0x1022, 0x1483, 0x060400, "8.0 GT/s PCIe", 8, PortRoot))
	x := f(bdf(6, 0, 0), 0x8086, 0x1572, 0x020000, "8.0 GT/s PCIe", 8, PortEndpoint)
	x.BARs, x.Driver, x.Net, x.NetSpeed = []uint64{0x800000}, "i40e", []string{"enp6s0f0"}, 10000
	s.Add(rp, x)
	rp = s.Add(host, f(bdf(0, 8, 2), 0x1022, 0x1483, 0x060400, "8.0 GT/s PCIe", 16, PortRoot))
	a := f(bdf(7, 0, 0), 0x10ee, 0x5020, 0x120000, "8.0 GT/s PCIe", 16, PortEndpoint)
	a.BARs, a.Driver = []uint64{0x2000000, 0, 0x20000}, "xclmgmt"
	s.Add(rp, a)
	return s
}
