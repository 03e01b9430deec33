package bitstream_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
)

// testBit returns a generated .bit file for part.
func testBit(t testing.TB, part string, seed uint64) []byte {
	t.Helper()
	b, err := bitstream.GenerateBit(bitstream.BitSpec{
		Design: "kvloom_matcher", UserID: 0x4b564c4d, ToolVersion: "2023.2",
		Part: part, Date: "2025/01/02", Time: "03:04:05", ConfigWords: 64, Seed: seed,
	})
	if err != nil {
		t.Fatalf("generate .bit: %v", err)
	}
	return b
}

// testXclbin returns a generated xclbin2 holding a .bit.
func testXclbin(t testing.TB, vbnv string, iface [16]byte, seed uint64) []byte {
	t.Helper()
	b, err := bitstream.GenerateXclbin(bitstream.XclbinSpec{
		PlatformVBNV: vbnv, InterfaceUUID: iface, UUID: [16]byte{0xaa, byte(seed), 0xbb, 1}, TimeStamp: 1735787045,
		VersionMajor: 2, VersionMinor: 16, VersionPatch: 204,
		Bitstream: testBit(t, "xcu55c-fsvh2892-2L-e", seed),
		Mem:       []bitstream.XclbinMem{{Type: 6, Used: true, SizeKB: 256 << 10, Base: 0x4000000000, Tag: "HBM[0]"}},
		IPs:       []bitstream.XclbinIP{{Type: 1, Properties: 0x0100, Base: 0x800000, Name: "kvmatch:kvmatch_1"}},
		Clocks:    []bitstream.XclbinClock{{FreqMHz: 300, Type: 1, Name: "DATA_CLK"}, {FreqMHz: 500, Type: 2, Name: "KERNEL_CLK"}},
	})
	if err != nil {
		t.Fatalf("generate xclbin: %v", err)
	}
	return b
}

// wantErr fails t unless err is target and its message holds every want.
func wantErr(t testing.TB, err, target error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", target)
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("error %q is not %v", err, target)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}
