package gpu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/u-root/u-root/pkg/pci"

	"github.com/kvloom/kvloom/internal/pciid"
)

// Kind is what a PCI function is, for topology purposes.
type Kind string

// The kinds kvloom places in its matrix, and the rest.
const (
	KindGPU    Kind = "gpu"
	KindNIC    Kind = "nic"
	KindFPGA   Kind = "fpga"
	KindNVMe   Kind = "nvme"
	KindBridge Kind = "bridge"
	KindOther  Kind = "other"
)

// blueFieldIDs are Mellanox/NVIDIA BlueField DPU functions (pci.ids): SoC,
// integrated ConnectX, VFs, management and the SoC's PCIe bridges.
var blueFieldIDs = []uint16{
	0xa2d0, 0xa2d1, 0xa2d2, 0xa2d3, 0xa2d4, 0xa2d5, 0xa2d6, 0xa2d7, 0xa2d8, 0xa2d9,
	0xa2da, 0xa2db, 0xa2dc, 0xa2dd, 0xa2de, 0xa2df,
	0xc2d2, 0xc2d3, 0xc2d4, 0xc2d5, 0xc2d6,
	0x1975, 0x1978, 0x197b,
}

// Classify names the kind of a function from its vendor, device and class
// code (the 24-bit "class" file: base class, subclass, programming interface).
func Classify(vendor, device uint16, class uint32) Kind {
	base, sub := class>>16, (class>>8)&0xff
	switch {
	case base == 0x06:
		return KindBridge
	case vendor == pciid.VendorNVIDIA && base == 0x03:
		return KindGPU
	case base == 0x01 && sub == 0x08:
		return KindNVMe
	case pciid.IsFPGA(vendor, device):
		return KindFPGA
	case base == 0x02: // network controller: Ethernet, InfiniBand, …
		return KindNIC
	case (vendor == pciid.VendorNetronome || vendor == pciid.VendorCorigine) && base == 0x0b:
		return KindNIC // NFP flow processors enumerate as "processor" on some firmware
	}
	return KindOther
}

// IsBlueField reports whether the function belongs to a BlueField DPU.
func IsBlueField(vendor, device uint16) bool {
	return vendor == pciid.VendorMellanox && slices.Contains(blueFieldIDs, device)
}

// Link is a PCIe link's negotiated and maximum speed and width.
type Link struct {
	Speed    LinkSpeed `json:"speed_mts"`
	Width    int       `json:"width"`
	MaxSpeed LinkSpeed `json:"max_speed_mts"`
	MaxWidth int       `json:"max_width"`
}

// String prints "16.0 GT/s x16" (Gen4 x16), or "" when unknown.
func (l Link) String() string {
	if l.Speed == 0 && l.Width == 0 {
		return ""
	}
	return fmt.Sprintf("%s x%d", strings.TrimSuffix(l.Speed.String(), " PCIe"), l.Width)
}

// Port is one bridge on a device's way up to its host bridge.
type Port struct {
	Addr string `json:"addr"`
	// Role is "root-port", "switch-upstream", "switch-downstream", or
	// "bridge" (a PCI/PCIe bridge of another type, or one whose type could
	// not be read).
	Role string `json:"role"`
	Link Link   `json:"link"`
}

// PCIDevice is one PCI function as sysfs shows it.
type PCIDevice struct {
	Addr       string `json:"addr"` // sysfs form, "0000:3b:00.0"
	Vendor     uint16 `json:"vendor"`
	Device     uint16 `json:"device"`
	SubVendor  uint16 `json:"subsystem_vendor,omitempty"`
	SubDevice  uint16 `json:"subsystem_device,omitempty"`
	Class      uint32 `json:"class"`
	Kind       Kind   `json:"kind"`
	VendorName string `json:"vendor_name"`
	DeviceName string `json:"device_name"`
	BlueField  bool   `json:"bluefield,omitempty"`
	Driver     string `json:"driver,omitempty"`
	NUMANode   int    `json:"numa_node"`
	LocalCPUs  CPUSet `json:"local_cpus"`
	Link       Link   `json:"link"`
	// PortType is the PCIe port type from config space (Port* constants),
	// -1 when the function has no PCI Express capability or it was unreadable.
	PortType int `json:"port_type"`
	// SysfsPath is the resolved device directory relative to the sysfs root,
	// e.g. "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0".
	SysfsPath string `json:"sysfs_path"`
	// HostBridge is the root complex the function hangs off ("pci0000:3a").
	HostBridge string `json:"host_bridge"`
	// Path lists the bridges between the host bridge and the function, root
	// port first.
	Path       []Port   `json:"path"`
	Interfaces []string `json:"interfaces,omitempty"` // network interfaces (net/)
	IBDevices  []string `json:"ib_devices,omitempty"` // RDMA devices (infiniband/)
	NVMe       []string `json:"nvme,omitempty"`       // NVMe controllers (nvme/)
	// LineRateGbps is a NIC's line rate: the InfiniBand ports' rate, or the
	// network interfaces' speed; zero when the kernel does not say (link
	// down, no driver).
	LineRateGbps float64    `json:"line_rate_gbps,omitempty"`
	Resources    []Resource `json:"-"`
}

