package gpu

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/u-root/u-root/pkg/pci"
)

// This file holds the pure parsers of what sysfs and NVML hand us. None of
// them touches the host; all of them are fuzzed.

// LinkSpeed is a PCIe link's transfer rate per lane in MT/s (8000 = 8.0 GT/s,
// PCIe Gen3). Zero means unknown.
type LinkSpeed int

// Gen is the PCIe generation of the speed (1–7), 0 if unknown.
func (s LinkSpeed) Gen() int {
	switch s {
	case 2500:
		return 1
	case 5000:
		return 2
	case 8000:
		return 3
	case 16000:
		return 4
	case 32000:
		return 5
	case 64000:
		return 6
	case 128000:
		return 7
	}
	return 0
}

// String prints the speed the way the kernel's current_link_speed does.
func (s LinkSpeed) String() string {
	if s == 0 {
		return "Unknown"
	}
	return fmt.Sprintf("%d.%d GT/s PCIe", s/1000, (s%1000)/100)
}

// maxLinkSpeed bounds what we accept: 256 GT/s is two generations beyond
// anything the kernel prints today.
const maxLinkSpeed = 256000

// ParseLinkSpeed parses a sysfs current_link_speed / max_link_speed value:
// "8.0 GT/s PCIe", "16 GT/s", "2.5 GT/s", or "Unknown"/"Unknown speed" (0).
func ParseLinkSpeed(s string) (LinkSpeed, error) {
	t := strings.TrimSpace(s)
	if t == "Unknown" || t == "Unknown speed" {
		return 0, nil
	}
	num, rest, ok := strings.Cut(t, " ")
	if !ok {
		return 0, &ParseError{What: "link speed", Offset: len(t), Value: s, Reason: `want "<rate> GT/s"`}
	}
	if rest != "GT/s" && rest != "GT/s PCIe" {
		return 0, &ParseError{What: "link speed", Offset: len(num) + 1, Value: s, Reason: `unit is not "GT/s"`}
	}
	whole, frac, hasFrac := strings.Cut(num, ".")
	w, err := strconv.ParseUint(whole, 10, 32)
	if err != nil || whole == "" {
		return 0, &ParseError{What: "link speed", Offset: 0, Value: s, Reason: "rate is not a decimal number"}
	}
	mt := w * 1000
	if hasFrac {
		if len(frac) != 1 || frac[0] < '0' || frac[0] > '9' {
			return 0, &ParseError{What: "link speed", Offset: len(whole) + 1, Value: s, Reason: "want one decimal digit after the point"}
		}
		mt += uint64(frac[0]-'0') * 100
	}
	if mt == 0 || mt > maxLinkSpeed {
		return 0, &ParseError{What: "link speed", Offset: 0, Value: s, Reason: fmt.Sprintf("rate must be in (0, %d] MT/s", maxLinkSpeed)}
	}
	return LinkSpeed(mt), nil
}

// ParseLinkWidth parses current_link_width / max_link_width ("16"). The
// kernel prints 0 where the link is down or unknown; PCIe allows at most x32.
func ParseLinkWidth(s string) (int, error) {
	t := strings.TrimSpace(s)
	n, err := strconv.ParseUint(t, 10, 8)
	if err != nil {
		return 0, &ParseError{What: "link width", Offset: 0, Value: s, Reason: "not a decimal number"}
	}
	if n > 32 {
		return 0, &ParseError{What: "link width", Offset: 0, Value: s, Reason: "width above x32"}
	}
	return int(n), nil
}

// ParseNUMANode parses numa_node: a node number, or -1 for unknown.
func ParseNUMANode(s string) (int, error) {
	t := strings.TrimSpace(s)
	n, err := strconv.ParseInt(t, 10, 32)
	if err != nil || n < -1 || n > 1<<16 {
		return 0, &ParseError{What: "numa_node", Offset: 0, Value: s, Reason: "want -1 or a node number up to 65536"}
	}
	return int(n), nil
}

// parseHexID parses "0x10de\n"-style vendor/device/class files.
func parseHexID(what, s string, bits int) (uint64, error) {
	t := strings.TrimSpace(s)
	h, ok := strings.CutPrefix(t, "0x")
	if !ok || h == "" {
		return 0, &ParseError{What: what, Offset: 0, Value: s, Reason: `want "0x" and hex digits`}
	}
	n, err := strconv.ParseUint(h, 16, bits)
	if err != nil {
		return 0, &ParseError{What: what, Offset: 2, Value: s, Reason: fmt.Sprintf("not a %d-bit hex number", bits)}
	}
	return n, nil
}

