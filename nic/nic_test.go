package nic_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s did not panic", what)
		}
	}()
	f()
}

func TestRegion(t *testing.T) {
	mem := make([]byte, 64)
	r, err := nic.NewRegion(mem)
	if err != nil {
		t.Fatal(err)
	}
	r.Store32(4, 0x11223344)
	r.Store64(8, 0x0102030405060708)
	if !bytes.Equal(mem[4:8], []byte{0x44, 0x33, 0x22, 0x11}) || binary.LittleEndian.Uint64(mem[8:]) != 0x0102030405060708 {
		t.Errorf("stores are not little-endian in memory: % x", mem[:16])
	}
	if r.Load32(4) != 0x11223344 || r.Load64(8) != 0x0102030405060708 {
		t.Errorf("loads do not read back the stores")
	}
	toks := []uint32{1, 0xdeadbeef, 7}
	r.WriteTokens(16, toks)
	got := make([]uint32, 3)
	r.ReadTokens(16, got)
	if !slices.Equal(got, toks) || binary.LittleEndian.Uint32(mem[20:]) != 0xdeadbeef {
		t.Errorf("tokens round trip %v, memory % x", got, mem[16:28])
	}
	if view := r.Tokens(16, 3); !slices.Equal(view, toks) {
		t.Errorf("Tokens view = %v, want %v", view, toks)
	} else {
		mem[16] = 9 // the view aliases the memory
		if view[0] != 9 {
			t.Errorf("Tokens view does not alias the region")
		}
	}
	r.Zero(16, 12)
	if !bytes.Equal(mem[16:28], make([]byte, 12)) {
		t.Errorf("Zero left % x", mem[16:28])
	}
	mustPanic(t, "misaligned Load32", func() { r.Load32(2) })
	mustPanic(t, "Load64 past the end", func() { r.Load64(64) })
	mustPanic(t, "negative offset", func() { r.Store32(-4, 0) })
	mustPanic(t, "copy past the end", func() { r.Write(60, make([]byte, 8)) })
	if _, err := nic.NewRegion(make([]byte, 12)); err == nil {
		t.Errorf("NewRegion accepted a length that is not a multiple of 8")
	}
	if _, err := nic.NewRegion(make([]byte, 24)[4:20]); err == nil {
		t.Errorf("NewRegion accepted misaligned memory")
	}
}

// TestMapFileShares: two MAP_SHARED mappings of one file see each other's
// stores, which is what lets the simulator serve a fake BAR.
func TestMapFileShares(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resource0")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := nic.MapFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := nic.MapFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ro, err := nic.MapFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	a.Store32(0x100, 0xcafef00d)
	b.Write(0x200, []byte("doorbell"))
	if b.Load32(0x100) != 0xcafef00d || ro.Load32(0x100) != 0xcafef00d {
		t.Errorf("a store through one mapping is not seen through the others")
	}
	buf := make([]byte, 8)
	a.Read(0x200, buf)
	if string(buf) != "doorbell" || a.Size() != 4096 || ro.Writable() {
		t.Errorf("read %q, size %d, read-only mapping writable=%v", buf, a.Size(), ro.Writable())
	}
	mustPanic(t, "store to a read-only mapping", func() { ro.Store32(0, 1) })
	if err := a.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if _, err := nic.MapFile(filepath.Join(t.TempDir(), "absent"), true); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("map an absent file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := nic.MapFile(empty, true); err == nil {
		t.Errorf("mapped an empty file")
	}
}

func TestLayoutsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(b []byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
	}
	for range 100 {
		b := make([]byte, nic.ReqDescSize)
		fill(b)
		d := nic.DecodeReqDesc(b)
		out := make([]byte, nic.ReqDescSize)
		d.Encode(out)
		if !bytes.Equal(b, out) {
			t.Fatalf("REQ_DESC does not round trip")
		}
		b = make([]byte, nic.CplEntrySize)
		fill(b)
		e := nic.DecodeCplEntry(b)
		out = make([]byte, nic.CplEntrySize)
		e.Encode(out)
		if !bytes.Equal(b, out) {
			t.Fatalf("CPL_ENTRY does not round trip")
		}
		b = make([]byte, nic.TblRecordSize)
		fill(b)
		r := nic.DecodeTableRecord(b)
		out = make([]byte, nic.TblRecordSize)
		r.Encode(out)
		if !bytes.Equal(b, out) {
			t.Fatalf("TBL_RECORD does not round trip")
		}
	}
	// Field placement follows the register map.
	d := nic.ReqDesc{Tokens: 0x01020304, Buf: nic.DMADesc{Addr: 0x1122334455667788}}
	b := make([]byte, nic.ReqDescSize)
	d.Encode(b)
	if binary.LittleEndian.Uint32(b[nic.ReqDescTokens:]) != 0x01020304 || binary.LittleEndian.Uint64(b[nic.ReqDescBuf+nic.DMADescAddr:]) != 0x1122334455667788 {
		t.Errorf("REQ_DESC fields are not where the register map puts them: % x", b)
	}
	if nic.TableRecordLen(0) != nic.TblRecordSize || nic.TableRecordLen(1) != nic.TblRecordSize+16 || nic.TableRecordLen(4) != nic.TblRecordSize+16 || nic.TableRecordLen(5) != nic.TblRecordSize+32 {
		t.Errorf("TableRecordLen does not pad to 16 bytes")
	}
}

