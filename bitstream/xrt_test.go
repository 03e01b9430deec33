package bitstream_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

const u55c = "xilinx_u55c_gen3x16_xdma_base_3"

var u55cIface = [16]byte{0x97, 0xe6, 0x2e, 0x9a, 0x4b, 0x1e, 0x4a, 0x8b, 0x93, 0x57, 0x12, 0x71, 0x04, 0x49, 0x92, 0xf3}

func xclbinImage(t testing.TB, key ed25519.PrivateKey, version string, seed uint64) (*bitstream.Image, []byte) {
	t.Helper()
	x := testXclbin(t, u55c, u55cIface, seed)
	m := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch-u55c", version)
	m.Target.Part = "xcu55c-fsvh2892-2L-e"
	m.Target.Driver = u55c
	m.Target.InterfaceID = hex.EncodeToString(u55cIface[:])
	return testutil.SignedImage(t, m, key, bitstream.Payload{Name: "xclbin", Type: bitstream.PayloadXclbin, Data: x}), x
}

func newXRTSlot(t testing.TB, path string, ring *bitstream.KeyRing) *bitstream.Slot {
	t.Helper()
	l, err := bitstream.NewXRTLoader(bitstream.XRTOptions{Device: "0000:b3:00.1", Path: path, Platform: u55c,
		InterfaceID: "97E62E9A-4B1E-4A8B-9357-1271044992F3", Part: "xcu55c-fsvh2892-2L-e", TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return bitstream.NewSlot(l, bitstream.SlotOptions{Trust: ring})
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestXRTLoad(t *testing.T) {
	for _, tool := range []string{"xrt-smi", "xbutil"} {
		t.Run(tool, func(t *testing.T) {
			key, ring := testutil.ImageKey(t)
			fake := testutil.NewFakeXRT(t, tool)
			slot := newXRTSlot(t, fake.Dir, ring)
			img, x := xclbinImage(t, key, "1.0.0", 1)
			if err := slot.Load(t.Context(), img); err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := fake.Programmed(t)
			if len(got) != 1 || got[0] != "0000:b3:00.1 "+sum(x) {
				t.Fatalf("%s programmed %q", tool, got)
			}
		})
	}
}

func TestXRTFailureRestores(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeXRT(t, "xrt-smi")
	slot := newXRTSlot(t, fake.Dir, ring)
	a, xa := xclbinImage(t, key, "1.0.0", 1)
	b, _ := xclbinImage(t, key, "2.0.0", 2)
	if err := slot.Load(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	fake.FailNext(t, "ERROR: Failed to download xclbin: Operation not permitted")
	err := slot.Load(t.Context(), b)
	wantErr(t, err, bitstream.ErrLoadFailed, "xrt-smi program --device 0000:b3:00.1 --user", "Failed to download xclbin", "restored")
	want := []string{"0000:b3:00.1 " + sum(xa), "0000:b3:00.1 " + sum(xa)}
	if got := fake.Programmed(t); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("programmed %q, want the first image, then the first image again", got)
	}
	if st := slot.Status(); st.Live == nil || st.Live.ID != a.ID() || !st.Last.Restored {
		t.Fatalf("status %+v", st)
	}
}

func TestXRTChecks(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	img, _ := xclbinImage(t, key, "1.0.0", 1)

	// No XRT installed: the check says what to install and nothing runs.
	slot := newXRTSlot(t, t.TempDir(), ring)
	wantErr(t, slot.Load(t.Context(), img), bitstream.ErrToolMissing, "neither xrt-smi nor xbutil found", "install XRT", "libxrt-utils")
	if st := slot.Status(); st.Last.Stage != "check" {
		t.Fatalf("status %+v", st)
	}

	fake := testutil.NewFakeXRT(t, "xrt-smi")
	l, err := bitstream.NewXRTLoader(bitstream.XRTOptions{Path: fake.Dir, Platform: "xilinx_u280_gen3x16_xdma_base_1", TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, l.Check(t.Context(), img), bitstream.ErrIncompatible, "xclbin platform", "xilinx_u280_gen3x16_xdma_base_1")
	if tool, err := l.Tool(); err != nil || tool != fake.Tool {
		t.Fatalf("Tool() = %q, %v", tool, err)
	}

	m := img.Manifest()
	m.Target.InterfaceID = "00000000000000000000000000000001"
	lying := testutil.SignedImage(t, m, key, img.Payloads()...)
	wantErr(t, newXRTSlot(t, fake.Dir, ring).Load(t.Context(), lying), bitstream.ErrIncompatible, "the manifest and the xclbin header disagree")

	bit, _ := bitImage(t, key, "1.0.0", "xcu55c", 1, false)
	wantErr(t, newXRTSlot(t, fake.Dir, ring).Load(t.Context(), bit), bitstream.ErrIncompatible, "no xclbin2 section")
	if got := fake.Programmed(t); len(got) != 0 {
		t.Fatalf("refused images were programmed: %q", got)
	}
}
