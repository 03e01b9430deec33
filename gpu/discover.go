package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kvloom/kvloom/internal/pciid"
)

// Options configures Discover. The zero value discovers the running host:
// /sys, and the system's NVML library if it loads.
type Options struct {
	// SysfsRoot is where sysfs is mounted. Empty means "/sys".
	SysfsRoot string
	// NVML is the NVML library to ask about GPUs. Nil means the system's
	// libnvidia-ml.so.1 through go-nvml (nvml.New()).
	NVML NVMLLibrary
	// DisableNVML skips NVML entirely (sysfs only).
	DisableNVML bool
	// Logger receives the one "NVML not available" notice and per-device
	// warnings. Nil means slog.Default().
	Logger *slog.Logger
}

// Endpoint is one row of the topology matrix: a GPU, NIC, FPGA or NVMe
// controller.
type Endpoint struct {
	Name  string `json:"name"` // GPU0, NIC1, FPGA0, NVME0
	Kind  Kind   `json:"kind"`
	Addr  string `json:"addr"`
	Label string `json:"label,omitempty"` // mlx5_0, eth0, nvme0, or the GPU's name
}

// Topology is one host's GPUs and PCIe tree as discovered.
type Topology struct {
	NVML NVMLStatus `json:"nvml"`
	// PCI lists every PCI function, sorted by address.
	PCI []PCIDevice `json:"pci"`
	// GPUs are NVML's GPUs (placed in the PCI tree through their bus ids)
	// or, without NVML, the NVIDIA display/3D functions sysfs shows.
	GPUs []GPU `json:"gpus"`
	// GPUPairs are NVML's pairwise answers (empty without NVML).
	GPUPairs  []GPUPair  `json:"gpu_pairs,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
	// Warnings name what was skipped or disagreed (an unreadable function,
	// an NVML answer that differs from sysfs).
	Warnings []string `json:"warnings,omitempty"`

	byAddr map[string]int
}

// Discover reads the PCI tree and, where NVML is present, the GPUs' view of
// it. A missing NVML is reported once (a Warn log and Topology.NVML.Reason)
// and discovery goes on with sysfs alone; only an unreadable PCI bus fails.
func Discover(ctx context.Context, opts Options) (*Topology, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	devs, warns, err := ScanPCI(opts.SysfsRoot)
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	t := &Topology{PCI: devs, Warnings: warns}
	t.index()

	var rep nvmlReport
	switch {
	case opts.DisableNVML:
		t.NVML.Reason = "disabled"
	default:
		lib := opts.NVML
		if lib == nil {
			lib = nvml.New()
		}
		rep, err = queryNVML(lib, log)
		t.NVML = rep.status
		if err != nil {
			log.Warn("nvml_unavailable", "reason", t.NVML.Reason, "effect", "GPUs from sysfs only")
		}
		t.Warnings = append(t.Warnings, rep.warnings...)
	}
	if t.NVML.Available {
		t.placeNVMLGPUs(rep)
	} else {
		t.sysfsGPUs()
	}
	t.buildEndpoints()
	t.crossCheck()
	for _, w := range t.Warnings {
		log.Warn("topology_warning", "detail", w)
	}
	return t, nil
}

func (t *Topology) index() {
	t.byAddr = make(map[string]int, len(t.PCI))
	for i := range t.PCI {
		t.byAddr[t.PCI[i].Addr] = i
	}
}

// Device returns the PCI function at addr (any form pciid.ParseBDF accepts).
func (t *Topology) Device(addr string) (*PCIDevice, error) {
	a, err := pciid.Normalize(addr)
	if err != nil {
		return nil, err
	}
	if t.byAddr == nil {
		t.index()
	}
	i, ok := t.byAddr[a]
	if !ok {
		return nil, fmt.Errorf("PCI function %s: %w", a, ErrNotFound)
	}
	return &t.PCI[i], nil
}

func (t *Topology) placeNVMLGPUs(rep nvmlReport) {
	t.GPUPairs = rep.pairs
	for _, g := range rep.gpus {
		d, err := t.Device(g.Addr)
		switch {
		case err != nil:
			t.Warnings = append(t.Warnings, fmt.Sprintf("NVML GPU %d at %s has no sysfs function; distances to it are unknown", g.Index, g.Addr))
		case d.Vendor != pciid.VendorNVIDIA:
			t.Warnings = append(t.Warnings, fmt.Sprintf("NVML GPU %d at %s is %s %s in sysfs, not an NVIDIA function; distances to it are unknown", g.Index, g.Addr, d.ID(), d.Kind))
		case g.NUMANode < 0 && d.NUMANode >= 0:
			g.NUMANode, g.NUMASource = d.NUMANode, "sysfs"
		}
		t.GPUs = append(t.GPUs, g)
	}
	slices.SortFunc(t.GPUs, func(a, b GPU) int { return a.Index - b.Index })
}

func (t *Topology) sysfsGPUs() {
	for _, d := range t.PCI {
		if d.Kind != KindGPU {
			continue
		}
		g := GPU{Index: len(t.GPUs), Name: d.DeviceName, Addr: d.Addr, NUMANode: d.NUMANode, GPUNUMAID: -1, Source: "sysfs"}
		if d.NUMANode >= 0 {
			g.NUMASource = "sysfs"
		}
		t.GPUs = append(t.GPUs, g)
	}
}

func (t *Topology) buildEndpoints() {
	for _, g := range t.GPUs {
		if d, err := t.Device(g.Addr); err != nil || d.Vendor != pciid.VendorNVIDIA {
			continue // placeNVMLGPUs said why
		}
		t.Endpoints = append(t.Endpoints, Endpoint{Name: "GPU" + strconv.Itoa(g.Index), Kind: KindGPU, Addr: g.Addr, Label: g.Name})
	}
	counts := map[Kind]int{}
	prefix := map[Kind]string{KindNIC: "NIC", KindFPGA: "FPGA", KindNVMe: "NVME"}
	for _, k := range []Kind{KindNIC, KindFPGA, KindNVMe} {
		for _, d := range t.PCI {
			if d.Kind != k {
				continue
			}
			label := d.Label()
			if label == "" {
				label = d.DeviceName
			}
			t.Endpoints = append(t.Endpoints, Endpoint{Name: prefix[k] + strconv.Itoa(counts[k]), Kind: k, Addr: d.Addr, Label: label})
			counts[k]++
		}
	}
}

// crossCheck compares NVML's common ancestor with the sysfs answer for
// every GPU pair where both exist, and records each disagreement.
func (t *Topology) crossCheck() {
	for _, p := range t.GPUPairs {
		if p.Common < 0 {
			continue
		}
		a, errA := t.gpuDevice(p.A)
		b, errB := t.gpuDevice(p.B)
		if errA != nil || errB != nil {
			continue
		}
		if got := PCIDistance(a, b); got != p.Common {
			t.Warnings = append(t.Warnings, fmt.Sprintf("GPU%d/GPU%d: NVML says %s, sysfs paths say %s", p.A, p.B, p.Common, got))
		}
	}
}

func (t *Topology) gpuDevice(index int) (*PCIDevice, error) {
	for i := range t.GPUs {
		if t.GPUs[i].Index == index {
			return t.Device(t.GPUs[i].Addr)
		}
	}
	return nil, fmt.Errorf("GPU%d: %w", index, ErrNotFound)
}

// Endpoint finds a matrix row by name ("GPU0", "NIC1") or PCI address.
func (t *Topology) Endpoint(nameOrAddr string) (*Endpoint, error) {
	for i := range t.Endpoints {
		if t.Endpoints[i].Name == nameOrAddr {
			return &t.Endpoints[i], nil
		}
	}
	if a, err := pciid.Normalize(nameOrAddr); err == nil {
		for i := range t.Endpoints {
			if t.Endpoints[i].Addr == a {
				return &t.Endpoints[i], nil
			}
		}
	}
	return nil, fmt.Errorf("endpoint %q: %w", nameOrAddr, ErrNotFound)
}

// Between is the connection between two endpoints or PCI functions (names
// or addresses): NVLinks for GPU pairs that have them, and the PCIe level
// from sysfs paths.
func (t *Topology) Between(a, b string) (Connection, error) {
	da, err := t.lookup(a)
	if err != nil {
		return Connection{}, err
	}
	db, err := t.lookup(b)
	if err != nil {
		return Connection{}, err
	}
	c := Connection{Level: PCIDistance(da, db)}
	if c.Level != LevelSelf {
		ga, gb := t.gpuAt(da.Addr), t.gpuAt(db.Addr)
		if ga != nil && gb != nil {
			c.NVLinks = nvlinkCount(ga, gb)
		}
	}
	return c, nil
}

func (t *Topology) lookup(s string) (*PCIDevice, error) {
	if e, err := t.Endpoint(s); err == nil {
		return t.Device(e.Addr)
	}
	d, err := t.Device(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither an endpoint name nor a PCI function: %w", s, ErrNotFound)
	}
	return d, nil
}

func (t *Topology) gpuAt(addr string) *GPU {
	for i := range t.GPUs {
		if t.GPUs[i].Addr == addr {
			return &t.GPUs[i]
		}
	}
	return nil
}

// NUMAAffinity is the NUMA node (or, where NVML names several, the
// nodes) closest to the PCI function at addr, for the matrix's "NUMA
// Affinity" column and the exported topology. The rule, first answer wins:
//
//  1. a GPU's own affinity as NVML reports it (GPU.NUMANode with
//     NUMASource "nvml"), which is what nvidia-smi prints;
//  2. the function's numa_node from sysfs, when the kernel knows it;
//  3. the node NVML reported for the GPUs under the same PCI host bridge,
//     when they agree: every function below a host bridge shares its
//     node, and the kernel takes numa_node from the host bridge (ACPI
//     _PXM) in the first place, so where firmware left it out (numa_node
//     -1, as in many VMs) the GPU's driver is the better witness;
//  4. none (nil): "N/A".
//
// PCI distances (NODE against SYS) still compare sysfs's numa_node, as
// NCCL does.
func (t *Topology) NUMAAffinity(addr string) []int {
	a, err := pciid.Normalize(addr)
	if err != nil {
		return nil
	}
	if g := t.gpuAt(a); g != nil && g.NUMASource == "nvml" {
		if len(g.NUMANodes) > 0 {
			return g.NUMANodes
		}
		return []int{g.NUMANode}
	}
	d, err := t.Device(a)
	if err != nil {
		return nil
	}
	if d.NUMANode >= 0 {
		return []int{d.NUMANode}
	}
	var nodes []int
	for i := range t.GPUs {
		g := &t.GPUs[i]
		if g.NUMASource != "nvml" {
			continue
		}
		gd, err := t.Device(g.Addr)
		if err != nil || gd.HostBridge != d.HostBridge {
			continue
		}
		own := g.NUMANodes
		if len(own) == 0 {
			own = []int{g.NUMANode}
		}
		if nodes != nil && !slices.Equal(nodes, own) {
			return nil // GPUs under one host bridge disagree: say nothing
		}
		nodes = own
	}
	return nodes
}

// Matrix is the all-pairs table over the endpoints. It fails only when an
// endpoint names a PCI function the topology does not hold.
func (t *Topology) Matrix() (Matrix, error) {
	m := Matrix{Names: make([]string, len(t.Endpoints)), Cells: make([][]Connection, len(t.Endpoints))}
	for i, a := range t.Endpoints {
		m.Names[i] = a.Name
		m.Cells[i] = make([]Connection, len(t.Endpoints))
		for j, b := range t.Endpoints {
			c, err := t.Between(a.Addr, b.Addr)
			if err != nil {
				return Matrix{}, fmt.Errorf("topology matrix: %w", err)
			}
			m.Cells[i][j] = c
		}
	}
	return m, nil
}

// Describe writes the human-readable report: NVML status, the matrix with
// CPU and NUMA affinity, the legend, the endpoints, and every PCI function.
func (t *Topology) Describe() (string, error) {
	var b strings.Builder
	if t.NVML.Available {
		fmt.Fprintf(&b, "NVML: driver %s, %d GPU(s)\n\n", t.NVML.DriverVersion, len(t.GPUs))
	} else {
		fmt.Fprintf(&b, "NVML: not available: %s; GPUs from sysfs only\n\n", t.NVML.Reason)
	}
	if len(t.Endpoints) == 0 {
		b.WriteString("No GPUs, NICs, FPGAs or NVMe controllers found.\n\n")
	} else {
		m, err := t.Matrix()
		if err != nil {
			return "", err
		}
		lines := strings.Split(strings.TrimRight(m.String(), "\n"), "\n")
		fmt.Fprintf(&b, "%s%-16s%s\n", lines[0], "CPU Affinity", "NUMA Affinity")
		for i, e := range t.Endpoints {
			d, _ := t.Device(e.Addr)
			numa := "N/A"
			if nodes := t.NUMAAffinity(e.Addr); len(nodes) > 0 {
				numa = CPUSet(nodes).String() // the kernel's list form, as for CPUs
			}
			cpus := d.LocalCPUs.String()
			if cpus == "" {
				cpus = "N/A"
			}
			fmt.Fprintf(&b, "%s%-16s%s\n", lines[i+1], cpus, numa)
		}
		b.WriteString("\n")
		b.WriteString(Legend)
		b.WriteString("\nEndpoints:\n")
		for _, e := range t.Endpoints {
			d, _ := t.Device(e.Addr)
			fmt.Fprintf(&b, "  %-6s %s  %s  %s", e.Name, e.Addr, d.ID(), e.Label)
			if l := d.Link.String(); l != "" {
				fmt.Fprintf(&b, "  [%s]", l)
			}
			if d.BlueField {
				b.WriteString("  BlueField")
			}
			fmt.Fprintf(&b, "  via %s\n", pathString(d))
		}
	}
	fmt.Fprintf(&b, "\nPCI functions (%d):\n", len(t.PCI))
	for _, d := range t.PCI {
		fmt.Fprintf(&b, "  %s  %04x  %s  %-7s %s %s\n", d.Addr, d.Class>>8, d.ID(), d.Kind, d.VendorName, d.DeviceName)
	}
	if len(t.Warnings) > 0 {
		b.WriteString("\nWarnings:\n")
		for _, w := range t.Warnings {
			fmt.Fprintf(&b, "  %s\n", w)
		}
	}
	return b.String(), nil
}

func pathString(d *PCIDevice) string {
	parts := []string{d.HostBridge}
	for _, p := range d.Path {
		short := map[string]string{"root-port": "RP", "switch-upstream": "SWu", "switch-downstream": "SWd", "bridge": "BR"}[p.Role]
		parts = append(parts, short+" "+p.Addr)
	}
	return strings.Join(parts, " > ")
}

// Report is what `kvloom topo --json` prints: the topology and its matrix.
type Report struct {
	*Topology
	Matrix Matrix `json:"matrix"`
}

// Report builds the JSON report.
func (t *Topology) Report() (Report, error) {
	m, err := t.Matrix()
	if err != nil {
		return Report{}, err
	}
	return Report{Topology: t, Matrix: m}, nil
}
