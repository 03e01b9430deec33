package gpu

import (
	"fmt"
	"log/slog"
	"math/bits"
	"slices"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kvloom/kvloom/internal/pciid"
)

// NVMLLibrary is the part of go-nvml's nvml.Interface that discovery uses.
// nvml.New() satisfies it on a real host, and go-nvml's mock servers
// (pkg/nvml/mock/dgxh100, …) in tests. Nothing vendor-typed leaves this
// file: what NVML says is turned into GPU and GPUPair here.
type NVMLLibrary interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
}

var _ NVMLLibrary = nvml.Interface(nil)

// GPU is one NVIDIA GPU as kvloom knows it.
type GPU struct {
	Index       int    `json:"index"` // NVML index, or order among sysfs GPUs
	Name        string `json:"name"`
	UUID        string `json:"uuid,omitempty"`
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	Addr        string `json:"addr"` // sysfs form
	// NUMANode is the GPU's NUMA affinity, what nvidia-smi topo -m prints
	// as "NUMA Affinity": the lowest node of NVML's memory affinity
	// (nvmlDeviceGetMemoryAffinity, NODE scope) where NVML answers, else
	// the PCI function's numa_node from sysfs, else -1 (unknown).
	// NUMANodes is NVML's whole set when it names more than one node, and
	// NUMASource says which of the two answered ("nvml", "sysfs").
	NUMANode   int    `json:"numa_node"`
	NUMANodes  []int  `json:"numa_nodes,omitempty"`
	NUMASource string `json:"numa_source,omitempty"`
	// GPUNUMAID is NVML's nvmlDeviceGetNumaNodeId: the NUMA node of the
	// GPU's own memory on cache-coherent platforms (Grace Hopper and
	// later), nvidia-smi's "GPU NUMA ID"; -1 elsewhere. It is not the
	// GPU's affinity.
	GPUNUMAID int `json:"gpu_numa_id"`
	// NVLinks are the GPU's active NVLinks and where each one goes.
	NVLinks []NVLink `json:"nvlinks,omitempty"`
	// Source says who vouched for the GPU: "nvml", or "sysfs" where NVML
	// is absent (then Name comes from pci.ids and UUID and memory are unknown).
	Source string `json:"source"`
}

// NVLink is one active NVLink of a GPU.
type NVLink struct {
	Link       int    `json:"link"`
	RemoteAddr string `json:"remote_addr"`           // sysfs form
	RemoteKind string `json:"remote_kind,omitempty"` // "gpu", "switch", "cpu" or ""
}

// GPUPair is what NVML says about two GPUs.
type GPUPair struct {
	A, B int // GPU indexes, A < B
	// Common is NVML's GetTopologyCommonAncestor, as a Level.
	Common Level
	// P2PRead and P2PNVLink are NVML's GetP2PStatus for the READ and
	// NVLINK capabilities ("OK", "NOT_SUPPORTED", …).
	P2PRead, P2PNVLink string
}

// NVMLStatus says whether NVML answered, and if not why.
type NVMLStatus struct {
	Available     bool   `json:"available"`
	DriverVersion string `json:"driver_version,omitempty"`
	Reason        string `json:"reason,omitempty"`
}

// nvmlReport is everything discovery takes from NVML.
type nvmlReport struct {
	status   NVMLStatus
	gpus     []GPU
	pairs    []GPUPair
	warnings []string
}

// initFailure names NVML's Init results without calling into the library:
// once a load succeeded go-nvml routes Return.Error through nvmlErrorString,
// and after a failed Init we make no NVML call at all.
func initFailure(r nvml.Return) string {
	names := map[nvml.Return]string{
		nvml.ERROR_LIBRARY_NOT_FOUND:       "libnvidia-ml.so.1 not found (ERROR_LIBRARY_NOT_FOUND)",
		nvml.ERROR_DRIVER_NOT_LOADED:       "NVIDIA driver not loaded (ERROR_DRIVER_NOT_LOADED)",
		nvml.ERROR_NO_PERMISSION:           "no permission to talk to the driver (ERROR_NO_PERMISSION)",
		nvml.ERROR_LIB_RM_VERSION_MISMATCH: "NVML and kernel driver versions differ (ERROR_LIB_RM_VERSION_MISMATCH)",
		nvml.ERROR_FUNCTION_NOT_FOUND:      "libnvidia-ml lacks a required function (ERROR_FUNCTION_NOT_FOUND)",
		nvml.ERROR_UNINITIALIZED:           "ERROR_UNINITIALIZED",
		nvml.ERROR_UNKNOWN:                 "ERROR_UNKNOWN",
	}
	if n, ok := names[r]; ok {
		return n
	}
	return fmt.Sprintf("NVML init returned %d", int32(r))
}

