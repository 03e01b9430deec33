package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// spec is the register map source (nic/regmap.yaml).
type spec struct {
	Name    string `yaml:"name"`
	Version struct {
		Major uint16 `yaml:"major"`
		Minor uint16 `yaml:"minor"`
	} `yaml:"version"`
	MinBARSize uint64     `yaml:"min_bar_size"`
	Windows    []window   `yaml:"windows"`
	Registers  []register `yaml:"registers"`
	Layouts    []layout   `yaml:"layouts"`
	Enums      []enum     `yaml:"enums"`
}

type window struct {
	Name   string `yaml:"name"`
	Offset uint64 `yaml:"offset"`
	Size   uint64 `yaml:"size"` // 0: to the end of the BAR
	Doc    string `yaml:"doc"`
}

type register struct {
	Name   string `yaml:"name"`
	Group  string `yaml:"group"`
	Offset uint64 `yaml:"offset"`
	Width  int    `yaml:"width"`
	Access string `yaml:"access"`
	Reset  uint64 `yaml:"reset"`
	// ResetNote replaces the reset value in the docs when the value is not
	// fixed, e.g. "image" for geometry the loaded image sets.
	ResetNote string `yaml:"reset_note"`
	Doc       string `yaml:"doc"`
	// FieldPrefix names the Go constants of the fields; default: the
	// register's Go name.
	FieldPrefix string  `yaml:"field_prefix"`
	Fields      []field `yaml:"fields"`
}

type field struct {
	Name string `yaml:"name"`
	Bits string `yaml:"bits"` // "n" or "hi:lo"
	Doc  string `yaml:"doc"`

	lo, hi int
}

type layout struct {
	Name   string   `yaml:"name"`
	Size   int      `yaml:"size"`
	Doc    string   `yaml:"doc"`
	Fields []lfield `yaml:"fields"`
}

type lfield struct {
	Name   string `yaml:"name"`
	Offset int    `yaml:"offset"`
	Width  int    `yaml:"width"` // bits, for integers
	Bytes  int    `yaml:"bytes"` // for byte arrays
	Doc    string `yaml:"doc"`
}

// size returns the field's size in bytes.
func (f lfield) size() int {
	if f.Bytes > 0 {
		return f.Bytes
	}
	return f.Width / 8
}

type enum struct {
	Name string `yaml:"name"`
	Doc  string `yaml:"doc"`
	// GoPrefix names the Go constants; default: the enum's Go name.
	GoPrefix string `yaml:"go_prefix"`
	// GoType, when set, makes the constants typed with a String method.
	GoType   string      `yaml:"go_type"`
	TypeBits int         `yaml:"type_bits"`
	Values   []enumValue `yaml:"values"`
}

type enumValue struct {
	Name  string `yaml:"name"`
	Value uint64 `yaml:"value"`
	Doc   string `yaml:"doc"`
}

var nameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// parseSpec decodes and validates a register map source. Every problem is
// reported, not just the first.
func parseSpec(r io.Reader) (*spec, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var s spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("decode register map: %w", err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *spec) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if s.Version.Major == 0 {
		bad("version.major: must be at least 1")
	}
	goNames := map[string]string{}
	claim := func(goName, what string) {
		if prev, ok := goNames[goName]; ok {
			bad("%s: Go name %s already used by %s", what, goName, prev)
		}
		goNames[goName] = what
	}

	// Windows: sorted, disjoint, inside the minimum BAR, the last one open.
	var regs *window
	var end uint64
	for i := range s.Windows {
		w := &s.Windows[i]
		what := fmt.Sprintf("window %q", w.Name)
		if !nameRE.MatchString(w.Name) {
			bad("%s: name must match %s", what, nameRE)
		}
		claim("Win"+goName(w.Name)+"Offset", what)
		if w.Offset < end {
			bad("%s: offset %#x overlaps the previous window (ends at %#x)", what, w.Offset, end)
		}
		if w.Offset%0x1000 != 0 {
			bad("%s: offset %#x is not 4 KiB aligned", what, w.Offset)
		}
		if w.Size == 0 {
			if i != len(s.Windows)-1 {
				bad("%s: only the last window may extend to the end of the BAR (size 0)", what)
			}
			end = w.Offset
		} else {
			end = w.Offset + w.Size
		}
		if end > s.MinBARSize {
			bad("%s: ends at %#x, beyond min_bar_size %#x", what, end, s.MinBARSize)
		}
		if w.Name == "REGS" {
			regs = w
		}
	}
	if regs == nil {
		bad("windows: no REGS window for the registers")
		regs = &window{}
	}

	// Registers: aligned, inside REGS, disjoint, fields inside the width.
	type span struct {
		lo, hi uint64
		name   string
	}
	var used []span
	for i := range s.Registers {
		r := &s.Registers[i]
		what := fmt.Sprintf("register %s", r.Name)
		if !nameRE.MatchString(r.Name) {
			bad("%s: name must match %s", what, nameRE)
		}
		claim("Reg"+goName(r.Name), what)
		if r.Group == "" {
			bad("%s: no group", what)
		}
		if r.Doc == "" {
			bad("%s: no doc", what)
		}
		switch r.Access {
		case "ro", "rw":
		default:
			bad("%s: access %q, want ro or rw", what, r.Access)
		}
		if r.Width != 32 && r.Width != 64 {
			bad("%s: width %d, want 32 or 64", what, r.Width)
			continue
		}
		n := uint64(r.Width / 8)
		if r.Offset%n != 0 {
			bad("%s: offset %#x is not aligned to its width (%d bytes)", what, r.Offset, n)
		}
		if r.Offset < regs.Offset || r.Offset+n > regs.Offset+regs.Size {
			bad("%s: offset %#x is outside the REGS window", what, r.Offset)
		}
		if r.Name == "REGMAP_VERSION" && r.Reset != uint64(s.Version.Major)<<16|uint64(s.Version.Minor) {
			bad("%s: reset %#x is not version %d.%d", what, r.Reset, s.Version.Major, s.Version.Minor)
		}
		if r.ResetNote != "" && r.Reset != 0 {
			bad("%s: has both reset and reset_note", what)
		}
		if r.Width == 32 && r.Reset > 0xffffffff {
			bad("%s: reset %#x does not fit 32 bits", what, r.Reset)
		}
		for _, u := range used {
			if r.Offset < u.hi && u.lo < r.Offset+n {
				bad("%s: bytes %#x..%#x overlap register %s", what, r.Offset, r.Offset+n-1, u.name)
			}
		}
		used = append(used, span{r.Offset, r.Offset + n, r.Name})
		prefix := r.FieldPrefix
		if prefix == "" {
			prefix = goName(r.Name)
		}
		var mask uint64
		for j := range r.Fields {
			f := &r.Fields[j]
			fwhat := fmt.Sprintf("%s field %s", what, f.Name)
			if !nameRE.MatchString(f.Name) {
				bad("%s: name must match %s", fwhat, nameRE)
			}
			if f.Doc == "" {
				bad("%s: no doc", fwhat)
			}
			lo, hi, err := parseBits(f.Bits)
			if err != nil {
				bad("%s: %v", fwhat, err)
				continue
			}
			if hi >= r.Width {
				bad("%s: bit %d is beyond the register's %d bits", fwhat, hi, r.Width)
				continue
			}
			f.lo, f.hi = lo, hi
			m := bitMask(lo, hi)
			if mask&m != 0 {
				bad("%s: bits %s overlap another field", fwhat, f.Bits)
			}
			mask |= m
			if lo == hi {
				claim(prefix+goName(f.Name), fwhat)
			} else {
				claim(prefix+goName(f.Name)+"Shift", fwhat)
				claim(prefix+goName(f.Name)+"Mask", fwhat)
			}
		}
	}

	// Layouts: fields aligned, inside the size, disjoint, covering it all.
	for i := range s.Layouts {
		l := &s.Layouts[i]
		what := fmt.Sprintf("layout %s", l.Name)
		if !nameRE.MatchString(l.Name) {
			bad("%s: name must match %s", what, nameRE)
		}
		claim(goName(l.Name)+"Size", what)
		if l.Size <= 0 || l.Size%8 != 0 {
			bad("%s: size %d is not a positive multiple of 8", what, l.Size)
			continue
		}
		cover := make([]string, l.Size)
		for _, f := range l.Fields {
			fwhat := fmt.Sprintf("%s field %s", what, f.Name)
			if !nameRE.MatchString(f.Name) {
				bad("%s: name must match %s", fwhat, nameRE)
			}
			claim(goName(l.Name)+goName(f.Name), fwhat)
			if f.Doc == "" {
				bad("%s: no doc", fwhat)
			}
			switch {
			case f.Width != 0 && f.Bytes != 0:
				bad("%s: has both width and bytes", fwhat)
				continue
			case f.Bytes > 0:
			case f.Width == 8 || f.Width == 16 || f.Width == 32 || f.Width == 64:
				if f.Offset%(f.Width/8) != 0 {
					bad("%s: offset %d is not aligned to its width", fwhat, f.Offset)
				}
			default:
				bad("%s: width %d, want 8, 16, 32 or 64 (or bytes)", fwhat, f.Width)
				continue
			}
			if f.Offset < 0 || f.Offset+f.size() > l.Size {
				bad("%s: bytes %d..%d are outside the layout's %d bytes", fwhat, f.Offset, f.Offset+f.size()-1, l.Size)
				continue
			}
			for b := f.Offset; b < f.Offset+f.size(); b++ {
				if cover[b] != "" {
					bad("%s: byte %d overlaps field %s", fwhat, b, cover[b])
					break
				}
				cover[b] = f.Name
			}
		}
		for b, c := range cover {
			if c == "" {
				bad("%s: byte %d belongs to no field (name reserved bytes)", what, b)
				break
			}
		}
	}

	// Enums: unique names and values.
	for i := range s.Enums {
		e := &s.Enums[i]
		what := fmt.Sprintf("enum %s", e.Name)
		if !nameRE.MatchString(e.Name) {
			bad("%s: name must match %s", what, nameRE)
		}
		if e.GoType != "" {
			claim(e.GoType, what)
			switch e.TypeBits {
			case 8, 16, 32, 64:
			default:
				bad("%s: type_bits %d, want 8, 16, 32 or 64", what, e.TypeBits)
			}
		}
		vals := map[uint64]string{}
		for _, v := range e.Values {
			vwhat := fmt.Sprintf("%s value %s", what, v.Name)
			if !nameRE.MatchString(v.Name) {
				bad("%s: name must match %s", vwhat, nameRE)
			}
			claim(e.goPrefix()+goName(v.Name), vwhat)
			if prev, ok := vals[v.Value]; ok {
				bad("%s: value %d already used by %s", vwhat, v.Value, prev)
			}
			vals[v.Value] = v.Name
			if e.TypeBits > 0 && e.TypeBits < 64 && v.Value>>e.TypeBits != 0 {
				bad("%s: value %d does not fit %d bits", vwhat, v.Value, e.TypeBits)
			}
		}
	}
	return errors.Join(errs...)
}