// maxCPU bounds CPU numbers in a cpulist, so a hostile file cannot make us
// allocate without bound.
const maxCPU = 1 << 16

// CPUSet is a set of logical CPU numbers, sorted ascending, no duplicates.
type CPUSet []int

// String prints the set in the kernel's cpulist form ("0-15,32-47").
func (c CPUSet) String() string {
	var b strings.Builder
	for i := 0; i < len(c); {
		j := i
		for j+1 < len(c) && c[j+1] == c[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(c[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(c[j]))
		}
		i = j + 1
	}
	return b.String()
}

// ParseCPUList parses a local_cpulist ("0-15,32-47", "" for none). CPU
// numbers above 65535 are rejected.
func ParseCPUList(s string) (CPUSet, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return CPUSet{}, nil
	}
	var set CPUSet
	off := 0
	for part := range strings.SplitSeq(t, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 32)
		if err != nil || a >= maxCPU {
			return nil, &ParseError{What: "cpulist", Offset: off, Value: s, Reason: fmt.Sprintf("want a CPU number below %d", maxCPU)}
		}
		b := a
		if isRange {
			b, err = strconv.ParseUint(hi, 10, 32)
			if err != nil || b >= maxCPU || b < a {
				return nil, &ParseError{What: "cpulist", Offset: off + len(lo) + 1, Value: s, Reason: fmt.Sprintf("want a range end ≥ %d and below %d", a, maxCPU)}
			}
		}
		for c := a; c <= b; c++ {
			set = append(set, int(c))
		}
		if len(set) > maxCPU {
			return nil, &ParseError{What: "cpulist", Offset: off, Value: s, Reason: fmt.Sprintf("more than %d CPUs", maxCPU)}
		}
		off += len(part) + 1
	}
	slices.Sort(set)
	return slices.Compact(set), nil
}

// Resource is one line of a PCI device's sysfs resource file: a BAR (0–5),
// the expansion ROM (6), or a bridge window.
type Resource struct {
	Start, End, Flags uint64
}

// Size is the length of the region, 0 if it is unused.
func (r Resource) Size() uint64 {
	if r.Start == 0 && r.End == 0 {
		return 0
	}
	return r.End - r.Start + 1
}

// maxResourceLines bounds the resource file: the kernel writes at most
// PCI_NUM_RESOURCES (17 with SR-IOV and bridge windows) lines.
const maxResourceLines = 64

// ParseResource parses a sysfs resource file: one "0x%016llx 0x%016llx
// 0x%016llx" line per region. Each line goes through u-root's
// pci.BaseLimType, the parser u-root's own bus reader uses.
func ParseResource(s string) ([]Resource, error) {
	t := strings.TrimRight(s, "\n")
	if t == "" {
		return nil, &ParseError{What: "resource", Offset: 0, Value: s, Reason: "empty file"}
	}
	lines := strings.Split(t, "\n")
	if len(lines) > maxResourceLines {
		return nil, &ParseError{What: "resource", Offset: 0, Value: s, Reason: fmt.Sprintf("%d lines, at most %d", len(lines), maxResourceLines)}
	}
	out := make([]Resource, 0, len(lines))
	off := 0
	for i, line := range lines {
		base, lim, attr, err := pci.BaseLimType(line)
		if err != nil {
			return nil, &ParseError{What: fmt.Sprintf("resource line %d", i), Offset: off, Value: line, Reason: err.Error()}
		}
		if lim < base && !(base == 0 && lim == 0) {
			return nil, &ParseError{What: fmt.Sprintf("resource line %d", i), Offset: off, Value: line, Reason: "end below start"}
		}
		out = append(out, Resource{Start: base, End: lim, Flags: attr})
		off += len(line) + 1
	}
	return out, nil
}

// FormatResource writes resources the way the kernel does.
func FormatResource(rs []Resource) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "0x%016x 0x%016x 0x%016x\n", r.Start, r.End, r.Flags)
	}
	return b.String()
}

// PCIe port types: bits 7:4 of the PCI Express capability's flags register
// (PCI_EXP_FLAGS_TYPE in include/uapi/linux/pci_regs.h).
const (
	PortEndpoint       = 0x0
	PortLegacyEndpoint = 0x1
	PortRoot           = 0x4
	PortUpstream       = 0x5
	PortDownstream     = 0x6
	PortPCIBridge      = 0x7
	PortPCIeBridge     = 0x8
	PortRCEndpoint     = 0x9
	PortRCEventCol     = 0xa
)

