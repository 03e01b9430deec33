package bitstream_test

import (
	"crypto/ed25519"
	"encoding/binary"
	"syscall"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

// dflImage returns a DFL image whose raw PR payload is seeded by seed and
// the afu_id it promises.
func dflImage(t testing.TB, key ed25519.PrivateKey, version, iface, afu string, seed byte) (*bitstream.Image, []byte) {
	t.Helper()
	m := testutil.ImageManifest(bitstream.KindFPGA, "kvmatch-n6001", version)
	m.Target.Part = "AGFB014R24A2E2V"
	m.Target.InterfaceID = iface
	m.Target.AcceleratorID = afu
	m.Target.Partial = true
	payload := make([]byte, 4096+int(seed))
	for i := range payload {
		payload[i] = byte(i)*31 + seed
	}
	return testutil.SignedImage(t, m, key, bitstream.Payload{Name: "pr", Type: bitstream.PayloadRaw, Data: payload}), payload
}

const (
	afuA = "a5a5a5a5000000000000000000000001"
	afuB = "a5a5a5a5000000000000000000000002"
)

func newDFLSlot(t testing.TB, fake *testutil.FakeDFL, ring *bitstream.KeyRing, port uint32) *bitstream.Slot {
	t.Helper()
	l, err := bitstream.NewDFLLoader(bitstream.DFLOptions{Root: fake.Root, Port: port, Part: "AGFB014R24A2E2V", Ioctl: fake.Ioctl})
	if err != nil {
		t.Fatal(err)
	}
	return bitstream.NewSlot(l, bitstream.SlotOptions{Trust: ring})
}

func TestDFLLoad(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeDFL(t, testutil.FakeDFLOptions{Ports: 2})
	slot := newDFLSlot(t, fake, ring, 1)
	img, payload := dflImage(t, key, "1.0.0", fake.InterfaceID, afuA, 1)
	fake.Accept(payload, afuA)
	if err := slot.Load(t.Context(), img); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, err := fake.AFUID(1); err != nil || got != afuA {
		t.Fatalf("port 1 afu_id %q, %v", got, err)
	}
	if got, _ := fake.AFUID(0); got == afuA {
		t.Fatal("port 0 was reconfigured")
	}
	arg := fake.LastArg()
	ne := binary.NativeEndian
	if len(arg) != 24 || ne.Uint32(arg[0:]) != 24 || ne.Uint32(arg[4:]) != 0 || ne.Uint32(arg[8:]) != 1 || ne.Uint32(arg[12:]) != uint32(len(payload)) {
		t.Fatalf("ioctl argument % x", arg)
	}
	if st := slot.Status(); st.Live == nil || st.Live.ID != img.ID() || st.Loader != "fpga-dfl" {
		t.Fatalf("status %+v", st)
	}
}

func TestDFLFailureRestores(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeDFL(t, testutil.FakeDFLOptions{})
	slot := newDFLSlot(t, fake, ring, 0)
	a, pa := dflImage(t, key, "1.0.0", fake.InterfaceID, afuA, 1)
	b, pb := dflImage(t, key, "2.0.0", fake.InterfaceID, afuB, 2)
	fake.Accept(pa, afuA)
	fake.Accept(pb, afuB)
	if err := slot.Load(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	fake.FailNextPR(syscall.EIO, "reconfig CRC error")
	err := slot.Load(t.Context(), b)
	wantErr(t, err, syscall.EIO, "DFL_FPGA_FME_PORT_PR on dfl-fme.0 port 0", "fme manager status: reconfig CRC error", "restored")
	wantErr(t, err, bitstream.ErrLoadFailed)
	if got, _ := fake.AFUID(0); got != afuA || fake.PRCount() != 3 {
		t.Fatalf("after the restore the port reports %q after %d PRs", got, fake.PRCount())
	}
	st := slot.Status()
	if st.Live == nil || st.Live.ID != a.ID() || !st.Last.Restored {
		t.Fatalf("status %+v", st)
	}

	// A bitstream the card does not take: the fake hardware rejects it.
	c, _ := dflImage(t, key, "3.0.0", fake.InterfaceID, afuB, 3)
	wantErr(t, slot.Load(t.Context(), c), bitstream.ErrLoadFailed, "reconfig incompatible image", "restored")

	// The port comes up with another AFU than the image promises.
	d, pd := dflImage(t, key, "4.0.0", fake.InterfaceID, afuA, 4)
	fake.Accept(pd, afuB)
	wantErr(t, slot.Load(t.Context(), d), bitstream.ErrLoadFailed, "reports afu_id "+afuB+" after PR, the image promises "+afuA)
	if got, _ := fake.AFUID(0); got != afuA {
		t.Fatalf("port reports %q after the restore", got)
	}
}

func TestDFLChecks(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeDFL(t, testutil.FakeDFLOptions{})
	slot := newDFLSlot(t, fake, ring, 0)
	other, _ := dflImage(t, key, "1.0.0", "00000000000000000000000000000042", afuA, 1)
	wantErr(t, slot.Load(t.Context(), other), bitstream.ErrIncompatible, "target.interface_id", "another static region")
	noIface, _ := dflImage(t, key, "1.0.0", "", afuA, 1)
	wantErr(t, slot.Load(t.Context(), noIface), bitstream.ErrIncompatible, "must name the interface")
	img, _ := dflImage(t, key, "1.0.0", fake.InterfaceID, afuA, 1)
	wantErr(t, newDFLSlot(t, fake, ring, 5).Load(t.Context(), img), bitstream.ErrIncompatible, `port: image has "5", target has "1 ports"`)
	m := img.Manifest()
	m.Target.Part = "10AX115N2F40E2LG"
	wantErr(t, slot.Load(t.Context(), testutil.SignedImage(t, m, key, img.Payloads()...)), bitstream.ErrIncompatible, "target.part")
	bit, _ := bitImage(t, key, "1.0.0", "xczu9eg", 1, false)
	wantErr(t, slot.Load(t.Context(), bit), bitstream.ErrIncompatible, "a raw PR bitstream")
	if fake.PRCount() != 0 {
		t.Fatalf("refused images reached the card: %d PRs", fake.PRCount())
	}
	none, err := bitstream.NewDFLLoader(bitstream.DFLOptions{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, none.Check(t.Context(), img), bitstream.ErrNoDevice, "no DFL FME")
}

// TestDFLRealIoctlPath loads through the real ioctl(2) (no Ioctl seam): the
// fake tree's device node is a regular file, so the kernel itself answers
// ENOTTY, proving the loader reached the syscall with its request.
func TestDFLRealIoctlPath(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	fake := testutil.NewFakeDFL(t, testutil.FakeDFLOptions{})
	l, err := bitstream.NewDFLLoader(bitstream.DFLOptions{Root: fake.Root})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := dflImage(t, key, "1.0.0", fake.InterfaceID, afuA, 1)
	err = bitstream.NewSlot(l, bitstream.SlotOptions{Trust: ring}).Load(t.Context(), img)
	wantErr(t, err, syscall.ENOTTY, "DFL_FPGA_FME_PORT_PR")
}
