package topology

// Version is the topology file format version this package reads and writes.
const Version = 1

// Topology is one topology file: hosts with their PCIe trees, the network
// switches between them, and the links that join NICs and switches.
// The format is described in docs/topology.md.
type Topology struct {
	// Version must be 1.
	Version int `yaml:"version"`
	// Name labels reports and plots; optional.
	Name string `yaml:"name,omitempty"`
	// GPUModels adds GPU models to the built-in presets (GPUPresetNames).
	// A name may not shadow a preset.
	GPUModels []GPUSpec `yaml:"gpu_models,omitempty"`
	Hosts     []Host    `yaml:"hosts"`
	Switches  []Switch  `yaml:"switches,omitempty"`
	Links     []Link    `yaml:"links,omitempty"`
}

// Role says what a host is for.
type Role string

// Host roles. The zero value means RoleCompute.
const (
	RoleCompute Role = "compute" // runs inference engines on its GPUs
	RoleStorage Role = "storage" // serves KV from its tiers to the others
)

// Host is one machine.
type Host struct {
	// Name is unique in the file and may not contain '/'.
	Name string `yaml:"name"`
	Role Role   `yaml:"role,omitempty"`
	// NUMA lists the host's NUMA nodes; optional. When given, every numa
	// number used below must appear here.
	NUMA []NUMANode `yaml:"numa,omitempty"`
	// SMP is the interconnect between sockets (UPI, Infinity Fabric) that
	// SYS paths cross; zero means the simulator's default.
	SMP LinkParams `yaml:"smp,omitempty"`
	// PCIe lists the bridges of the PCIe tree: host bridges (root
	// complexes), root ports, switches and other bridges. Devices hang off
	// them through their Parent.
	PCIe  []Bridge `yaml:"pcie,omitempty"`
	GPUs  []GPU    `yaml:"gpus,omitempty"`
	NICs  []NIC    `yaml:"nics,omitempty"`
	NVMe  []NVMe   `yaml:"nvme,omitempty"`
	Tiers []Tier   `yaml:"tiers,omitempty"`
}

// IsStorage reports whether the host is a storage node.
func (h *Host) IsStorage() bool { return h.Role == RoleStorage }

// NUMANode is one NUMA node of a host.
type NUMANode struct {
	Node   int `yaml:"node"`
	Socket int `yaml:"socket"`
	// CPUs is the kernel's cpulist form, e.g. "0-55,112-167"; informational.
	CPUs   string `yaml:"cpus,omitempty"`
	Memory Size   `yaml:"memory,omitempty"`
	// MemoryBandwidth is the node's DRAM bandwidth; zero means the
	// simulator's default.
	MemoryBandwidth Bandwidth `yaml:"memory_bandwidth,omitempty"`
}

// BridgeKind is the role of a PCIe bridge in the tree.
type BridgeKind string

// Bridge kinds. A switch is written as one bridge (its upstream port); its
// downstream ports are not listed, which makes two devices behind one switch
// PIX, as nvidia-smi reports them.
const (
	BridgeHost     BridgeKind = "host-bridge" // a root complex, sysfs "pci0000:3a"
	BridgeRootPort BridgeKind = "root-port"
	BridgeSwitch   BridgeKind = "switch" // a PCIe switch (PLX/Broadcom PEX, …)
	BridgeOther    BridgeKind = "bridge"
)

// Bridge is one PCIe bridge.
type Bridge struct {
	// Name is unique within the host among bridges and devices.
	Name string     `yaml:"name"`
	Kind BridgeKind `yaml:"kind"`
	// PCI is the bridge's address: "0000:3a:00.0", or "pci0000:3a" for a
	// host bridge. Optional for hand-written files.
	PCI string `yaml:"pci,omitempty"`
	// Parent names the bridge above; empty only for a host bridge.
	Parent string `yaml:"parent,omitempty"`
	// NUMA is the node a host bridge belongs to; other bridges inherit
	// their host bridge's.
	NUMA int `yaml:"numa,omitempty"`
	// Gen and Width describe the link to the parent (PCIe generation 1–6,
	// lanes 1–32); zero means the same as the devices below it, or gen 4 ×16.
	Gen   int `yaml:"gen,omitempty"`
	Width int `yaml:"width,omitempty"`
}

