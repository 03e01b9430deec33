package bitstream_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

func TestParseBit(t *testing.T) {
	b := testBit(t, "xczu9eg-ffvb1156-2-e", 7)
	bf, err := bitstream.ParseBit(b)
	if err != nil {
		t.Fatalf("ParseBit: %v", err)
	}
	want := bitstream.BitFile{
		DesignField: "kvloom_matcher;UserID=0X4B564C4D;Version=2023.2", DesignName: "kvloom_matcher",
		UserID: "0x4b564c4d", ToolVersion: "2023.2", Part: "xczu9eg-ffvb1156-2-e", Date: "2025/01/02", Time: "03:04:05",
	}
	got := *bf
	got.DataOffset, got.DataLength, got.SyncOffset, got.Data = 0, 0, 0, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("header:\n got %+v\nwant %+v", got, want)
	}
	// 8 dummy words, the bus-width pattern and two more dummy words come
	// before the sync word.
	if bf.SyncOffset != 48 || !bytes.Equal(bf.Data[48:52], []byte{0xaa, 0x99, 0x55, 0x66}) {
		t.Fatalf("sync word at data offset %d", bf.SyncOffset)
	}
	if bf.DataOffset+bf.DataLength != len(b) || bf.Trailing != 0 {
		t.Fatalf("data [%d, +%d) trailing %d in a %d-byte file", bf.DataOffset, bf.DataLength, bf.Trailing, len(b))
	}

	// The hardware reference's annotated dump (xc3sprog bitfile.h) parses
	// the same way: ISE design field without attributes.
	ise, err := bitstream.GenerateBit(bitstream.BitSpec{Design: "xform.ncd", Part: "v1000efg860", Date: "2001/08/10", Time: "06:55:04", ConfigWords: 4})
	if err != nil {
		t.Fatal(err)
	}
	wantHead, err := hex.DecodeString(strings.NewReplacer(" ", "", "\n", "", "\t", "").Replace(`
		00 09 0f f0 0f f0 0f f0 0f f0 00 00 01 61 00 0a
		78 66 6f 72 6d 2e 6e 63 64 00 62 00 0c 76 31 30
		30 30 65 66 67 38 36 30 00 63 00 0b 32 30 30 31
		2f 30 38 2f 31 30 00 64 00 09 30 36 3a 35 35 3a
		30 34 00 65`))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(ise, wantHead) {
		t.Fatalf("generated header differs from the reference dump:\n got %x\nwant %x", ise[:len(wantHead)], wantHead)
	}
	ibf, err := bitstream.ParseBit(ise)
	if err != nil || ibf.DesignName != "xform.ncd" || ibf.UserID != "" || ibf.Part != "v1000efg860" {
		t.Fatalf("ISE-style file: %+v, %v", ibf, err)
	}
}

