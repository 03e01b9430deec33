package gpu

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func TestParseLinkSpeed(t *testing.T) {
	for _, c := range []struct {
		in   string
		want LinkSpeed
		gen  int
	}{
		{"2.5 GT/s PCIe\n", 2500, 1},
		{"5.0 GT/s PCIe", 5000, 2},
		{"5 GT/s", 5000, 2},
		{"8.0 GT/s PCIe\n", 8000, 3},
		{"16.0 GT/s PCIe", 16000, 4},
		{"32.0 GT/s PCIe", 32000, 5},
		{"64.0 GT/s PCIe", 64000, 6},
		{"Unknown\n", 0, 0},
		{"Unknown speed", 0, 0},
	} {
		got, err := ParseLinkSpeed(c.in)
		if err != nil || got != c.want || got.Gen() != c.gen {
			t.Errorf("ParseLinkSpeed(%q) = %v (gen %d), %v; want %v gen %d", c.in, got, got.Gen(), err, c.want, c.gen)
		}
	}
	for _, bad := range []string{"", "fast", "8.0GT/s", "8.0 Gb/s", "8.00 GT/s", "-8 GT/s", "0 GT/s", "999 GT/s", ".5 GT/s"} {
		if v, err := ParseLinkSpeed(bad); !errors.Is(err, ErrMalformed) || v != 0 {
			t.Errorf("ParseLinkSpeed(%q) = %v, %v; want ErrMalformed", bad, v, err)
		}
	}
}

func TestParseCPUList(t *testing.T) {
	for _, c := range []struct{ in, canon string }{
		{"0-15,32-47\n", "0-15,32-47"},
		{"", ""},
		{"3", "3"},
		{"5,1-2,2,7-7", "1-2,5,7"},
	} {
		got, err := ParseCPUList(c.in)
		if err != nil || got.String() != c.canon {
			t.Errorf("ParseCPUList(%q) = %q, %v; want %q", c.in, got, err, c.canon)
		}
	}
	for _, bad := range []string{"a", "3-1", "1-", ",", "70000", "0-65536", "1,,2"} {
		if v, err := ParseCPUList(bad); !errors.Is(err, ErrMalformed) || v != nil {
			t.Errorf("ParseCPUList(%q) = %v, %v; want ErrMalformed", bad, v, err)
		}
	}
}

func TestParseResource(t *testing.T) {
	in := "0x00000000fb000000 0x00000000fbffffff 0x0000000000040200\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
	rs, err := ParseResource(in)
	if err != nil || len(rs) != 2 || rs[0].Size() != 0x1000000 || rs[1].Size() != 0 {
		t.Fatalf("ParseResource = %+v, %v", rs, err)
	}
	if FormatResource(rs) != in {
		t.Fatalf("FormatResource does not round-trip:\n%s", FormatResource(rs))
	}
	for _, bad := range []string{"", "0x1 0x2", "0x2 0x1 0x0", "zz 0x1 0x0"} {
		if v, err := ParseResource(bad); !errors.Is(err, ErrMalformed) || v != nil {
			t.Errorf("ParseResource(%q) = %v, %v; want ErrMalformed", bad, v, err)
		}
	}
}

// pcieConfig builds a config header whose capability list runs through
// caps (id, next) pairs starting at 0x40.
func pcieConfig(size int, portType, speed, width int) []byte {
	c := make([]byte, size)
	binary.LittleEndian.PutUint16(c[0x06:], 0x10)
	c[0x34] = 0x40
	c[0x40], c[0x41] = 0x01, 0x50 // power management, then PCIe
	c[0x50], c[0x51] = 0x10, 0x00
	binary.LittleEndian.PutUint16(c[0x52:], uint16(2|portType<<4))
	binary.LittleEndian.PutUint32(c[0x5c:], uint32(speed|width<<4))
	binary.LittleEndian.PutUint16(c[0x62:], uint16(speed|width<<4))
	return c
}

