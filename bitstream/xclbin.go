package bitstream

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"unicode"
)

// Vitis xclbin2 ("axlf") layout, from XRT's xclbin.h. All fields are
// little-endian; offsets are absolute (docs/bitstream.md, §2.2 of the
// hardware reference).
const (
	XclbinMagic = "xclbin2\x00"

	axlfHeaderOff      = 304 // struct axlf_header
	axlfSectionsOff    = 456 // struct axlf_section_header m_sections[]
	axlfSectionHdrSize = 40
	// MaxXclbinSections is XRT's XCLBIN_MAX_NUM_SECTION.
	MaxXclbinSections = 0x10000

	memDataSize   = 40
	ipDataSize    = 80
	clockFreqSize = 136
)

// xclbin section kinds used by kvloom (enum axlf_section_kind).
const (
	XclbinBitstream         uint32 = 0
	XclbinMemTopology       uint32 = 6
	XclbinIPLayout          uint32 = 8
	XclbinClockFreqTopology uint32 = 11
)

var xclbinKindNames = [...]string{
	"BITSTREAM", "CLEARING_BITSTREAM", "EMBEDDED_METADATA", "FIRMWARE", "DEBUG_DATA",
	"SCHED_FIRMWARE", "MEM_TOPOLOGY", "CONNECTIVITY", "IP_LAYOUT", "DEBUG_IP_LAYOUT",
	"DESIGN_CHECK_POINT", "CLOCK_FREQ_TOPOLOGY", "MCS", "BMC", "BUILD_METADATA",
	"KEYVALUE_METADATA", "USER_METADATA", "DNA_CERTIFICATE", "PDI", "BITSTREAM_PARTIAL_PDI",
	"PARTITION_METADATA", "EMULATION_DATA", "SYSTEM_METADATA", "SOFT_KERNEL", "ASK_FLASH",
	"AIE_METADATA", "ASK_GROUP_TOPOLOGY", "ASK_GROUP_CONNECTIVITY", "SMARTNIC", "AIE_RESOURCES",
	"OVERLAY", "VENDER_METADATA", "AIE_PARTITION", "IP_METADATA", "AIE_RESOURCES_BIN",
	"AIE_TRACE_METADATA",
}

// XclbinKindName returns the name of an axlf section kind ("IP_LAYOUT"), or
// "KIND_<n>" for kinds this package does not know.
func XclbinKindName(kind uint32) string {
	if int(kind) < len(xclbinKindNames) {
		return xclbinKindNames[kind]
	}
	return "KIND_" + strconv.FormatUint(uint64(kind), 10)
}

var xclbinModes = [...]string{"FLAT", "PR", "TANDEM_STAGE2", "TANDEM_STAGE2_WITH_PR", "HW_EMU", "SW_EMU", "HW_EMU_PR"}

// Xclbin is what an xclbin2 container's header and known sections say.
type Xclbin struct {
	SignatureLength     int32           `json:"signature_length"` // -1: unsigned
	UniqueID            uint64          `json:"unique_id"`
	Length              uint64          `json:"length"`
	TimeStamp           uint64          `json:"timestamp"` // seconds since the epoch
	FeatureROMTimeStamp uint64          `json:"feature_rom_timestamp"`
	Version             string          `json:"version"` // "major.minor.patch"
	Mode                uint16          `json:"mode"`
	ModeName            string          `json:"mode_name"`
	ActionMask          uint16          `json:"action_mask"`
	InterfaceUUID       string          `json:"interface_uuid"` // 32 lowercase hex digits
	PlatformVBNV        string          `json:"platform_vbnv"`
	UUID                string          `json:"uuid"` // the xclbin's own UUID
	Sections            []XclbinSection `json:"sections"`
	MemTopology         []XclbinMem     `json:"mem_topology,omitempty"`
	IPLayout            []XclbinIP      `json:"ip_layout,omitempty"`
	Clocks              []XclbinClock   `json:"clocks,omitempty"`
}

// XclbinSection is one entry of the section table.
type XclbinSection struct {
	Kind     uint32 `json:"kind"`
	KindName string `json:"kind_name"`
	Name     string `json:"name"`
	Offset   uint64 `json:"offset"`
	Size     uint64 `json:"size"`
	Data     []byte `json:"-"` // shares the parsed buffer; nil for absent sections
}