// ID is "vendor:device" in lspci -n form.
func (d *PCIDevice) ID() string { return fmt.Sprintf("%04x:%04x", d.Vendor, d.Device) }

// components are the resolved path's elements below "devices/".
func (d *PCIDevice) components() []string {
	return strings.Split(strings.TrimPrefix(d.SysfsPath, "devices/"), "/")
}

// Label is the most useful short name: an RDMA device, a network interface
// or an NVMe controller if there is one.
func (d *PCIDevice) Label() string {
	switch {
	case len(d.IBDevices) > 0:
		return d.IBDevices[0]
	case len(d.Interfaces) > 0:
		return d.Interfaces[0]
	case len(d.NVMe) > 0:
		return d.NVMe[0]
	}
	return ""
}

// ScanPCI reads every PCI function under sysfsRoot ("/sys" on a host, a fake
// tree in tests). u-root's pkg/pci reads the identity files (its OnePCI takes
// any directory; its bus reader is fixed to /sys, so we list the bus
// ourselves). Functions that cannot be read are left out and named in the
// returned warnings; only an unreadable bus is an error.
func ScanPCI(sysfsRoot string) ([]PCIDevice, []string, error) {
	if sysfsRoot == "" {
		sysfsRoot = "/sys"
	}
	busDir := filepath.Join(sysfsRoot, "bus", "pci", "devices")
	entries, err := os.ReadDir(busDir)
	if err != nil {
		return nil, nil, fmt.Errorf("list PCI functions in %s: %w", busDir, err)
	}
	var devs []PCIDevice
	var warnings []string
	for _, e := range entries {
		d, err := readFunction(sysfsRoot, filepath.Join(busDir, e.Name()))
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("skip PCI function %s: %v", e.Name(), err))
			continue
		}
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b PCIDevice) int { return strings.Compare(a.Addr, b.Addr) })
	byAddr := make(map[string]*PCIDevice, len(devs))
	for i := range devs {
		byAddr[devs[i].Addr] = &devs[i]
	}
	for i := range devs {
		devs[i].Path = bridgePath(&devs[i], byAddr)
	}
	return devs, warnings, nil
}

func readFunction(root, link string) (PCIDevice, error) {
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return PCIDevice{}, fmt.Errorf("resolve %s: %w", link, err)
	}
	rel, err := filepath.Rel(root, dir)
	if err != nil || !strings.HasPrefix(rel, "devices"+string(filepath.Separator)) {
		return PCIDevice{}, fmt.Errorf("%s resolves to %s, outside %s/devices", link, dir, root)
	}
	p, err := pci.OnePCI(dir)
	if err != nil {
		return PCIDevice{}, fmt.Errorf("read identity: %w", err)
	}
	addr, err := pciid.Normalize(filepath.Base(dir))
	if err != nil {
		return PCIDevice{}, err
	}
	d := PCIDevice{
		Addr:      addr,
		Vendor:    p.Vendor,
		Device:    p.Device,
		Class:     p.Class,
		Kind:      Classify(p.Vendor, p.Device, p.Class),
		BlueField: IsBlueField(p.Vendor, p.Device),
		NUMANode:  -1,
		PortType:  -1,
		SysfsPath: filepath.ToSlash(rel),
	}
	d.VendorName, d.DeviceName = pci.Lookup(pci.IDs, p.Vendor, p.Device)
	if d.Resources, err = ParseResource(p.Resource); err != nil {
		return PCIDevice{}, err
	}
	for _, c := range d.components() {
		if strings.HasPrefix(c, "pci") {
			d.HostBridge = c
			break
		}
	}
	if d.HostBridge == "" {
		return PCIDevice{}, fmt.Errorf("resolved path %s has no pciDDDD:BB host bridge", rel)
	}
	if v, ok, err := readOptional(dir, "subsystem_vendor", func(s string) (uint64, error) { return parseHexID("subsystem_vendor", s, 16) }); err != nil {
		return PCIDevice{}, err
	} else if ok {
		d.SubVendor = uint16(v)
	}
	if v, ok, err := readOptional(dir, "subsystem_device", func(s string) (uint64, error) { return parseHexID("subsystem_device", s, 16) }); err != nil {
		return PCIDevice{}, err
	} else if ok {
		d.SubDevice = uint16(v)
	}
	if n, ok, err := readOptional(dir, "numa_node", ParseNUMANode); err != nil {
		return PCIDevice{}, err
	} else if ok {
		d.NUMANode = n
	}
	if c, ok, err := readOptional(dir, "local_cpulist", ParseCPUList); err != nil {
		return PCIDevice{}, err
	} else if ok {
		d.LocalCPUs = c
	}
	if d.Link, err = readLink(dir); err != nil {
		return PCIDevice{}, err
	}
	// Config space gives the port type; it also fills the link where the
	// kernel has no link files (old kernels). Unreadable or short config
	// only costs us the port type.
	if cfg, err := os.ReadFile(filepath.Join(dir, "config")); err == nil {
		if c, found, err := ParsePCIeCap(cfg); err == nil && found {
			d.PortType = c.PortType
			if d.Link.Speed == 0 && d.Link.Width == 0 {
				d.Link = Link{Speed: c.LinkSpeed, Width: c.LinkWidth, MaxSpeed: c.MaxSpeed, MaxWidth: c.MaxWidth}
			}
		}
	}
	if target, err := os.Readlink(filepath.Join(dir, "driver")); err == nil {
		d.Driver = filepath.Base(target)
	}
	d.Interfaces = listNames(filepath.Join(dir, "net"))
	// virtio-net puts its interface one level down, under virtioN/net.
	if nested, _ := filepath.Glob(filepath.Join(dir, "virtio*", "net", "*")); len(nested) > 0 {
		for _, n := range nested {
			d.Interfaces = append(d.Interfaces, filepath.Base(n))
		}
	}
	d.IBDevices = listNames(filepath.Join(dir, "infiniband"))
	d.NVMe = listNames(filepath.Join(dir, "nvme"))
	if d.LineRateGbps, err = lineRate(dir, d.Interfaces, d.IBDevices); err != nil {
		return PCIDevice{}, err
	}
	return d, nil
}