// nvmlHas reports whether the loaded NVML library exports sym. go-nvml
// calls into the library through symbols resolved at call time, so calling
// one an old driver lacks would abort the process; libraries that cannot
// be asked (a test double without Extensions) are taken to have it.
func nvmlHas(lib NVMLLibrary, sym string) bool {
	x, ok := lib.(interface{ Extensions() nvml.ExtendedInterface })
	if !ok {
		return true
	}
	return x.Extensions().LookupSymbol(sym) == nil
}

// nvmlCaps are the optional NVML functions discovery uses.
type nvmlCaps struct {
	memoryAffinity, numaNodeID bool
}

// queryNVML asks NVML for every GPU and every GPU pair. A failed Init ends
// the conversation: the error wraps ErrNoNVML and no other NVML function is
// called (go-nvml's symbols are unresolved then, and calling one crashes).
// Per-device failures become warnings: one odd GPU does not hide the rest.
func queryNVML(lib NVMLLibrary, log *slog.Logger) (rep nvmlReport, err error) {
	if r := lib.Init(); r != nvml.SUCCESS {
		reason := initFailure(r)
		rep.status.Reason = reason
		return rep, fmt.Errorf("init NVML: %s: %w", reason, ErrNoNVML)
	}
	defer func() {
		if r := lib.Shutdown(); r != nvml.SUCCESS {
			log.Warn("nvml_shutdown_failed", "error", r.Error())
		}
	}()
	rep.status.Available = true
	if v, r := lib.SystemGetDriverVersion(); r == nvml.SUCCESS {
		rep.status.DriverVersion = v
	}
	n, r := lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		rep.status.Available = false
		rep.status.Reason = "DeviceGetCount: " + r.Error()
		return rep, fmt.Errorf("count GPUs: %s: %w", r.Error(), ErrNoNVML)
	}
	caps := nvmlCaps{
		memoryAffinity: nvmlHas(lib, "nvmlDeviceGetMemoryAffinity"),
		numaNodeID:     nvmlHas(lib, "nvmlDeviceGetNumaNodeId"),
	}
	var handles []nvml.Device
	for i := range n {
		dev, r := lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			rep.warnings = append(rep.warnings, fmt.Sprintf("NVML GPU %d: get handle: %s", i, r.Error()))
			continue
		}
		g, warns := describeGPU(i, dev, caps)
		rep.warnings = append(rep.warnings, warns...)
		if g.Addr == "" {
			continue // without a bus id we cannot place it; describeGPU said why
		}
		rep.gpus = append(rep.gpus, g)
		handles = append(handles, dev)
	}
	for i := range handles {
		for j := i + 1; j < len(handles); j++ {
			p, warns := describePair(rep.gpus[i].Index, rep.gpus[j].Index, handles[i], handles[j])
			rep.warnings = append(rep.warnings, warns...)
			rep.pairs = append(rep.pairs, p)
		}
	}
	return rep, nil
}

func describeGPU(i int, dev nvml.Device, caps nvmlCaps) (GPU, []string) {
	var warns []string
	warn := func(what string, r nvml.Return) {
		warns = append(warns, fmt.Sprintf("NVML GPU %d: %s: %s", i, what, r.Error()))
	}
	g := GPU{Index: i, NUMANode: -1, GPUNUMAID: -1, Source: "nvml"}
	if idx, r := dev.GetIndex(); r == nvml.SUCCESS {
		g.Index = idx
	}
	if name, r := dev.GetName(); r == nvml.SUCCESS {
		g.Name = name
	} else {
		warn("name", r)
	}
	if uuid, r := dev.GetUUID(); r == nvml.SUCCESS {
		g.UUID = uuid
	} else {
		warn("UUID", r)
	}
	if mem, r := dev.GetMemoryInfo(); r == nvml.SUCCESS {
		g.MemoryBytes = mem.Total
	} else {
		warn("memory", r)
	}
	pi, r := dev.GetPciInfo()
	if r != nvml.SUCCESS {
		warn("PCI info", r)
		return GPU{}, warns
	}
	addr, err := pciid.Normalize(busIDString(pi.BusId[:]))
	if err != nil {
		warns = append(warns, fmt.Sprintf("NVML GPU %d: %v", i, err))
		return GPU{}, warns
	}
	g.Addr = addr
	// NUMA affinity: NVML knows it where the firmware does not tell the
	// kernel (sysfs numa_node -1 in many VMs); where NVML does not answer,
	// placeNVMLGPUs takes sysfs's.
	if caps.memoryAffinity {
		if nodes := memoryAffinity(dev); len(nodes) > 0 {
			g.NUMANode, g.NUMASource = nodes[0], "nvml"
			if len(nodes) > 1 {
				g.NUMANodes = nodes
			}
		}
	}
	if caps.numaNodeID {
		if id, r := dev.GetNumaNodeId(); r == nvml.SUCCESS {
			g.GPUNUMAID = id
		}
	}
	g.NVLinks = nvLinks(dev)
	return g, warns
}