// XclbinMem is one MEM_TOPOLOGY entry.
type XclbinMem struct {
	Type   uint8  `json:"type"`
	Used   bool   `json:"used"`
	SizeKB uint64 `json:"size_kb"`
	Base   uint64 `json:"base"`
	Tag    string `json:"tag"`
}

// XclbinIP is one IP_LAYOUT entry.
type XclbinIP struct {
	Type       uint32 `json:"type"`
	Properties uint32 `json:"properties"`
	Base       uint64 `json:"base"`
	Name       string `json:"name"`
}

// XclbinClock is one CLOCK_FREQ_TOPOLOGY entry.
type XclbinClock struct {
	FreqMHz uint16 `json:"freq_mhz"`
	Type    uint8  `json:"type"`
	Name    string `json:"name"`
}

func xclErr(field string, off uint64, reason, value, limit string) error {
	return &FormatError{Format: "xclbin2", Field: field, Offset: int64(off), Reason: reason, Value: value, Limit: limit}
}

// cString decodes a NUL-terminated string from a fixed-size array.
func cString(b []byte) (string, bool) {
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		return "", false
	}
	s := string(b[:n])
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return "", false
		}
	}
	return s, true
}

// Section returns the first section of kind.
func (x *Xclbin) Section(kind uint32) (XclbinSection, bool) {
	for _, s := range x.Sections {
		if s.Kind == kind && s.Size > 0 {
			return s, true
		}
	}
	return XclbinSection{}, false
}

