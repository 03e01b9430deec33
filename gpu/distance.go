package gpu

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/kvloom/kvloom/sim/topology"
)

// Level is the PCIe distance between two devices in nvidia-smi's
// vocabulary, nearest first. It is sim/topology's Distance, value for value,
// so that names and order cannot drift between the matrix kvloom topo prints
// and the file it exports; its own type adds the JSON text form.
type Level topology.Distance

// The levels of `nvidia-smi topo -m`.
const (
	LevelSelf = Level(topology.Self) // X: the same device
	LevelPIX  = Level(topology.PIX)  // at most one PCIe bridge (one switch) between them
	LevelPXB  = Level(topology.PXB)  // several bridges, no host bridge
	LevelPHB  = Level(topology.PHB)  // through a PCIe host bridge (the CPU's root complex)
	LevelNODE = Level(topology.NODE) // between host bridges of one NUMA node
	LevelSYS  = Level(topology.SYS)  // across the SMP interconnect between NUMA nodes
)

func (l Level) String() string { return topology.Distance(l).String() }

// ParseLevel is the inverse of Level.String.
func ParseLevel(s string) (Level, error) {
	d, err := topology.ParseDistance(s)
	if err != nil {
		return 0, &ParseError{What: "topology level", Offset: 0, Value: s, Reason: "want X, PIX, PXB, PHB, NODE or SYS"}
	}
	return Level(d), nil
}

// MarshalText writes the level's name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level's name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// levelFromNVML maps NVML's GpuTopologyLevel onto ours (nvml.h: INTERNAL 0,
// SINGLE 10, MULTIPLE 20, HOSTBRIDGE 30, NODE 40, SYSTEM 50). INTERNAL (two
// GPUs on one board) is reported by nvidia-smi with the board's bridge, PIX.
func levelFromNVML(t nvml.GpuTopologyLevel) (Level, error) {
	switch t {
	case nvml.TOPOLOGY_INTERNAL, nvml.TOPOLOGY_SINGLE:
		return LevelPIX, nil
	case nvml.TOPOLOGY_MULTIPLE:
		return LevelPXB, nil
	case nvml.TOPOLOGY_HOSTBRIDGE:
		return LevelPHB, nil
	case nvml.TOPOLOGY_NODE:
		return LevelNODE, nil
	case nvml.TOPOLOGY_SYSTEM:
		return LevelSYS, nil
	}
	return 0, fmt.Errorf("NVML topology level %d: %w", t, ErrMalformed)
}

// Connection is one cell of the topology matrix: the PCIe level and, for
// GPU pairs, the NVLinks that bond them.
type Connection struct {
	Level   Level `json:"level"`
	NVLinks int   `json:"nvlinks,omitempty"`
}

// String is the matrix cell: "X", "NV18", or the level.
func (c Connection) String() string {
	if c.Level != LevelSelf && c.NVLinks > 0 {
		return "NV" + strconv.Itoa(c.NVLinks)
	}
	return c.Level.String()
}

// PCIDistance classifies the path between two PCI functions the way NCCL
// does from their resolved sysfs paths (src/misc/topo.cc, pciDistance):
// different host bridges are NODE when both sit on the same NUMA node and SYS
// otherwise; one host bridge but different root ports is PHB; otherwise the
// devices share a root port or switch, PIX when each is at most one bridge
// below the lowest shared one (one switch, or functions of one device) and
// PXB when more bridges are crossed. Unlike NCCL's character scan, which
// measures depth on its first argument only, this is symmetric, and two
// functions of one device are PIX (NCCL merges them into one device).
func PCIDistance(a, b *PCIDevice) Level {
	if a.Addr == b.Addr {
		return LevelSelf
	}
	ca, cb := a.components(), b.components()
	common := 0
	for common < len(ca) && common < len(cb) && ca[common] == cb[common] {
		common++
	}
	hb := slices.Index(ca, a.HostBridge)
	if a.HostBridge != b.HostBridge || common <= hb {
		// A NUMA node of -1 means "unknown"; like NCCL we compare the values
		// as they are, so two unknowns count as one node.
		if a.NUMANode == b.NUMANode {
			return LevelNODE
		}
		return LevelSYS
	}
	if common == hb+1 {
		return LevelPHB
	}
	// Bridges strictly between the lowest common ancestor and each device.
	belowA := len(ca) - common - 1
	belowB := len(cb) - common - 1
	if belowA <= 1 && belowB <= 1 {
		return LevelPIX
	}
	return LevelPXB
}

// Matrix is the all-pairs connection table over a topology's endpoints.
type Matrix struct {
	Names []string       `json:"names"`
	Cells [][]Connection `json:"cells"`
}

// String renders the matrix like `nvidia-smi topo -m`.
func (m Matrix) String() string {
	var b strings.Builder
	w := 6
	for _, n := range m.Names {
		w = max(w, len(n)+2)
	}
	fmt.Fprintf(&b, "%-*s", w, "")
	for _, n := range m.Names {
		fmt.Fprintf(&b, "%-*s", w, n)
	}
	b.WriteString("\n")
	for i, n := range m.Names {
		fmt.Fprintf(&b, "%-*s", w, n)
		for j := range m.Names {
			fmt.Fprintf(&b, "%-*s", w, m.Cells[i][j].String())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// MarshalJSON writes cells as their matrix strings, which is what tools read.
func (c Connection) MarshalJSON() ([]byte, error) {
	type plain Connection
	return json.Marshal(struct {
		plain
		Text string `json:"text"`
	}{plain(c), c.String()})
}

// Legend is nvidia-smi's legend, plus kvloom's additions.
const Legend = `Legend:
  X    = Self
  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)
  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node
  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)
  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)
  PIX  = Connection traversing at most a single PCIe bridge
  NV#  = Connection traversing a bonded set of # NVLinks
`
