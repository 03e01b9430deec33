package bitstream

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// SyncWord is the configuration sync word of Xilinx 7-series, UltraScale and
// UltraScale+ bitstreams, as it appears in a .bit file's data.
var SyncWord = [4]byte{0xAA, 0x99, 0x55, 0x66}

// bitPrefix is the fixed start of every .bit header: a length-9 field of
// opaque bytes, then 00 01.
var bitPrefix = []byte{0x00, 0x09, 0x0f, 0xf0, 0x0f, 0xf0, 0x0f, 0xf0, 0x0f, 0xf0, 0x00, 0x00, 0x01}

// MaxSyncSearch is how far into the configuration data ParseBit looks for
// the sync word (it follows a few dozen bytes of dummy and bus-width words).
const MaxSyncSearch = 4096

// BitFile is what the header of a Xilinx .bit file says.
type BitFile struct {
	// DesignField is field 'a' verbatim. Vivado writes
	// "<design>;UserID=0XFFFFFFFF;Version=2023.2"; ISE only the design.
	DesignField string `json:"design_field"`
	DesignName  string `json:"design_name"`
	UserID      string `json:"user_id,omitempty"`      // "0x%08x"; empty when the field has none
	ToolVersion string `json:"tool_version,omitempty"` // empty when the field has none
	Part        string `json:"part"`                   // field 'b', e.g. "xczu9eg-ffvb1156-2-e"
	Date        string `json:"date"`                   // field 'c', "YYYY/MM/DD"
	Time        string `json:"time"`                   // field 'd', "HH:MM:SS"
	DataOffset  int    `json:"data_offset"`            // file offset of the configuration data
	DataLength  int    `json:"data_length"`            // field 'e': bytes of configuration data
	SyncOffset  int    `json:"sync_offset"`            // offset of the sync word within the data
	Trailing    int    `json:"trailing,omitempty"`     // bytes after the data (vendor tools warn)
	// Data is the raw configuration data (the ".bit.bin"), sharing the
	// parsed buffer.
	Data []byte `json:"-"`
}

func bitErr(field string, off int, reason, value, limit string) error {
	return &FormatError{Format: "xilinx-bit", Field: field, Offset: int64(off), Reason: reason, Value: value, Limit: limit}
}

// bitFields are the header's string fields, in the order files have them.
var bitFields = [...]struct {
	key  byte
	name string
}{{'a', "design"}, {'b', "part"}, {'c', "date"}, {'d', "time"}}