// Attach is where a device sits in the PCIe tree.
type Attach struct {
	// PCI is the device's bus address, "0000:3b:00.0"; unique within the host.
	PCI string `yaml:"pci,omitempty"`
	// Parent names the bridge the device hangs off. Empty means directly on
	// the root complex of its NUMA node.
	Parent string `yaml:"parent,omitempty"`
	// NUMA is the device's node. Under a host bridge it must equal the host
	// bridge's (or be left out); -1 is "unknown", as sysfs writes it.
	NUMA int `yaml:"numa,omitempty"`
	// Gen and Width of the device's own link; zero means the GPU model's
	// generation (or 4) and ×16.
	Gen   int `yaml:"gen,omitempty"`
	Width int `yaml:"width,omitempty"`
}

// GPU is one GPU.
type GPU struct {
	Name string `yaml:"name"`
	// Model is a preset (GPUPresetNames) or a name from gpu_models.
	Model  string `yaml:"model"`
	Attach `yaml:",inline"`
}

// NICKind says what a NIC can do.
type NICKind string

// NIC kinds. Every kind but NICPlain can run kvloom's matcher (an
// accelerator); a plain NIC only moves bytes.
const (
	NICPlain NICKind = "nic"      // ConnectX-class RDMA/Ethernet NIC
	SmartNIC NICKind = "smartnic" // programmable NIC (XDP offload, …)
	DPU      NICKind = "dpu"      // BlueField-class: Arm cores + NIC
	FPGA     NICKind = "fpga"     // FPGA card with network ports (Alveo, …)
)

// IsAccelerator reports whether the NIC can run kvloom's matching logic.
func (k NICKind) IsAccelerator() bool { return k == SmartNIC || k == DPU || k == FPGA }

// Fabric is the kind of network a NIC or link speaks.
type Fabric string

// Fabrics. Per-message overheads differ by fabric (docs/sim-model.md).
const (
	Ethernet   Fabric = "ethernet" // RoCE or TCP over Ethernet
	InfiniBand Fabric = "infiniband"
)

// NIC is one network adapter or network-attached accelerator.
type NIC struct {
	Name   string  `yaml:"name"`
	Kind   NICKind `yaml:"kind"`
	Model  string  `yaml:"model,omitempty"`
	Attach `yaml:",inline"`
	// Bandwidth is the line rate of all ports together.
	Bandwidth Bandwidth `yaml:"bandwidth"`
	Fabric    Fabric    `yaml:"fabric,omitempty"`
	// Accel overrides the accelerator pipeline's defaults; only for
	// accelerator kinds.
	Accel *Accel `yaml:"accel,omitempty"`
}

// Accel holds accelerator pipeline parameters; zero fields take the
// simulator's defaults (sim.DefaultPipeline).
type Accel struct {
	ClockMHz     float64 `yaml:"clock_mhz,omitempty"`
	Lanes        int     `yaml:"lanes,omitempty"` // tokens hashed per cycle
	TableEntries int     `yaml:"table_entries,omitempty"`
	LookupCycles int     `yaml:"lookup_cycles,omitempty"`
	QueueDepth   int     `yaml:"queue_depth,omitempty"`
}

// NVMe is one NVMe drive.
type NVMe struct {
	Name     string `yaml:"name"`
	Model    string `yaml:"model,omitempty"`
	Attach   `yaml:",inline"`
	Capacity Size      `yaml:"capacity,omitempty"`
	Read     Bandwidth `yaml:"read,omitempty"`
	Write    Bandwidth `yaml:"write,omitempty"`
}

// TierKind names a storage tier.
type TierKind string

// Tier kinds.
const (
	TierDRAM  TierKind = "dram"  // host memory
	TierNVMe  TierKind = "nvme"  // local flash, through a file system
	TierRedis TierKind = "redis" // a Redis server, over TCP
)

// Tier is storage a host offers to KV: its own on a compute host, the
// cluster's on a storage host.
type Tier struct {
	Kind     TierKind `yaml:"kind"`
	Capacity Size     `yaml:"capacity"`
	// Read and Write bandwidth; zero means the simulator's default for the
	// kind (or the NVMe drive's own figures).
	Read    Bandwidth `yaml:"read,omitempty"`
	Write   Bandwidth `yaml:"write,omitempty"`
	Latency Duration  `yaml:"latency,omitempty"`
	// Device names the host's NVMe drive backing an nvme tier.
	Device string `yaml:"device,omitempty"`
	// Path is the directory of an nvme tier, for the daemon's config.
	Path string `yaml:"path,omitempty"`
	// Address is the URL of a redis tier ("redis://host:6379").
	Address string `yaml:"address,omitempty"`
}