func TestParseBitErrors(t *testing.T) {
	good := testBit(t, "xc7a35tcsg324-1", 3)
	bf, err := bitstream.ParseBit(good)
	if err != nil {
		t.Fatal(err)
	}
	eOff := bf.DataOffset - 5 // the 'e' key
	set := func(off int, v ...byte) []byte {
		c := bytes.Clone(good)
		copy(c[off:], v)
		return c
	}
	noSync := bytes.Clone(good)
	copy(noSync[bf.DataOffset+bf.SyncOffset:], []byte{0, 0, 0, 0})
	swapped := bytes.Clone(good)
	copy(swapped[bf.DataOffset+bf.SyncOffset:], []byte{0x66, 0x55, 0x99, 0xaa})
	cases := []struct {
		name  string
		input []byte
		want  []string
	}{
		{"empty", nil, []string{"prefix at offset 0", "truncated inside the fixed header"}},
		{"prefix", set(3, 0x00), []string{"prefix at offset 3", "got 0x00, want 0xf0"}},
		{"truncated before a", good[:13], []string{"'a' (design) key at offset 13", "truncated before the field"}},
		{"truncated length", good[:15], []string{"'a' (design) length at offset 14", "truncated inside the 2-byte length"}},
		{"a length past end", set(14, 0xff, 0xff), []string{"'a' (design) length at offset 14", "length runs past the end of the file", "got 65535"}},
		{"a empty", set(14, 0, 0), []string{"'a' (design) length", "empty field"}},
		{"wrong key", set(13, 'b'), []string{"'a' (design) key at offset 13", "unexpected field key (got 0x62, want 0x61 ('a'))"}},
		{"missing NUL", set(bytes.IndexByte(good[16:], 0)+16, 'x'), []string{"'a' (design)", "not NUL-terminated"}},
		{"bad date", bytes.Replace(good, []byte("2025/01/02"), []byte("2025-01-02"), 1), []string{fmt.Sprintf("'c' (date) at offset %d", bytes.Index(good, []byte("2025/01/02"))), "not a date"}},
		{"bad user id", bytes.Replace(good, []byte("UserID=0X4B564C4D"), []byte("UserID=0XZZ564C4D"), 1), []string{fmt.Sprintf("UserID at offset %d", bytes.Index(good, []byte("UserID="))), "not a 32-bit hex number"}},
		{"no e", set(eOff, 'f'), []string{"'e' (data) key", "got 0x66, want 0x65 ('e')"}},
		{"e truncated", good[:eOff+3], []string{"'e' (data) length", "truncated inside the 4-byte length"}},
		{"data past end", set(eOff+1, 0x7f, 0xff, 0xff, 0xff), []string{"'e' (data) length", "length runs past the end of the file", "got 2147483647"}},
		{"data truncated", good[:len(good)-1], []string{"'e' (data) length", "length runs past the end"}},
		{"no sync", noSync, []string{"sync word aa995566 not found", "first"}},
		{"swapped sync", swapped, []string{"byte-swapped form 665599aa", "Zynq-7000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bf, err := bitstream.ParseBit(tc.input)
			if bf != nil {
				t.Fatalf("got a result with error %v", err)
			}
			wantErr(t, err, bitstream.ErrMalformed, append([]string{"xilinx-bit: "}, tc.want...)...)
		})
	}
	// Bytes after the data are reported, not rejected: vendor tools only warn.
	bf, err = bitstream.ParseBit(append(bytes.Clone(good), 1, 2, 3))
	if err != nil || bf.Trailing != 3 {
		t.Fatalf("trailing bytes: %+v, %v", bf, err)
	}
}