// ParseBit parses a Xilinx .bit file: the fixed prefix, the string fields
// 'a' (design, user id, tool version), 'b' (part), 'c' (date), 'd' (time) in
// that order, then 'e' with the 4-byte length of the configuration data,
// and finds the sync word in that data at a 4-byte-aligned offset.
func ParseBit(data []byte) (*BitFile, error) {
	for i, want := range bitPrefix {
		if i >= len(data) {
			return nil, bitErr("prefix", i, "file truncated inside the fixed header", fmt.Sprintf("%d bytes", len(data)), fmt.Sprintf("at least %d bytes", len(bitPrefix)))
		}
		if data[i] != want {
			return nil, bitErr("prefix", i, "not a .bit file: fixed header differs", fmt.Sprintf("0x%02x", data[i]), fmt.Sprintf("0x%02x", want))
		}
	}
	bf := &BitFile{}
	pos := len(bitPrefix)
	values := make([]string, len(bitFields))
	offsets := make([]int, len(bitFields)) // where each value starts
	for i, f := range bitFields {
		field := fmt.Sprintf("'%c' (%s)", f.key, f.name)
		if pos >= len(data) {
			return nil, bitErr(field+" key", pos, "file truncated before the field", "end of file", fmt.Sprintf("key 0x%02x", f.key))
		}
		if data[pos] != f.key {
			return nil, bitErr(field+" key", pos, "unexpected field key", fmt.Sprintf("0x%02x", data[pos]), fmt.Sprintf("0x%02x ('%c')", f.key, f.key))
		}
		if pos+3 > len(data) {
			return nil, bitErr(field+" length", pos+1, "file truncated inside the 2-byte length", fmt.Sprintf("%d bytes left", len(data)-pos-1), "2 bytes")
		}
		n := int(binary.BigEndian.Uint16(data[pos+1:]))
		start := pos + 3
		if n == 0 {
			return nil, bitErr(field+" length", pos+1, "empty field", "0", "at least 1 (the trailing NUL)")
		}
		if start+n > len(data) {
			return nil, bitErr(field+" length", pos+1, "length runs past the end of the file", strconv.Itoa(n), fmt.Sprintf("≤ %d bytes left", len(data)-start))
		}
		v := data[start : start+n]
		if v[n-1] != 0 {
			return nil, bitErr(field, start+n-1, "string not NUL-terminated", fmt.Sprintf("0x%02x", v[n-1]), "0x00")
		}
		if j := bytes.IndexByte(v, 0); j != n-1 {
			return nil, bitErr(field, start+j, "NUL inside the string", "", "one NUL at the end")
		}
		s := string(v[:n-1])
		for j, r := range s {
			if !unicode.IsPrint(r) {
				return nil, bitErr(field, start+j, "non-printable character", strconv.QuoteRune(r), "printable text")
			}
		}
		values[i], offsets[i] = s, start
		pos = start + n
	}
	bf.DesignField, bf.Part, bf.Date, bf.Time = values[0], values[1], values[2], values[3]
	if err := bf.splitDesign(offsets[0]); err != nil {
		return nil, err
	}
	if _, err := time.Parse("2006/01/02", bf.Date); err != nil {
		return nil, bitErr("'c' (date)", offsets[2], "not a date", strconv.Quote(bf.Date), `"YYYY/MM/DD"`)
	}
	if _, err := time.Parse("15:04:05", bf.Time); err != nil {
		return nil, bitErr("'d' (time)", offsets[3], "not a time of day", strconv.Quote(bf.Time), `"HH:MM:SS"`)
	}
	if pos >= len(data) {
		return nil, bitErr("'e' (data) key", pos, "file truncated before the data field", "end of file", "key 0x65")
	}
	if data[pos] != 'e' {
		return nil, bitErr("'e' (data) key", pos, "unexpected field key", fmt.Sprintf("0x%02x", data[pos]), "0x65 ('e')")
	}
	if pos+5 > len(data) {
		return nil, bitErr("'e' (data) length", pos+1, "file truncated inside the 4-byte length", fmt.Sprintf("%d bytes left", len(data)-pos-1), "4 bytes")
	}
	n := int64(binary.BigEndian.Uint32(data[pos+1:]))
	start := pos + 5
	if n == 0 {
		return nil, bitErr("'e' (data) length", pos+1, "no configuration data", "0", "at least 4 bytes")
	}
	if int64(start)+n > int64(len(data)) {
		return nil, bitErr("'e' (data) length", pos+1, "length runs past the end of the file", strconv.FormatInt(n, 10), fmt.Sprintf("≤ %d bytes left", len(data)-start))
	}
	bf.DataOffset, bf.DataLength = start, int(n)
	bf.Data = data[start : start+int(n)]
	bf.Trailing = len(data) - start - int(n)
	sync, err := findSync(bf.Data)
	if err != nil {
		return nil, bitErr("'e' (data)", start, err.Error(), "", "")
	}
	bf.SyncOffset = sync
	return bf, nil
}

// splitDesign splits Vivado's "<design>;UserID=0X…;Version=…" field.
func (bf *BitFile) splitDesign(off int) error {
	parts := strings.Split(bf.DesignField, ";")
	bf.DesignName = parts[0]
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue // not one of Vivado's attributes; the design field keeps it
		}
		switch k {
		case "UserID":
			h := strings.TrimPrefix(strings.TrimPrefix(v, "0X"), "0x")
			u, err := strconv.ParseUint(h, 16, 32)
			if err != nil {
				return bitErr("'a' (design) UserID", off+strings.Index(bf.DesignField, "UserID="), "not a 32-bit hex number", strconv.Quote(v), `"0X" and up to 8 hex digits`)
			}
			bf.UserID = fmt.Sprintf("0x%08x", u)
		case "Version":
			bf.ToolVersion = v
		}
	}
	return nil
}