// TestRankEncoding: the encoding orders like the floats, so the device
// can compare ranks as integers.
func TestRankEncoding(t *testing.T) {
	vals := []float64{math.Inf(-1), -1e300, -2.5, -1, -math.SmallestNonzeroFloat64, 0, math.SmallestNonzeroFloat64, 0.5, 1, 3, 1e300, math.Inf(1)}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		vals = append(vals, rng.NormFloat64()*1e6)
	}
	for _, a := range vals {
		if got := nic.DecodeRank(nic.EncodeRank(a)); got != a {
			t.Errorf("DecodeRank(EncodeRank(%g)) = %g", a, got)
		}
		for _, b := range vals {
			if (a < b) != (nic.EncodeRank(a) < nic.EncodeRank(b)) {
				t.Errorf("rank order broken: %g < %g is %v, encoded %v", a, b, a < b, nic.EncodeRank(a) < nic.EncodeRank(b))
			}
		}
	}
	if !nic.RankIsNaN(nic.EncodeRank(math.NaN())) || nic.RankIsNaN(nic.EncodeRank(1)) {
		t.Errorf("RankIsNaN is wrong")
	}
}

// FuzzDecodeCplEntry: the driver decodes what the device writes; any 64
// bytes decode, and decoding then encoding gives them back.
func FuzzDecodeCplEntry(f *testing.F) {
	e := nic.CplEntry{Type: nic.CplMatch, Flags: nic.CplFlagPrefix, Slot: 3, Tag: 9, ReqOff: 10, Len: 64, Key: matcher.ChunkKey{1, 2}}
	b := make([]byte, nic.CplEntrySize)
	e.Encode(b)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < nic.CplEntrySize {
			return
		}
		e := nic.DecodeCplEntry(b)
		out := make([]byte, nic.CplEntrySize)
		e.Encode(out)
		if !bytes.Equal(out, b[:nic.CplEntrySize]) {
			t.Fatalf("CPL_ENTRY does not round trip: % x → %+v → % x", b[:nic.CplEntrySize], e, out)
		}
	})
}

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]nic.Spec{
		"auto":              {Auto: true},
		"sim":               {Kind: nic.KindSim},
		"sim:simnic":        {Kind: nic.KindSim, Address: "simnic"},
		"fpga:0000:3b:00.0": {Kind: nic.KindFPGA, Address: "0000:3b:00.0"},
		"xdp:eth0":          {Kind: nic.KindXDP, Address: "eth0"},
		"xdp":               {Kind: nic.KindXDP},
	} {
		got, err := nic.ParseSpec(in)
		if err != nil || got != want {
			t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if err == nil && got.String() != in {
			t.Errorf("ParseSpec(%q).String() = %q", in, got.String())
		}
	}
	for _, in := range []string{"", ":eth0", "fpga:", "FPGA", "xdp:eth 0", "xdp:../x", "sim/1"} {
		if got, err := nic.ParseSpec(in); !errors.Is(err, nic.ErrBadSpec) {
			t.Errorf("ParseSpec(%q) = %+v, %v; want ErrBadSpec", in, got, err)
		}
	}
}

func TestDeviceErrorIs(t *testing.T) {
	perReq := &nic.DeviceError{Op: "submit", Code: nic.CodeBufRange}
	fatal := &nic.DeviceError{Op: "poll", Code: nic.CodeCplOverrun, Fatal: true}
	giveUp := &nic.DeviceError{Op: "submit", Code: nic.CodeTooManyCandidates}
	checks := []struct {
		err    error
		target error
		want   bool
	}{
		{perReq, nic.ErrDeviceFault, true}, {perReq, nic.ErrBadRequest, true},
		{fatal, nic.ErrDeviceFault, true}, {fatal, nic.ErrBadRequest, false},
		{giveUp, matcher.ErrTooManyCandidates, true}, {giveUp, nic.ErrBadRequest, false},
		{&nic.DeviceError{Code: nic.CodeZeroSalt}, matcher.ErrZeroSalt, true},
		{&nic.TableFullError{}, nic.ErrTableFull, true},
	}
	for _, c := range checks {
		if got := errors.Is(c.err, c.target); got != c.want {
			t.Errorf("errors.Is(%v, %v) = %v, want %v", c.err, c.target, got, c.want)
		}
	}
	if s := fatal.Error(); !bytes.Contains([]byte(s), []byte("CPL_OVERRUN")) || !bytes.Contains([]byte(s), []byte("reset")) {
		t.Errorf("fatal DeviceError reads %q", s)
	}
}

// FuzzParseSpec: a --device value either parses into a spec that prints
// back to itself, or fails with ErrBadSpec and a zero spec.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"auto", "sim", "fpga:0000:3b:00.0", "xdp:eth0", "fpga:", ":x", "xdp:a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := nic.ParseSpec(s)
		if err != nil {
			if !errors.Is(err, nic.ErrBadSpec) || spec != (nic.Spec{}) {
				t.Fatalf("ParseSpec(%q) = %+v, %v", s, spec, err)
			}
			return
		}
		again, err := nic.ParseSpec(spec.String())
		if err != nil || again != spec {
			t.Fatalf("ParseSpec(%q) = %+v prints %q, which parses to %+v, %v", s, spec, spec.String(), again, err)
		}
	})
}