// PCIeCap is what the PCI Express capability says about a function.
type PCIeCap struct {
	PortType  int
	LinkSpeed LinkSpeed // current, from the link status register
	LinkWidth int
	MaxSpeed  LinkSpeed // from the link capabilities register
	MaxWidth  int
}

// linkSpeedCode maps the 4-bit speed fields of the link registers.
var linkSpeedCode = [...]LinkSpeed{0, 2500, 5000, 8000, 16000, 32000, 64000, 128000}

// ParsePCIeCap walks the capability list of a config space dump and decodes
// the PCI Express capability (id 0x10). found is false when the function has
// none (conventional PCI, or a 64-byte unprivileged read). The walk is
// bounded: a looping or out-of-range pointer is an error.
func ParsePCIeCap(config []byte) (c PCIeCap, found bool, err error) {
	const (
		statusReg    = 0x06
		statusCapLst = 0x10
		capPtrReg    = 0x34
		capIDPCIe    = 0x10
		maxCaps      = 48 // (256-64)/4: more is a loop
	)
	if len(config) < 64 {
		return PCIeCap{}, false, &ParseError{What: "config space", Offset: len(config), Value: "", Reason: "shorter than the 64-byte header"}
	}
	if binary.LittleEndian.Uint16(config[statusReg:])&statusCapLst == 0 {
		return PCIeCap{}, false, nil
	}
	ptr := int(config[capPtrReg] &^ 3)
	for range maxCaps {
		if ptr == 0 {
			return PCIeCap{}, false, nil
		}
		if ptr < 0x40 || ptr+2 > len(config) {
			if ptr+2 > len(config) && len(config) < 256 {
				// An unprivileged read stops at 64 bytes: the list goes on
				// where we cannot see it.
				return PCIeCap{}, false, nil
			}
			return PCIeCap{}, false, &ParseError{What: "config space capability pointer", Offset: ptr, Value: fmt.Sprintf("0x%02x", ptr), Reason: "points outside 0x40..end"}
		}
		if config[ptr] == capIDPCIe {
			if ptr+0x14 > len(config) {
				return PCIeCap{}, false, &ParseError{What: "PCI Express capability", Offset: ptr, Value: "", Reason: "truncated"}
			}
			flags := binary.LittleEndian.Uint16(config[ptr+2:])
			c.PortType = int(flags>>4) & 0xf
			lcap := binary.LittleEndian.Uint32(config[ptr+0x0c:])
			lsta := binary.LittleEndian.Uint16(config[ptr+0x12:])
			c.MaxSpeed = speedFromCode(int(lcap & 0xf))
			c.MaxWidth = int(lcap>>4) & 0x3f
			c.LinkSpeed = speedFromCode(int(lsta & 0xf))
			c.LinkWidth = int(lsta>>4) & 0x3f
			return c, true, nil
		}
		ptr = int(config[ptr+1] &^ 3)
	}
	return PCIeCap{}, false, &ParseError{What: "config space capability list", Offset: capPtrReg, Value: "", Reason: fmt.Sprintf("more than %d entries: the list loops", maxCaps)}
}

func speedFromCode(code int) LinkSpeed {
	if code < len(linkSpeedCode) {
		return linkSpeedCode[code]
	}
	return 0
}

// ParseNetSpeed parses /sys/class/net/<if>/speed: the link speed in Mb/s.
// The kernel writes -1 (or the read fails) when the link is down or the
// speed unknown; that is 0, not an error.
func ParseNetSpeed(s string) (int, error) {
	t := strings.TrimSpace(s)
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, &ParseError{What: "net speed", Offset: 0, Value: s, Reason: "not a decimal number of Mb/s"}
	}
	if n < -1 || n > 10_000_000 {
		return 0, &ParseError{What: "net speed", Offset: 0, Value: s, Reason: "want -1 or up to 10 Tb/s"}
	}
	return max(int(n), 0), nil
}

// ParseIBRate parses /sys/class/infiniband/<dev>/ports/<n>/rate, e.g.
// "200 Gb/sec (4X HDR)" or "2.5 Gb/sec (1X SDR)", into Gb/s.
func ParseIBRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	num, rest, ok := strings.Cut(t, " ")
	if !ok || !strings.HasPrefix(rest, "Gb/sec") {
		return 0, &ParseError{What: "InfiniBand rate", Offset: len(num), Value: s, Reason: `want "<rate> Gb/sec"`}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v >= 0 && v <= 100_000) || strings.ContainsAny(num, "eEnNiIxXpP_+-") {
		return 0, &ParseError{What: "InfiniBand rate", Offset: 0, Value: s, Reason: "rate is not a decimal number up to 100000"}
	}
	return v, nil
}
