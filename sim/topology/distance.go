package topology

import (
	"fmt"
	"strconv"
)

// Distance is how far apart two devices of one host are, in nvidia-smi's
// vocabulary (`nvidia-smi topo -m`), ordered from nearest to farthest.
type Distance int

// Distances.
const (
	Self Distance = iota // the same device
	PIX                  // at most one PCIe bridge (the same switch)
	PXB                  // several PCIe bridges, no host bridge
	PHB                  // through a PCIe host bridge (the CPU's root complex)
	NODE                 // between host bridges of one NUMA node
	SYS                  // across the SMP interconnect between NUMA nodes
)

var distanceNames = [...]string{"X", "PIX", "PXB", "PHB", "NODE", "SYS"}

// String returns the nvidia-smi name ("X" for Self).
func (d Distance) String() string {
	if d < 0 || int(d) >= len(distanceNames) {
		return "Distance(" + strconv.Itoa(int(d)) + ")"
	}
	return distanceNames[d]
}

// ParseDistance parses an nvidia-smi distance name.
func ParseDistance(s string) (Distance, error) {
	for i, n := range distanceNames {
		if n == s {
			return Distance(i), nil
		}
	}
	return 0, fmt.Errorf("distance %q: want one of X, PIX, PXB, PHB, NODE, SYS", s)
}

// ancestors returns the bridges above a device or bridge, nearest first,
// ending at its host bridge. A device without a parent hangs off a virtual
// host bridge of its NUMA node, so that two such devices on one node are PHB
// apart. The second result is the NUMA node the chain ends in.
func (h *Host) ancestors(parent string, numa int) ([]string, int) {
	var chain []string
	seen := map[string]bool{}
	for parent != "" && !seen[parent] {
		seen[parent] = true
		b, ok := h.Bridge(parent)
		if !ok {
			break
		}
		chain = append(chain, b.Name)
		if b.Kind == BridgeHost {
			return chain, b.NUMA
		}
		parent = b.Parent
	}
	// No host bridge above: the device (or its top bridge) sits on the
	// root complex of its NUMA node.
	return append(chain, virtualHostBridge(numa)), numa
}

func virtualHostBridge(numa int) string { return "\x00numa" + strconv.Itoa(numa) }

// DeviceNUMA returns the NUMA node a device belongs to: its host bridge's
// when it has one, else its own numa field.
func (h *Host) DeviceNUMA(name string) (int, error) {
	a, ok := h.Device(name)
	if !ok {
		return 0, fmt.Errorf("host %s: no device %q", h.Name, name)
	}
	_, numa := h.ancestors(a.Parent, a.NUMA)
	return numa, nil
}

// Distance returns the distance between two devices (GPUs, NICs or NVMe
// drives) of the host, following NCCL's classification of sysfs paths:
// the same device is Self; devices whose nearest common bridge is the
// parent of both are PIX; a common bridge below the host bridge is PXB; a
// common host bridge is PHB; otherwise NODE on one NUMA node, SYS across.
func (h *Host) Distance(a, b string) (Distance, error) {
	da, ok := h.Device(a)
	if !ok {
		return 0, fmt.Errorf("host %s: no device %q", h.Name, a)
	}
	db, ok := h.Device(b)
	if !ok {
		return 0, fmt.Errorf("host %s: no device %q", h.Name, b)
	}
	if a == b {
		return Self, nil
	}
	ca, na := h.ancestors(da.Parent, da.NUMA)
	cb, nb := h.ancestors(db.Parent, db.NUMA)
	idx := make(map[string]int, len(cb))
	for i, n := range cb {
		idx[n] = i
	}
	for i, n := range ca {
		j, ok := idx[n]
		if !ok {
			continue
		}
		switch {
		case i == len(ca)-1: // the host bridge, real or virtual
			return PHB, nil
		case i == 0 && j == 0:
			return PIX, nil
		default:
			return PXB, nil
		}
	}
	if na == nb {
		return NODE, nil
	}
	return SYS, nil
}

// Hop is one PCIe link a transfer crosses: between Child and its parent
// bridge Parent (empty for a device's link to its root complex).
type Hop struct {
	Child, Parent string
	// Gen and Width of the link, with defaults applied.
	Gen, Width int
	// Up is true when the transfer goes from Child towards Parent.
	Up bool
}

// Route returns the PCIe links between two devices of the host: up from a
// to the nearest common bridge, then down to b. A route between host
// bridges (NODE or SYS) goes through the CPU; the caller adds the SMP link
// for SYS.
func (h *Host) Route(a, b string) ([]Hop, error) {
	da, ok := h.Device(a)
	if !ok {
		return nil, fmt.Errorf("host %s: no device %q", h.Name, a)
	}
	db, ok := h.Device(b)
	if !ok {
		return nil, fmt.Errorf("host %s: no device %q", h.Name, b)
	}
	if a == b {
		return nil, nil
	}
	ca, _ := h.ancestors(da.Parent, da.NUMA)
	cb, _ := h.ancestors(db.Parent, db.NUMA)
	common := ""
	inB := map[string]bool{}
	for _, n := range cb {
		inB[n] = true
	}
	for _, n := range ca {
		if inB[n] {
			common = n
			break
		}
	}
	up := h.hops(a, h.deviceGen(a), da, ca, common)
	for i := range up {
		up[i].Up = true
	}
	down := h.hops(b, h.deviceGen(b), db, cb, common)
	for i := len(down) - 1; i >= 0; i-- {
		up = append(up, down[i])
	}
	return up, nil
}

// HostRoute returns the PCIe links between a device and host memory on its
// own root complex (what a DMA to or from DRAM crosses), device first, with
// Up set: reverse them (and clear Up) for DRAM → device.
func (h *Host) HostRoute(dev string) ([]Hop, error) {
	d, ok := h.Device(dev)
	if !ok {
		return nil, fmt.Errorf("host %s: no device %q", h.Name, dev)
	}
	chain, _ := h.ancestors(d.Parent, d.NUMA)
	hops := h.hops(dev, h.deviceGen(dev), d, chain, "")
	for i := range hops {
		hops[i].Up = true
	}
	return hops, nil
}

func (h *Host) deviceGen(name string) int {
	for _, g := range h.GPUs {
		if g.Name == name && g.Gen == 0 {
			if spec, ok := GPUPreset(g.Model); ok {
				return spec.PCIeGen
			}
		}
	}
	return 0
}

// hops lists the links from a device up its chain, up to and including the
// link into common (or into the host bridge when common is not on the
// chain).
func (h *Host) hops(name string, defGen int, a Attach, chain []string, common string) []Hop {
	gen, width := a.Gen, a.Width
	if gen == 0 {
		gen = defGen
	}
	gen, width = linkDefaults(gen, width)
	var out []Hop
	child := name
	for _, n := range chain {
		if len(n) > 0 && n[0] == 0 { // virtual host bridge
			return append(out, Hop{Child: child, Parent: "", Gen: gen, Width: width})
		}
		out = append(out, Hop{Child: child, Parent: n, Gen: gen, Width: width})
		b, _ := h.Bridge(n)
		if n == common || b.Kind == BridgeHost {
			return out
		}
		child = n
		if b.Gen != 0 {
			gen = b.Gen
		}
		if b.Width != 0 {
			width = b.Width
		}
	}
	return out
}

func linkDefaults(gen, width int) (int, int) {
	if gen == 0 {
		gen = 4
	}
	if width == 0 {
		width = 16
	}
	return gen, width
}