// Switch is a network switch.
type Switch struct {
	// Name is unique among hosts and switches.
	Name   string `yaml:"name"`
	Fabric Fabric `yaml:"fabric,omitempty"`
	// Latency is the port-to-port forwarding latency; zero means the
	// simulator's default.
	Latency Duration `yaml:"latency,omitempty"`
}

// Link is a network cable between two endpoints. An endpoint is a switch
// name or "host/nic".
type Link struct {
	A string `yaml:"a"`
	B string `yaml:"b"`
	// Bandwidth per direction; zero means the slower endpoint NIC's line
	// rate.
	Bandwidth Bandwidth `yaml:"bandwidth,omitempty"`
	Latency   Duration  `yaml:"latency,omitempty"`
	// PerMessage is the fixed cost of each message (RDMA work request or
	// TCP send) on this link; zero means the fabric's default.
	PerMessage Duration `yaml:"per_message,omitempty"`
	Fabric     Fabric   `yaml:"fabric,omitempty"`
}

// LinkParams describes an internal interconnect.
type LinkParams struct {
	Bandwidth  Bandwidth `yaml:"bandwidth,omitempty"`
	Latency    Duration  `yaml:"latency,omitempty"`
	PerMessage Duration  `yaml:"per_message,omitempty"`
}

// IsZero reports whether nothing was given.
func (p LinkParams) IsZero() bool { return p == LinkParams{} }

// PCIeBandwidth is the raw per-direction bandwidth of a PCIe link after
// line encoding (8b/10b for gen 1–2, 128b/130b for gen 3–5; gen 6 FLIT mode
// counted at its 242/256 efficiency). Protocol overheads (TLP headers, flow
// control) are the simulator's concern. It returns the zero Bandwidth for an
// unknown generation or width.
func PCIeBandwidth(gen, width int) Bandwidth {
	var perLane float64 // GB/s per lane, one direction
	switch gen {
	case 1:
		perLane = 2.5 * 8 / 10 / 8
	case 2:
		perLane = 5.0 * 8 / 10 / 8
	case 3:
		perLane = 8.0 * 128 / 130 / 8
	case 4:
		perLane = 16.0 * 128 / 130 / 8
	case 5:
		perLane = 32.0 * 128 / 130 / 8
	case 6:
		perLane = 64.0 * 242 / 256 / 8
	default:
		return Bandwidth{}
	}
	if width <= 0 || width > 32 {
		return Bandwidth{}
	}
	return GBytePerSec(perLane * float64(width))
}

// Host returns the host named name.
func (t *Topology) Host(name string) (*Host, bool) {
	for i := range t.Hosts {
		if t.Hosts[i].Name == name {
			return &t.Hosts[i], true
		}
	}
	return nil, false
}

// Bridge returns the bridge named name.
func (h *Host) Bridge(name string) (*Bridge, bool) {
	for i := range h.PCIe {
		if h.PCIe[i].Name == name {
			return &h.PCIe[i], true
		}
	}
	return nil, false
}

// NIC returns the NIC named name.
func (h *Host) NIC(name string) (*NIC, bool) {
	for i := range h.NICs {
		if h.NICs[i].Name == name {
			return &h.NICs[i], true
		}
	}
	return nil, false
}

// GPU returns the GPU named name.
func (h *Host) GPU(name string) (*GPU, bool) {
	for i := range h.GPUs {
		if h.GPUs[i].Name == name {
			return &h.GPUs[i], true
		}
	}
	return nil, false
}

// Device returns the attachment of any device (GPU, NIC or NVMe) by name.
func (h *Host) Device(name string) (Attach, bool) {
	for _, g := range h.GPUs {
		if g.Name == name {
			return g.Attach, true
		}
	}
	for _, n := range h.NICs {
		if n.Name == name {
			return n.Attach, true
		}
	}
	for _, d := range h.NVMe {
		if d.Name == name {
			return d.Attach, true
		}
	}
	return Attach{}, false
}