// maxNUMANodes bounds the node set asked of NVML; Linux's default
// CONFIG_NODES_SHIFT on x86-64 allows 64.
const maxNUMANodes = 1024

// memoryAffinity is NVML's memory affinity of the device at NUMA node
// scope, the nodes in ascending order; nil when NVML does not answer or
// names none.
func memoryAffinity(dev nvml.Device) []int {
	set, r := dev.GetMemoryAffinity(maxNUMANodes, nvml.AFFINITY_SCOPE_NODE)
	if r != nvml.SUCCESS {
		return nil
	}
	var nodes []int
	for w, word := range set {
		for word != 0 {
			b := bits.TrailingZeros(word)
			nodes = append(nodes, w*bits.UintSize+b)
			word &^= 1 << b
		}
	}
	return nodes
}

// nvLinks lists the active links. NVML answers INVALID_ARGUMENT past the
// GPU's last link and NOT_SUPPORTED on GPUs without NVLink.
func nvLinks(dev nvml.Device) []NVLink {
	var links []NVLink
	for l := range nvml.NVLINK_MAX_LINKS {
		st, r := dev.GetNvLinkState(l)
		if r == nvml.ERROR_INVALID_ARGUMENT || r == nvml.ERROR_NOT_SUPPORTED {
			break
		}
		if r != nvml.SUCCESS || st != nvml.FEATURE_ENABLED {
			continue
		}
		link := NVLink{Link: l}
		if pi, r := dev.GetNvLinkRemotePciInfo(l); r == nvml.SUCCESS {
			link.RemoteAddr, _ = pciid.Normalize(busIDString(pi.BusId[:]))
		}
		if t, r := dev.GetNvLinkRemoteDeviceType(l); r == nvml.SUCCESS {
			switch t {
			case nvml.NVLINK_DEVICE_TYPE_GPU:
				link.RemoteKind = "gpu"
			case nvml.NVLINK_DEVICE_TYPE_SWITCH:
				link.RemoteKind = "switch"
			case nvml.NVLINK_DEVICE_TYPE_IBMNPU:
				link.RemoteKind = "cpu"
			}
		}
		links = append(links, link)
	}
	return links
}

func describePair(a, b int, da, db nvml.Device) (GPUPair, []string) {
	var warns []string
	p := GPUPair{A: a, B: b, Common: -1}
	if lvl, r := da.GetTopologyCommonAncestor(db); r == nvml.SUCCESS {
		l, err := levelFromNVML(lvl)
		if err != nil {
			warns = append(warns, fmt.Sprintf("NVML GPU %d/%d: %v", a, b, err))
		} else {
			p.Common = l
		}
	} else if r != nvml.ERROR_NOT_SUPPORTED {
		warns = append(warns, fmt.Sprintf("NVML GPU %d/%d: common ancestor: %s", a, b, r.Error()))
	}
	p.P2PRead = p2pStatus(da, db, nvml.P2P_CAPS_INDEX_READ)
	p.P2PNVLink = p2pStatus(da, db, nvml.P2P_CAPS_INDEX_NVLINK)
	return p, warns
}

func p2pStatus(da, db nvml.Device, idx nvml.GpuP2PCapsIndex) string {
	st, r := da.GetP2PStatus(db, idx)
	if r != nvml.SUCCESS {
		return "UNKNOWN"
	}
	switch st {
	case nvml.P2P_STATUS_OK:
		return "OK"
	case nvml.P2P_STATUS_CHIPSET_NOT_SUPPORTED:
		return "CHIPSET_NOT_SUPPORTED"
	case nvml.P2P_STATUS_GPU_NOT_SUPPORTED:
		return "GPU_NOT_SUPPORTED"
	case nvml.P2P_STATUS_IOH_TOPOLOGY_NOT_SUPPORTED:
		return "IOH_TOPOLOGY_NOT_SUPPORTED"
	case nvml.P2P_STATUS_DISABLED_BY_REGKEY:
		return "DISABLED_BY_REGKEY"
	case nvml.P2P_STATUS_NOT_SUPPORTED:
		return "NOT_SUPPORTED"
	}
	return "UNKNOWN"
}

// busIDString converts NVML's NUL-terminated int8 array.
func busIDString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// nvlinkCount is the NV# nvidia-smi prints for a GPU pair: links that go
// straight from one to the other, or, on NVSwitch systems, the links each
// has into the switch fabric (the smaller of the two).
func nvlinkCount(a, b *GPU) int {
	direct := 0
	for _, l := range a.NVLinks {
		if l.RemoteAddr == b.Addr {
			direct++
		}
	}
	if direct > 0 {
		return direct
	}
	sw := func(g *GPU) int {
		return len(slices.DeleteFunc(slices.Clone(g.NVLinks), func(l NVLink) bool { return l.RemoteKind != "switch" }))
	}
	return min(sw(a), sw(b))
}
