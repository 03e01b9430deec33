package bitstream_test

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

func bitImage(t testing.TB, key ed25519.PrivateKey, version, part string, seed uint64, partial bool) (*bitstream.Image, []byte) {
	t.Helper()
	m := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch", version)
	m.Target.Part = part
	m.Target.Driver = "Xilinx ZynqMP FPGA Manager"
	m.Target.Partial = partial
	bit := testBit(t, part, seed)
	bf, err := bitstream.ParseBit(bit)
	if err != nil {
		t.Fatal(err)
	}
	return testutil.SignedImage(t, m, key, bitstream.Payload{Name: "bitstream", Type: bitstream.PayloadXilinxBit, Data: bit}), bf.Data
}

func newFPGAMgrSlot(t testing.TB, fake *testutil.FakeFPGAManager, ring *bitstream.KeyRing, opts bitstream.FPGAMgrOptions) *bitstream.Slot {
	t.Helper()
	opts.Root, opts.WriteAttr, opts.PollInterval = fake.Root, fake.WriteAttr, time.Millisecond
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	l, err := bitstream.NewFPGAMgrLoader(opts)
	if err != nil {
		t.Fatal(err)
	}
	return bitstream.NewSlot(l, bitstream.SlotOptions{Trust: ring})
}

func TestFPGAMgrLoad(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeFPGAManager(t, testutil.FakeFPGAManagerOptions{})
	slot := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{Part: "xczu9eg-ffvb1156-2-e"})
	img, data := bitImage(t, key, "1.0.0", "xczu9eg-ffvb1156-2-e", 1, false)
	if err := slot.Load(t.Context(), img); err != nil {
		t.Fatalf("Load: %v", err)
	}
	name, got := fake.Operating()
	if !strings.HasPrefix(name, "kvloom-kvmatch-") || !bytes.Equal(got, data) {
		t.Fatalf("fake FPGA runs %q (%d bytes), want the .bit's %d bytes of configuration data", name, len(got), len(data))
	}
	want := []string{"firmware request", "write init", "write", "write complete", "operating"}
	if w := fake.Walked(); !slices.Equal(w, want) {
		t.Fatalf("states walked %v, want %v", w, want)
	}
	if f, _ := os.ReadFile(filepath.Join(fake.Dir, "flags")); string(f) != "0\n" {
		t.Fatalf("flags = %q for a full image", f)
	}

	// A partial image sets flags to 1; the previous firmware file is
	// cleaned up.
	pimg, _ := bitImage(t, key, "1.1.0", "xczu9eg-ffvb1156-2-e", 2, true)
	if err := slot.Load(t.Context(), pimg); err != nil {
		t.Fatalf("Load partial: %v", err)
	}
	if f, _ := os.ReadFile(filepath.Join(fake.Dir, "flags")); string(f) != "1\n" {
		t.Fatalf("flags = %q for a partial image", f)
	}
	ents, err := os.ReadDir(fake.FirmwareDir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("firmware dir holds %d files (%v), want only the live one", len(ents), err)
	}
	if st := slot.Status(); st.Live.ID != pimg.ID() || st.Loader != "fpga-mgr" {
		t.Fatalf("status %+v", st)
	}
}

// TestFPGAMgrFailureRestores: the device fails in "write error"; the
// previous image is programmed again and the status says both.
func TestFPGAMgrFailureRestores(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeFPGAManager(t, testutil.FakeFPGAManagerOptions{})
	slot := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{})
	a, aData := bitImage(t, key, "1.0.0", "xczu9eg", 1, false)
	b, _ := bitImage(t, key, "2.0.0", "xczu9eg", 2, false)
	if err := slot.Load(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	fake.FailNextLoad("write error", "reconfig CRC error")
	err := slot.Load(t.Context(), b)
	wantErr(t, err, bitstream.ErrLoadFailed, `programming failed in state "write error"`, "status: reconfig CRC error", "previous image kvmatch 1.0.0", "restored")
	if _, got := fake.Operating(); !bytes.Equal(got, aData) {
		t.Fatal("the fake FPGA does not run the previous image after the restore")
	}
	st := slot.Status()
	if st.Live == nil || st.Live.ID != a.ID() || !st.Last.Restored || st.Last.Image.ID != b.ID() || !strings.Contains(st.Last.Error, "write error") {
		t.Fatalf("status %+v", st)
	}
	if s := slot.Stats(); s.Loads != 1 || s.Failures != 1 || s.Restores != 1 {
		t.Fatalf("stats %+v", s)
	}

	// When the restore fails too, nothing is live and the status says why.
	fake.FailNextLoad("write init error", "")
	fake.FailNextLoad("write complete error", "reconfig operation error")
	err = slot.Load(t.Context(), b)
	wantErr(t, err, bitstream.ErrLoadFailed, "write init error", "restoring previous image", "write complete error")
	st = slot.Status()
	if st.Live != nil || st.Last.Restored || !strings.Contains(st.Last.RestoreError, "reconfig operation error") {
		t.Fatalf("status %+v", st)
	}
	if s := slot.Stats(); s.RestoreFailures != 1 {
		t.Fatalf("stats %+v", s)
	}
	if name, _ := fake.Operating(); name != "" {
		t.Fatalf("fake runs %q after two failures", name)
	}
	// And a later good load recovers.
	if err := slot.Load(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	if st := slot.Status(); st.Live == nil || st.Live.ID != b.ID() {
		t.Fatalf("status %+v", st)
	}
}

func TestFPGAMgrUpstreamKernel(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeFPGAManager(t, testutil.FakeFPGAManagerOptions{Upstream: true})
	slot := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{})
	img, _ := bitImage(t, key, "1.0.0", "xczu9eg", 1, false)
	err := slot.Load(t.Context(), img)
	wantErr(t, err, bitstream.ErrNotSupported, "fpga manager fpga0 has no firmware or flags attribute", "exposes only name, state and status", "linux-xlnx")
	if fake.Loads() != 0 || slot.Status().Last.Stage != "check" {
		t.Fatalf("upstream tree was touched: %d loads, status %+v", fake.Loads(), slot.Status())
	}
}