func TestParsePCIeCap(t *testing.T) {
	c, found, err := ParsePCIeCap(pcieConfig(256, PortDownstream, 4, 16))
	if err != nil || !found || c.PortType != PortDownstream || c.LinkSpeed != 16000 || c.LinkWidth != 16 || c.MaxSpeed != 16000 {
		t.Fatalf("ParsePCIeCap = %+v, %v, %v", c, found, err)
	}
	// 64-byte unprivileged read: the list continues out of sight.
	if _, found, err := ParsePCIeCap(pcieConfig(256, 0, 3, 8)[:64]); err != nil || found {
		t.Fatalf("short config: found %v, %v", found, err)
	}
	loop := pcieConfig(256, 0, 3, 8)
	loop[0x40], loop[0x41] = 0x01, 0x40 // points at itself
	if _, _, err := ParsePCIeCap(loop); !errors.Is(err, ErrMalformed) {
		t.Fatalf("looping capability list: %v, want ErrMalformed", err)
	}
	bad := pcieConfig(256, 0, 3, 8)
	bad[0x41] = 0x20 // into the header
	if _, _, err := ParsePCIeCap(bad); !errors.Is(err, ErrMalformed) {
		t.Fatalf("pointer into the header: %v, want ErrMalformed", err)
	}
	if _, _, err := ParsePCIeCap(make([]byte, 10)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("10-byte config: %v, want ErrMalformed", err)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		vendor, device uint16
		class          uint32
		want           Kind
	}{
		{0x10de, 0x2330, 0x030200, KindGPU},
		{0x10de, 0x22a3, 0x068000, KindBridge}, // NVSwitch
		{0x10de, 0x10f0, 0x040300, KindOther},  // a GPU's HDMI audio function
		{0x15b3, 0x1021, 0x020000, KindNIC},
		{0x15b3, 0xa2dc, 0x020000, KindNIC},
		{0x8086, 0x1572, 0x020000, KindNIC},
		{0x19ee, 0x4000, 0x020000, KindNIC},
		{0x10ee, 0x5020, 0x120000, KindFPGA},
		{0x8086, 0x0b30, 0x120000, KindFPGA},
		{0x144d, 0xa824, 0x010802, KindNVMe},
		{0x1af4, 0x1042, 0x010000, KindOther},
	} {
		if got := Classify(c.vendor, c.device, c.class); got != c.want {
			t.Errorf("Classify(%04x:%04x, %06x) = %s, want %s", c.vendor, c.device, c.class, got, c.want)
		}
	}
	if !IsBlueField(0x15b3, 0xa2d6) || IsBlueField(0x15b3, 0x1017) {
		t.Error("IsBlueField is wrong for a2d6 or 1017")
	}
}

func FuzzParseLinkSpeed(f *testing.F) {
	for _, s := range []string{"8.0 GT/s PCIe\n", "2.5 GT/s", "Unknown", "16 GT/s", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseLinkSpeed(s)
		if err != nil {
			if v != 0 {
				t.Fatalf("error with a non-zero result %v", v)
			}
			return
		}
		back, err := ParseLinkSpeed(v.String())
		if err != nil || back != v {
			t.Fatalf("%q → %v → %q → %v, %v", s, v, v.String(), back, err)
		}
	})
}

func FuzzParseCPUList(f *testing.F) {
	for _, s := range []string{"0-15,32-47\n", "", "3", "1-2,5", "9-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseCPUList(s)
		if err != nil {
			if v != nil {
				t.Fatalf("error with a non-nil result %v", v)
			}
			return
		}
		if !slices.IsSorted(v) || len(slices.Compact(slices.Clone(v))) != len(v) {
			t.Fatalf("set %v not sorted and unique", v)
		}
		back, err := ParseCPUList(v.String())
		if err != nil || !slices.Equal(back, v) {
			t.Fatalf("%q → %v → %q → %v, %v", s, v, v.String(), back, err)
		}
	})
}