// findSync returns the 4-byte-aligned offset of SyncWord within the first
// MaxSyncSearch bytes of data.
func findSync(data []byte) (int, error) {
	lim := min(len(data), MaxSyncSearch)
	swapped := -1
	for i := 0; i+4 <= lim; i += 4 {
		w := data[i : i+4]
		if w[0] == SyncWord[0] && w[1] == SyncWord[1] && w[2] == SyncWord[2] && w[3] == SyncWord[3] {
			return i, nil
		}
		if swapped < 0 && w[0] == SyncWord[3] && w[1] == SyncWord[2] && w[2] == SyncWord[1] && w[3] == SyncWord[0] {
			swapped = i
		}
	}
	if swapped >= 0 {
		return 0, fmt.Errorf("sync word aa995566 not found, but its byte-swapped form 665599aa is at data offset %d: this is a Zynq-7000 .bin, not .bit data", swapped)
	}
	return 0, fmt.Errorf("sync word aa995566 not found at any 4-byte-aligned offset in the first %d bytes of configuration data", lim)
}

// BitSpec describes a .bit file for GenerateBit.
type BitSpec struct {
	Design      string // design name
	UserID      uint32 // written as UserID=0X%08X when ToolVersion is set
	ToolVersion string // "2023.2"; empty writes an ISE-style design field with the name only
	Part        string
	Date        string // "YYYY/MM/DD"
	Time        string // "HH:MM:SS"
	// Data is the configuration data; nil generates ConfigWords words of a
	// 7-series-style packet stream (SyntheticConfigData) from Seed.
	Data        []byte
	ConfigWords int
	Seed        uint64
}

// GenerateBit writes a .bit file that follows the format ParseBit reads.
// It is the project's own generator of test files: kvloom ships no vendor
// bitstreams.
func GenerateBit(s BitSpec) ([]byte, error) {
	design := s.Design
	if s.ToolVersion != "" {
		design = fmt.Sprintf("%s;UserID=0X%08X;Version=%s", s.Design, s.UserID, s.ToolVersion)
	}
	data := s.Data
	if data == nil {
		data = SyntheticConfigData(s.ConfigWords, s.Seed)
	}
	out := append([]byte(nil), bitPrefix...)
	for i, v := range []string{design, s.Part, s.Date, s.Time} {
		if len(v)+1 > 0xffff || strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("generate .bit: field '%c' too long or holds a NUL", bitFields[i].key)
		}
		out = append(out, bitFields[i].key)
		out = binary.BigEndian.AppendUint16(out, uint16(len(v)+1))
		out = append(out, v...)
		out = append(out, 0)
	}
	if uint64(len(data)) > 0xffffffff {
		return nil, fmt.Errorf("generate .bit: %d bytes of data do not fit the 4-byte length", len(data))
	}
	out = append(out, 'e')
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	return append(out, data...), nil
}

// SyntheticConfigData returns a configuration stream shaped like a 7-series
// one (UG470): dummy words, the bus-width detection pattern, the sync word,
// type-1 writes of CMD, IDCODE and FDRI, a type-2 burst of words frame
// words of pseudo-random frame data from seed, and DESYNC. It configures no
// real device; it exercises parsers and loaders with realistic structure.
func SyntheticConfigData(words int, seed uint64) []byte {
	be := binary.BigEndian
	var out []byte
	put := func(ws ...uint32) {
		for _, w := range ws {
			out = be.AppendUint32(out, w)
		}
	}
	for range 8 {
		put(0xffffffff)
	}
	put(0x000000bb, 0x11220044, 0xffffffff, 0xffffffff)
	out = append(out, SyncWord[:]...)
	put(0x20000000)             // NOOP
	put(0x30008001, 0x00000007) // CMD RCRC
	put(0x20000000, 0x20000000)
	put(0x30018001, 0x0362d093)                          // IDCODE (a 7a35t's)
	put(0x30008001, 0x00000001)                          // CMD WCFG
	put(0x30004000, 0x50000000|uint32(words&0x07ffffff)) // FDRI, then a type-2 burst
	x := seed | 1
	for range words {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		put(uint32(x) | 1)
	}
	put(0x30008001, 0x0000000d) // CMD DESYNC
	for range 4 {
		put(0x20000000)
	}
	return out
}