// ParseXclbin parses a Vitis xclbin2 container: the axlf header, the section
// table, and the MEM_TOPOLOGY, IP_LAYOUT and CLOCK_FREQ_TOPOLOGY sections.
// It checks the magic, that m_length equals the file size, the section
// count limit, that every section lies inside the file, 8-byte aligned and
// not overlapping another or the header, and that names are NUL-terminated.
func ParseXclbin(data []byte) (*Xclbin, error) {
	le := binary.LittleEndian
	size := uint64(len(data))
	if size < 8 || string(data[:8]) != XclbinMagic {
		got := data[:min(len(data), 8)]
		return nil, xclErr("m_magic", 0, "not an xclbin2 file", strconv.Quote(string(got)), strconv.Quote(XclbinMagic))
	}
	if size < axlfSectionsOff {
		return nil, xclErr("axlf header", size, "file truncated inside the header", fmt.Sprintf("%d bytes", size), fmt.Sprintf("at least %d bytes", axlfSectionsOff))
	}
	x := &Xclbin{}
	x.SignatureLength = int32(le.Uint32(data[8:]))
	if x.SignatureLength < -1 || x.SignatureLength > 256 {
		return nil, xclErr("m_signature_length", 8, "out of range", strconv.Itoa(int(x.SignatureLength)), "-1 (unsigned) or 0–256")
	}
	x.UniqueID = le.Uint64(data[296:])
	h := data[axlfHeaderOff:]
	x.Length = le.Uint64(h[0:])
	if x.Length != size {
		reason := "length runs past the end of the file"
		if x.Length < size {
			reason = "file is longer than m_length"
		}
		return nil, xclErr("m_length", axlfHeaderOff, reason, strconv.FormatUint(x.Length, 10), fmt.Sprintf("%d (the file size)", size))
	}
	x.TimeStamp = le.Uint64(h[8:])
	x.FeatureROMTimeStamp = le.Uint64(h[16:])
	x.Version = fmt.Sprintf("%d.%d.%d", h[26], h[27], le.Uint16(h[24:]))
	x.Mode = le.Uint16(h[28:])
	x.ModeName = "MODE_" + strconv.Itoa(int(x.Mode))
	if int(x.Mode) < len(xclbinModes) {
		x.ModeName = xclbinModes[x.Mode]
	}
	x.ActionMask = le.Uint16(h[30:])
	x.InterfaceUUID = hex.EncodeToString(h[32:48])
	vbnv, ok := cString(h[48:112])
	if !ok {
		return nil, xclErr("m_platformVBNV", axlfHeaderOff+48, "not a NUL-terminated printable string", strconv.Quote(string(bytes.TrimRight(h[48:112], "\x00"))), "at most 63 characters and a NUL")
	}
	x.PlatformVBNV = vbnv
	x.UUID = hex.EncodeToString(h[112:128])
	n := uint64(le.Uint32(h[144:]))
	if n > MaxXclbinSections {
		return nil, xclErr("m_numSections", axlfHeaderOff+144, "too many sections", strconv.FormatUint(n, 10), fmt.Sprintf("≤ %d", MaxXclbinSections))
	}
	tableEnd := axlfSectionsOff + axlfSectionHdrSize*n
	if tableEnd > size {
		return nil, xclErr("m_sections", axlfSectionsOff, "section table runs past the end of the file", fmt.Sprintf("%d sections end at %d", n, tableEnd), fmt.Sprintf("≤ %d", size))
	}
	type span struct {
		lo, hi uint64
		i      int
	}
	var spans []span
	for i := range int(n) {
		off := axlfSectionsOff + uint64(i)*axlfSectionHdrSize
		e := data[off : off+axlfSectionHdrSize]
		field := fmt.Sprintf("m_sections[%d]", i)
		s := XclbinSection{Kind: le.Uint32(e[0:]), Offset: le.Uint64(e[24:]), Size: le.Uint64(e[32:])}
		s.KindName = XclbinKindName(s.Kind)
		name, ok := cString(e[4:20])
		if !ok {
			return nil, xclErr(field+".m_sectionName", off+4, "not a NUL-terminated printable string", strconv.Quote(string(bytes.TrimRight(e[4:20], "\x00"))), "at most 15 characters and a NUL")
		}
		s.Name = name
		if s.Offset != 0 || s.Size != 0 {
			if s.Offset > size || s.Size > size-s.Offset {
				return nil, xclErr(field+".m_sectionSize", off+32, "section runs past the end of the file", fmt.Sprintf("offset %d + size %d", s.Offset, s.Size), fmt.Sprintf("≤ %d", size))
			}
			if s.Offset%8 != 0 {
				return nil, xclErr(field+".m_sectionOffset", off+24, "section not 8-byte aligned", strconv.FormatUint(s.Offset, 10), "a multiple of 8")
			}
			if s.Offset < tableEnd && s.Size > 0 {
				return nil, xclErr(field+".m_sectionOffset", off+24, "section overlaps the header or section table", strconv.FormatUint(s.Offset, 10), fmt.Sprintf("≥ %d", tableEnd))
			}
			s.Data = data[s.Offset : s.Offset+s.Size]
			if s.Size > 0 {
				spans = append(spans, span{s.Offset, s.Offset + s.Size, i})
			}
		}
		x.Sections = append(x.Sections, s)
	}
	slices.SortFunc(spans, func(a, b span) int {
		if a.lo != b.lo {
			if a.lo < b.lo {
				return -1
			}
			return 1
		}
		return a.i - b.i
	})
	for k := 1; k < len(spans); k++ {
		if spans[k].lo < spans[k-1].hi {
			a, b := spans[k-1], spans[k]
			return nil, xclErr(fmt.Sprintf("m_sections[%d].m_sectionOffset", b.i), axlfSectionsOff+uint64(b.i)*axlfSectionHdrSize+24,
				fmt.Sprintf("section overlaps section %d [%d, %d)", a.i, a.lo, a.hi), strconv.FormatUint(b.lo, 10), fmt.Sprintf("≥ %d", a.hi))
		}
	}
	if err := x.decodeKnown(); err != nil {
		return nil, err
	}
	return x, nil
}