func FuzzParseResource(f *testing.F) {
	f.Add("0x00000000fb000000 0x00000000fbffffff 0x0000000000040200\n0x0000000000000000 0x0000000000000000 0x0000000000000000\n")
	f.Add("0x1 0x2 0x3")
	f.Add("1 2")
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseResource(s)
		if err != nil {
			if rs != nil {
				t.Fatalf("error with a non-nil result")
			}
			return
		}
		back, err := ParseResource(FormatResource(rs))
		if err != nil || !slices.Equal(back, rs) {
			t.Fatalf("round trip: %v → %v, %v", rs, back, err)
		}
	})
}

func FuzzParsePCIeCap(f *testing.F) {
	f.Add(pcieConfig(256, PortRoot, 4, 16))
	f.Add(pcieConfig(256, PortEndpoint, 3, 8)[:64])
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, found, err := ParsePCIeCap(b)
		if err != nil || !found {
			if c != (PCIeCap{}) {
				t.Fatalf("no capability but a non-zero result %+v (err %v)", c, err)
			}
			return
		}
		if c.PortType < 0 || c.PortType > 15 || c.LinkWidth > 63 || c.MaxWidth > 63 {
			t.Fatalf("decoded fields out of their bit ranges: %+v", c)
		}
	})
}

func FuzzParseSysfsNumbers(f *testing.F) {
	for _, s := range []string{"16\n", "-1\n", "0", "33", "0x10de\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if w, err := ParseLinkWidth(s); err == nil && (w < 0 || w > 32) {
			t.Fatalf("width %d out of range", w)
		}
		if n, err := ParseNUMANode(s); err == nil && (n < -1 || n > 1<<16) {
			t.Fatalf("numa node %d out of range", n)
		}
		if v, err := parseHexID("vendor", s, 16); err == nil && v > 0xffff {
			t.Fatalf("16-bit id %#x out of range", v)
		} else if err != nil && v != 0 {
			t.Fatalf("error with a non-zero result")
		}
	})
}

func TestParseLineRates(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{{"100000\n", 100000}, {"-1\n", 0}, {"25000", 25000}} {
		if got, err := ParseNetSpeed(c.in); err != nil || got != c.want {
			t.Errorf("ParseNetSpeed(%q) = %d, %v", c.in, got, err)
		}
	}
	for _, bad := range []string{"", "fast", "-2", "99999999999"} {
		if _, err := ParseNetSpeed(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseNetSpeed(%q): %v, want ErrMalformed", bad, err)
		}
	}
	for _, c := range []struct {
		in   string
		want float64
	}{{"200 Gb/sec (4X HDR)\n", 200}, {"2.5 Gb/sec (1X SDR)", 2.5}, {"400 Gb/sec (4X NDR)", 400}} {
		if got, err := ParseIBRate(c.in); err != nil || got != c.want {
			t.Errorf("ParseIBRate(%q) = %v, %v", c.in, got, err)
		}
	}
	for _, bad := range []string{"", "200", "200 Mb/sec", "NaN Gb/sec", "1e3 Gb/sec", "-1 Gb/sec"} {
		if _, err := ParseIBRate(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseIBRate(%q): %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzParseLineRates(f *testing.F) {
	for _, s := range []string{"200 Gb/sec (4X HDR)", "100000", "-1", "2.5 Gb/sec"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if v, err := ParseIBRate(s); err != nil && v != 0 {
			t.Fatal("error with a non-zero result")
		} else if err == nil && (v < 0 || v > 100_000 || v != v) {
			t.Fatalf("rate %v out of range", v)
		}
		if v, err := ParseNetSpeed(s); err != nil && v != 0 {
			t.Fatal("error with a non-zero result")
		} else if err == nil && (v < 0 || v > 10_000_000) {
			t.Fatalf("speed %d out of range", v)
		}
	})
}