// lineRate adds up the RDMA ports' rates, or else the network interfaces'
// speeds.
func lineRate(dir string, ifaces, ibdevs []string) (float64, error) {
	total := 0.0
	for _, ib := range ibdevs {
		ports := filepath.Join(dir, "infiniband", ib, "ports")
		for _, port := range listNames(ports) {
			r, _, err := readOptional(filepath.Join(ports, port), "rate", ParseIBRate)
			if err != nil {
				return 0, fmt.Errorf("%s port %s: %w", ib, port, err)
			}
			total += r
		}
	}
	if total > 0 {
		return total, nil
	}
	for _, ifc := range ifaces {
		// Reading speed fails with EINVAL while the link is down: unknown.
		b, err := os.ReadFile(filepath.Join(dir, "net", ifc, "speed"))
		if err != nil {
			continue
		}
		mbps, err := ParseNetSpeed(string(b))
		if err != nil {
			return 0, fmt.Errorf("%s speed: %w", ifc, err)
		}
		total += float64(mbps) / 1000
	}
	return total, nil
}

func readLink(dir string) (Link, error) {
	var l Link
	var err error
	if l.Speed, _, err = readOptional(dir, "current_link_speed", ParseLinkSpeed); err != nil {
		return l, err
	}
	if l.Width, _, err = readOptional(dir, "current_link_width", ParseLinkWidth); err != nil {
		return l, err
	}
	if l.MaxSpeed, _, err = readOptional(dir, "max_link_speed", ParseLinkSpeed); err != nil {
		return l, err
	}
	if l.MaxWidth, _, err = readOptional(dir, "max_link_width", ParseLinkWidth); err != nil {
		return l, err
	}
	return l, nil
}

// readOptional reads and parses dir/name; a missing file is not an error
// (ok is false). Kernels differ in which files they provide.
func readOptional[T any](dir, name string, parse func(string) (T, error)) (v T, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("read %s: %w", name, err)
	}
	v, err = parse(string(b))
	if err != nil {
		return v, false, fmt.Errorf("%s: %w", name, err)
	}
	return v, true, nil
}

func listNames(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// bridgePath names the bridges between d's host bridge and d. Port types
// come from config space; where it was unreadable the role is inferred the
// way PCIe builds trees: the first bridge below a host bridge is a root
// port, and below it switches alternate upstream and downstream ports.
func bridgePath(d *PCIDevice, byAddr map[string]*PCIDevice) []Port {
	comps := d.components()
	var ports []Port
	below := false // true once we have passed d's host bridge
	for _, c := range comps[:len(comps)-1] {
		if c == d.HostBridge {
			below = true
			continue
		}
		if !below {
			continue
		}
		addr, err := pciid.Normalize(c)
		if err != nil {
			continue // a nested host bridge (VMD) or a non-PCI node
		}
		p := Port{Addr: addr, Role: "bridge"}
		if b, ok := byAddr[addr]; ok {
			p.Link = b.Link
			switch b.PortType {
			case PortRoot:
				p.Role = "root-port"
			case PortUpstream:
				p.Role = "switch-upstream"
			case PortDownstream:
				p.Role = "switch-downstream"
			case -1:
				p.Role = inferRole(len(ports))
			}
		} else {
			p.Role = inferRole(len(ports))
		}
		ports = append(ports, p)
	}
	return ports
}

func inferRole(depth int) string {
	switch {
	case depth == 0:
		return "root-port"
	case depth%2 == 1:
		return "switch-upstream"
	default:
		return "switch-downstream"
	}
}