func (e *enum) goPrefix() string {
	if e.GoPrefix != "" {
		return e.GoPrefix
	}
	return goName(e.Name)
}

func parseBits(s string) (lo, hi int, err error) {
	a, b, found := strings.Cut(s, ":")
	hi, err = strconv.Atoi(a)
	if err != nil || hi < 0 {
		return 0, 0, fmt.Errorf("bits %q: want \"n\" or \"hi:lo\"", s)
	}
	lo = hi
	if found {
		lo, err = strconv.Atoi(b)
		if err != nil || lo < 0 || lo > hi {
			return 0, 0, fmt.Errorf("bits %q: want \"n\" or \"hi:lo\" with hi ≥ lo", s)
		}
	}
	return lo, hi, nil
}

func bitMask(lo, hi int) uint64 {
	if hi-lo+1 == 64 {
		return ^uint64(0)
	}
	return (uint64(1)<<(hi-lo+1) - 1) << lo
}

// initialisms are written in Go names the way Go spells them.
var initialisms = map[string]string{
	"ID": "ID", "DMA": "DMA", "NS": "NS", "KHZ": "KHz", "MBPS": "Mbps", "BAR": "BAR", "PCIE": "PCIe",
}

// goName turns SNAKE_CASE into CamelCase, keeping initialisms.
func goName(s string) string {
	var b bytes.Buffer
	for part := range strings.SplitSeq(s, "_") {
		if part == "" {
			continue
		}
		if w, ok := initialisms[part]; ok {
			b.WriteString(w)
			continue
		}
		// a trailing digit run stays attached: ID0 -> ID0
		letters := strings.TrimRight(part, "0123456789")
		digits := part[len(letters):]
		if w, ok := initialisms[letters]; ok {
			b.WriteString(w + digits)
			continue
		}
		b.WriteString(part[:1])
		b.WriteString(strings.ToLower(part[1:]))
	}
	return b.String()
}