// decodeKnown decodes the first MEM_TOPOLOGY, IP_LAYOUT and
// CLOCK_FREQ_TOPOLOGY sections.
func (x *Xclbin) decodeKnown() error {
	le := binary.LittleEndian
	if s, ok := x.Section(XclbinMemTopology); ok {
		count, err := sectionCount(s, 4, 8, memDataSize)
		if err != nil {
			return err
		}
		for i := range count {
			e := s.Data[8+i*memDataSize:]
			tag, ok := cString(e[24:40])
			if !ok {
				return xclErr(fmt.Sprintf("MEM_TOPOLOGY m_mem_data[%d].m_tag", i), s.Offset+uint64(8+i*memDataSize+24), "not a NUL-terminated printable string", "", "at most 15 characters and a NUL")
			}
			x.MemTopology = append(x.MemTopology, XclbinMem{Type: e[0], Used: e[1] != 0, SizeKB: le.Uint64(e[8:]), Base: le.Uint64(e[16:]), Tag: tag})
		}
	}
	if s, ok := x.Section(XclbinIPLayout); ok {
		count, err := sectionCount(s, 4, 8, ipDataSize)
		if err != nil {
			return err
		}
		for i := range count {
			e := s.Data[8+i*ipDataSize:]
			name, ok := cString(e[16:80])
			if !ok {
				return xclErr(fmt.Sprintf("IP_LAYOUT m_ip_data[%d].m_name", i), s.Offset+uint64(8+i*ipDataSize+16), "not a NUL-terminated printable string", "", "at most 63 characters and a NUL")
			}
			x.IPLayout = append(x.IPLayout, XclbinIP{Type: le.Uint32(e[0:]), Properties: le.Uint32(e[4:]), Base: le.Uint64(e[8:]), Name: name})
		}
	}
	if s, ok := x.Section(XclbinClockFreqTopology); ok {
		count, err := sectionCount(s, 2, 2, clockFreqSize)
		if err != nil {
			return err
		}
		for i := range count {
			e := s.Data[2+i*clockFreqSize:]
			name, ok := cString(e[8:136])
			if !ok {
				return xclErr(fmt.Sprintf("CLOCK_FREQ_TOPOLOGY m_clock_freq[%d].m_name", i), s.Offset+uint64(2+i*clockFreqSize+8), "not a NUL-terminated printable string", "", "at most 127 characters and a NUL")
			}
			x.Clocks = append(x.Clocks, XclbinClock{FreqMHz: le.Uint16(e[0:]), Type: e[2], Name: name})
		}
	}
	return nil
}

// sectionCount reads a section's signed element count (countSize bytes)
// and checks that count entries of entrySize after the first dataOff bytes
// fit in the section.
func sectionCount(s XclbinSection, countSize, dataOff, entrySize int) (int, error) {
	if s.Size < uint64(countSize) {
		return 0, xclErr(s.KindName+" m_count", s.Offset, "section too short for its count", fmt.Sprintf("%d bytes", s.Size), fmt.Sprintf("≥ %d bytes", countSize))
	}
	var count int64
	if countSize == 2 {
		count = int64(int16(binary.LittleEndian.Uint16(s.Data)))
	} else {
		count = int64(int32(binary.LittleEndian.Uint32(s.Data)))
	}
	if count < 0 {
		return 0, xclErr(s.KindName+" m_count", s.Offset, "negative count", strconv.FormatInt(count, 10), "≥ 0")
	}
	if count > 0 && uint64(dataOff)+uint64(count)*uint64(entrySize) > s.Size {
		return 0, xclErr(s.KindName+" m_count", s.Offset, "entries run past the end of the section", strconv.FormatInt(count, 10),
			fmt.Sprintf("≤ %d entries of %d bytes in %d bytes", (int64(s.Size)-int64(dataOff))/int64(entrySize), entrySize, s.Size))
	}
	return int(count), nil
}

// XclbinSpec describes an xclbin2 file for GenerateXclbin.
type XclbinSpec struct {
	PlatformVBNV  string   // at most 63 characters
	InterfaceUUID [16]byte // the shell's interface UUID
	UUID          [16]byte // the xclbin's own UUID
	TimeStamp     uint64
	Mode          uint16 // 0 FLAT, 1 PR, …
	VersionMajor  uint8
	VersionMinor  uint8
	VersionPatch  uint16
	Bitstream     []byte // BITSTREAM section (a .bit file); nil omits it
	Mem           []XclbinMem
	IPs           []XclbinIP
	Clocks        []XclbinClock
}