func TestParseXclbin(t *testing.T) {
	iface := [16]byte{0xd8, 0x42, 0x4d, 0xc4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	b := testXclbin(t, "xilinx_u55c_gen3x16_xdma_base_3", iface, 9)
	x, err := bitstream.ParseXclbin(b)
	if err != nil {
		t.Fatalf("ParseXclbin: %v", err)
	}
	if x.PlatformVBNV != "xilinx_u55c_gen3x16_xdma_base_3" || x.InterfaceUUID != hex.EncodeToString(iface[:]) || x.Length != uint64(len(b)) ||
		x.Version != "2.16.204" || x.ModeName != "FLAT" || x.SignatureLength != -1 || x.TimeStamp != 1735787045 {
		t.Fatalf("header: %+v", x)
	}
	var kinds []string
	for _, s := range x.Sections {
		kinds = append(kinds, s.KindName)
		if s.Offset%8 != 0 {
			t.Errorf("section %s at unaligned offset %d", s.KindName, s.Offset)
		}
	}
	if got := len(kinds); got != 4 || kinds[0] != "BITSTREAM" || kinds[1] != "MEM_TOPOLOGY" || kinds[2] != "IP_LAYOUT" || kinds[3] != "CLOCK_FREQ_TOPOLOGY" {
		t.Fatalf("sections %v", kinds)
	}
	if len(x.MemTopology) != 1 || x.MemTopology[0].Tag != "HBM[0]" || x.MemTopology[0].SizeKB != 256<<10 {
		t.Errorf("mem topology %+v", x.MemTopology)
	}
	if len(x.IPLayout) != 1 || x.IPLayout[0].Name != "kvmatch:kvmatch_1" || x.IPLayout[0].Base != 0x800000 {
		t.Errorf("ip layout %+v", x.IPLayout)
	}
	if len(x.Clocks) != 2 || x.Clocks[1].FreqMHz != 500 || x.Clocks[1].Name != "KERNEL_CLK" {
		t.Errorf("clocks %+v", x.Clocks)
	}
	bs, ok := x.Section(bitstream.XclbinBitstream)
	if !ok {
		t.Fatal("no BITSTREAM section")
	}
	if bf, err := bitstream.ParseBit(bs.Data); err != nil || bf.Part != "xcu55c-fsvh2892-2L-e" {
		t.Fatalf("BITSTREAM section as .bit: %+v, %v", bf, err)
	}
}

func TestParseXclbinErrors(t *testing.T) {
	good := testXclbin(t, "xilinx_u55c_gen3x16_xdma_base_3", [16]byte{1}, 1)
	x, err := bitstream.ParseXclbin(good)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	set := func(off int, v ...byte) []byte {
		c := bytes.Clone(good)
		copy(c[off:], v)
		return c
	}
	u32 := func(v uint32) []byte { return le.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return le.AppendUint64(nil, v) }
	sec := func(i int) int { return 456 + 40*i }
	mem := int(x.Sections[1].Offset)
	cases := []struct {
		name  string
		input []byte
		want  []string
	}{
		{"magic", set(6, '3'), []string{"m_magic at offset 0", "not an xclbin2 file"}},
		{"short", good[:300], []string{"axlf header", "truncated inside the header"}},
		{"signature length", set(8, u32(300)...), []string{"m_signature_length at offset 8", "got 300"}},
		{"length longer", set(304, u64(uint64(len(good)+8))...), []string{"m_length at offset 304", "length runs past the end of the file"}},
		{"file longer", append(bytes.Clone(good), make([]byte, 8)...), []string{"m_length", "file is longer than m_length"}},
		{"too many sections", set(448, u32(0x10001)...), []string{"m_numSections at offset 448", "too many sections"}},
		{"table past end", set(448, u32(1000)...), []string{"m_sections at offset 456", "section table runs past the end"}},
		{"vbnv unterminated", set(352, bytes.Repeat([]byte{'x'}, 64)...), []string{"m_platformVBNV at offset 352", "not a NUL-terminated"}},
		{"section name unterminated", set(sec(0)+4, bytes.Repeat([]byte{'n'}, 16)...), []string{"m_sections[0].m_sectionName", "not a NUL-terminated"}},
		{"section past end", set(sec(1)+32, u64(1<<40)...), []string{"m_sections[1].m_sectionSize at offset 528", "section runs past the end"}},
		{"section unaligned", set(sec(1)+24, u64(x.Sections[1].Offset+4)...), []string{"m_sections[1].m_sectionOffset", "not 8-byte aligned"}},
		{"section over header", set(sec(0)+24, u64(8)...), []string{"m_sections[0].m_sectionOffset", "overlaps the header or section table"}},
		{"sections overlap", set(sec(2)+24, u64(x.Sections[1].Offset)...), []string{"m_sections[2].m_sectionOffset", "overlaps section 1"}},
		{"mem count", set(mem, u32(1000)...), []string{"MEM_TOPOLOGY m_count", "entries run past the end of the section", "got 1000"}},
		{"mem count negative", set(mem, u32(0xffffffff)...), []string{"MEM_TOPOLOGY m_count", "negative count"}},
		{"mem tag", set(mem+8+24, bytes.Repeat([]byte{'t'}, 16)...), []string{"MEM_TOPOLOGY m_mem_data[0].m_tag", "not a NUL-terminated"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x, err := bitstream.ParseXclbin(tc.input)
			if x != nil {
				t.Fatalf("got a result with error %v", err)
			}
			wantErr(t, err, bitstream.ErrMalformed, append([]string{"xclbin2: "}, tc.want...)...)
		})
	}
}

// testBPFSource is a tiny XDP program with a map, compiled with clang at
// test time (testutil.BuildBPFObject): it counts packets and returns
// XDP_PASS, or the action given by ACTION.
const testBPFSource = `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#ifndef ACTION
#define ACTION XDP_PASS
#endif
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} kvl_counts SEC(".maps");

SEC("xdp") int kvl_match(struct xdp_md *ctx) {
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&kvl_counts, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	return ACTION;
}
char _license[] SEC("license") = "GPL";
`

func bpfObject(t testing.TB, action string) []byte {
	t.Helper()
	return testutil.BuildBPFObject(t, "#define ACTION "+action+"\n"+testBPFSource)
}

func TestInspectEBPF(t *testing.T) {
	obj := bpfObject(t, "XDP_PASS")
	info, err := bitstream.InspectEBPF(obj)
	if err != nil {
		t.Fatalf("InspectEBPF: %v", err)
	}
	if info.License != "GPL" || len(info.Programs) != 1 || info.Programs[0].Name != "kvl_match" || info.Programs[0].Type != "XDP" || info.Programs[0].Section != "xdp" {
		t.Fatalf("programs: %+v", info)
	}
	if len(info.Maps) != 1 || info.Maps[0].Name != "kvl_counts" || info.Maps[0].Type != "Array" || info.Maps[0].MaxEntries != 4 || info.Maps[0].ValueSize != 8 {
		t.Fatalf("maps: %+v", info.Maps)
	}
	noLicense := testutil.BuildBPFObject(t, `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int p(struct xdp_md *ctx) { return XDP_PASS; }
`)
	_, err = bitstream.InspectEBPF(noLicense)
	wantErr(t, err, bitstream.ErrMalformed, "ebpf-elf: license", "no license section")
	_, err = bitstream.InspectEBPF([]byte("\x7fELF not really"))
	wantErr(t, err, bitstream.ErrMalformed, "ebpf-elf: elf", "cilium/ebpf cannot read the object")
	_, err = bitstream.InspectEBPF(obj[:len(obj)/2])
	wantErr(t, err, bitstream.ErrMalformed, "ebpf-elf")
}

func TestInspect(t *testing.T) {
	key, _ := testutil.ImageKey(t)
	img := fpgaImage(t, key)
	r, err := bitstream.InspectFile(img.Bytes())
	if err != nil {
		t.Fatalf("InspectFile: %v", err)
	}
	if r.Format != "kvloom-image" || r.Image.ID != img.ID() || len(r.Image.Sections) != 2 {
		t.Fatalf("report %+v", r)
	}
	s := r.Image.Sections[0]
	if s.Vendor == nil || s.Vendor.Bit == nil || s.Vendor.Bit.Part != "xczu9eg-ffvb1156-2-e" {
		t.Fatalf("bit section report %+v", s.Vendor)
	}
	if r.Image.Sections[1].Vendor != nil {
		t.Fatalf("raw section got a vendor report")
	}
	xr, err := bitstream.InspectFile(testXclbin(t, "p", [16]byte{}, 1))
	if err != nil || xr.Format != "xclbin2" || xr.Vendor.XclbinBit == nil || xr.Vendor.XclbinBit.Part != "xcu55c-fsvh2892-2L-e" {
		t.Fatalf("xclbin report %+v, %v", xr, err)
	}
	br, err := bitstream.InspectFile(testBit(t, "xc7a35t", 1))
	if err != nil || br.Format != "xilinx-bit" {
		t.Fatalf("bit report %+v, %v", br, err)
	}
	er, err := bitstream.InspectFile(bpfObject(t, "XDP_PASS"))
	if err != nil || er.Format != "ebpf-elf" || er.Vendor.EBPF.Programs[0].Name != "kvl_match" {
		t.Fatalf("ebpf report %+v, %v", er, err)
	}
	_, err = bitstream.InspectFile([]byte("hello world"))
	wantErr(t, err, bitstream.ErrMalformed, "unknown file format")
	_, err = bitstream.InspectFile(testBit(t, "xc7a35t", 1)[:30])
	wantErr(t, err, bitstream.ErrMalformed, "inspect xilinx-bit file")
}
