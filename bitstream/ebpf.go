package bitstream

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/cilium/ebpf"
)

// EBPFInfo is what an eBPF ELF object holds, as cilium/ebpf's spec loader
// reads it.
type EBPFInfo struct {
	License  string        `json:"license"`
	Programs []EBPFProgram `json:"programs"`
	Maps     []EBPFMap     `json:"maps"`
}

// EBPFProgram is one program of an object.
type EBPFProgram struct {
	Name         string `json:"name"`
	Type         string `json:"type"` // "XDP", "SocketFilter", …
	Section      string `json:"section"`
	Instructions int    `json:"instructions"`
}

// EBPFMap is one map of an object.
type EBPFMap struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	KeySize    uint32 `json:"key_size"`
	ValueSize  uint32 `json:"value_size"`
	MaxEntries uint32 `json:"max_entries"`
}

func ebpfErr(field, reason string) error {
	return &FormatError{Format: "ebpf-elf", Field: field, Offset: -1, Reason: reason}
}

// loadEBPFSpec reads an object with cilium/ebpf and checks that it has at
// least one program and a license.
func loadEBPFSpec(data []byte) (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(data))
	if err != nil {
		return nil, ebpfErr("elf", "cilium/ebpf cannot read the object: "+err.Error())
	}
	if len(spec.Programs) == 0 {
		return nil, ebpfErr("programs", "object has no programs")
	}
	for _, p := range spec.Programs {
		if p.License == "" {
			return nil, ebpfErr("license", "object has no license section (char _license[] SEC(\"license\"))")
		}
	}
	return spec, nil
}

// InspectEBPF validates an eBPF ELF object with cilium/ebpf's
// LoadCollectionSpecFromReader and lists its programs, maps and license.
// It does not load anything into the kernel.
func InspectEBPF(data []byte) (*EBPFInfo, error) {
	spec, err := loadEBPFSpec(data)
	if err != nil {
		return nil, err
	}
	info := &EBPFInfo{}
	for name, p := range spec.Programs {
		info.License = p.License
		info.Programs = append(info.Programs, EBPFProgram{Name: name, Type: p.Type.String(), Section: p.SectionName, Instructions: len(p.Instructions)})
	}
	for name, m := range spec.Maps {
		info.Maps = append(info.Maps, EBPFMap{Name: name, Type: m.Type.String(), KeySize: m.KeySize, ValueSize: m.ValueSize, MaxEntries: m.MaxEntries})
	}
	slices.SortFunc(info.Programs, func(a, b EBPFProgram) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(info.Maps, func(a, b EBPFMap) int { return cmp.Compare(a.Name, b.Name) })
	return info, nil
}

// xdpPrograms returns the names of the object's XDP programs, sorted.
func xdpPrograms(spec *ebpf.CollectionSpec) []string {
	var names []string
	for name, p := range spec.Programs {
		if p.Type == ebpf.XDP {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func (i *EBPFInfo) String() string {
	return fmt.Sprintf("%d programs, %d maps, license %q", len(i.Programs), len(i.Maps), i.License)
}