func TestFPGAMgrZynq7000(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeFPGAManager(t, testutil.FakeFPGAManagerOptions{Name: "Xilinx Zynq FPGA Manager", Zynq7000: true})
	img, data := bitImage(t, key, "1.0.0", "xc7z020clg400", 1, false)
	m := img.Manifest()
	m.Target.Driver = "Xilinx Zynq FPGA Manager"
	img = testutil.SignedImage(t, m, key, img.Payloads()...)

	// Without byte swapping the driver finds no (swapped) sync word.
	plain := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{})
	wantErr(t, plain.Load(t.Context(), img), bitstream.ErrLoadFailed, `state "write init error"`, "invalid argument")
	swapping := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{ByteSwap: true})
	if err := swapping.Load(t.Context(), img); err != nil {
		t.Fatalf("byte-swapped load: %v", err)
	}
	_, got := fake.Operating()
	if len(got) != len(data) || got[0] != data[3] || got[3] != data[0] || got[4] != data[7] {
		t.Fatal("firmware is not the word-swapped configuration data")
	}
}

func TestFPGAMgrChecks(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeFPGAManager(t, testutil.FakeFPGAManagerOptions{})
	img, _ := bitImage(t, key, "1.0.0", "xczu9eg-ffvb1156-2-e", 1, false)

	wrongBoard := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{Part: "xczu7ev-ffvc1156-2-e"})
	wantErr(t, wrongBoard.Load(t.Context(), img), bitstream.ErrIncompatible, "target.part", "xczu7ev")

	m := img.Manifest()
	m.Target.Part = "xczu3eg" // disagrees with the .bit header
	lying := testutil.SignedImage(t, m, key, img.Payloads()...)
	slot := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{})
	wantErr(t, slot.Load(t.Context(), lying), bitstream.ErrIncompatible, "the manifest and the .bit header name different parts")

	m = img.Manifest()
	m.Target.Driver = "Altera SOCFPGA FPGA Manager"
	other := testutil.SignedImage(t, m, key, img.Payloads()...)
	wantErr(t, slot.Load(t.Context(), other), bitstream.ErrIncompatible, "target.driver", "Xilinx ZynqMP FPGA Manager")

	xm := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch-u55c", "1.0.0")
	x := testutil.SignedImage(t, xm, key, bitstream.Payload{Name: "xclbin", Type: bitstream.PayloadXclbin, Data: testXclbin(t, "p", [16]byte{}, 1)})
	wantErr(t, slot.Load(t.Context(), x), bitstream.ErrIncompatible, "xclbin images load through xrt")

	// The kernel's firmware search path is elsewhere: firmware request error.
	elsewhere := newFPGAMgrSlot(t, fake, ring, bitstream.FPGAMgrOptions{FirmwareDir: "usr/lib/firmware"})
	wantErr(t, elsewhere.Load(t.Context(), img), bitstream.ErrLoadFailed, `state "firmware request error"`, "no such file")

	if fake.Loads() != 1 {
		t.Fatalf("fake handled %d loads, want only the misdirected one", fake.Loads())
	}
	none, err := bitstream.NewFPGAMgrLoader(bitstream.FPGAMgrOptions{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, none.Check(t.Context(), img), bitstream.ErrNoDevice)
}