// GenerateXclbin writes an xclbin2 file that follows the layout ParseXclbin
// reads: header, section table, then sections in the order BITSTREAM,
// MEM_TOPOLOGY, IP_LAYOUT, CLOCK_FREQ_TOPOLOGY (those present), each
// 8-byte aligned. It is the project's own generator of test files.
func GenerateXclbin(s XclbinSpec) ([]byte, error) {
	le := binary.LittleEndian
	if len(s.PlatformVBNV) > 63 {
		return nil, fmt.Errorf("generate xclbin: platform VBNV has %d characters, at most 63 fit", len(s.PlatformVBNV))
	}
	type sec struct {
		kind uint32
		name string
		data []byte
	}
	var secs []sec
	if s.Bitstream != nil {
		secs = append(secs, sec{XclbinBitstream, "bitstream", s.Bitstream})
	}
	if s.Mem != nil {
		b := le.AppendUint32(nil, uint32(len(s.Mem)))
		b = append(b, 0, 0, 0, 0)
		for _, m := range s.Mem {
			e := make([]byte, memDataSize)
			e[0] = m.Type
			if m.Used {
				e[1] = 1
			}
			le.PutUint64(e[8:], m.SizeKB)
			le.PutUint64(e[16:], m.Base)
			if len(m.Tag) > 15 {
				return nil, fmt.Errorf("generate xclbin: memory tag %q longer than 15 characters", m.Tag)
			}
			copy(e[24:], m.Tag)
			b = append(b, e...)
		}
		secs = append(secs, sec{XclbinMemTopology, "mem_topology", b})
	}
	if s.IPs != nil {
		b := le.AppendUint32(nil, uint32(len(s.IPs)))
		b = append(b, 0, 0, 0, 0)
		for _, ip := range s.IPs {
			e := make([]byte, ipDataSize)
			le.PutUint32(e[0:], ip.Type)
			le.PutUint32(e[4:], ip.Properties)
			le.PutUint64(e[8:], ip.Base)
			if len(ip.Name) > 63 {
				return nil, fmt.Errorf("generate xclbin: IP name %q longer than 63 characters", ip.Name)
			}
			copy(e[16:], ip.Name)
			b = append(b, e...)
		}
		secs = append(secs, sec{XclbinIPLayout, "ip_layout", b})
	}
	if s.Clocks != nil {
		b := le.AppendUint16(nil, uint16(len(s.Clocks)))
		for _, c := range s.Clocks {
			e := make([]byte, clockFreqSize)
			le.PutUint16(e[0:], c.FreqMHz)
			e[2] = c.Type
			if len(c.Name) > 127 {
				return nil, fmt.Errorf("generate xclbin: clock name %q longer than 127 characters", c.Name)
			}
			copy(e[8:], c.Name)
			b = append(b, e...)
		}
		secs = append(secs, sec{XclbinClockFreqTopology, "clock_freq", b})
	}
	off := uint64(axlfSectionsOff + axlfSectionHdrSize*len(secs))
	offsets := make([]uint64, len(secs))
	for i, sc := range secs {
		off = (off + 7) &^ 7
		offsets[i] = off
		off += uint64(len(sc.data))
	}
	out := make([]byte, off)
	copy(out, XclbinMagic)
	le.PutUint32(out[8:], 0xffffffff) // m_signature_length = -1: unsigned
	for i := 12; i < 40; i++ {
		out[i] = 0xff // reserved
	}
	h := out[axlfHeaderOff:]
	le.PutUint64(h[0:], off)
	le.PutUint64(h[8:], s.TimeStamp)
	le.PutUint16(h[24:], s.VersionPatch)
	h[26], h[27] = s.VersionMajor, s.VersionMinor
	le.PutUint16(h[28:], s.Mode)
	copy(h[32:48], s.InterfaceUUID[:])
	copy(h[48:112], s.PlatformVBNV)
	copy(h[112:128], s.UUID[:])
	le.PutUint32(h[144:], uint32(len(secs)))
	for i, sc := range secs {
		e := out[axlfSectionsOff+i*axlfSectionHdrSize:]
		le.PutUint32(e[0:], sc.kind)
		copy(e[4:20], sc.name)
		le.PutUint64(e[24:], offsets[i])
		le.PutUint64(e[32:], uint64(len(sc.data)))
		copy(out[offsets[i]:], sc.data)
	}
	return out, nil
}
