package bitstream_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/testutil"
)

// XDP actions (enum xdp_action).
const (
	xdpDrop = 1
	xdpPass = 2
)

// testXDP stands in for the XDP backend: it keeps the live collection, and
// before swapping a new program in it runs it once in the kernel
// (BPF_PROG_TEST_RUN) as its ready check.
type testXDP struct {
	mu   sync.Mutex
	live *ebpf.Collection
	prog string
}

var frame = func() []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i + 1)
	}
	return b
}()

func (x *testXDP) SwapXDP(_ context.Context, coll *ebpf.Collection, program string) error {
	p := coll.Programs[program]
	if p == nil {
		return fmt.Errorf("no program %s", program)
	}
	ret, err := p.Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		return fmt.Errorf("test run: %w", err)
	}
	if ret > 4 {
		return fmt.Errorf("test run returned %d, not an XDP action", ret)
	}
	x.mu.Lock()
	old := x.live
	x.live, x.prog = coll, program
	x.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// run runs the live program on a frame in the kernel.
func (x *testXDP) run(t testing.TB) uint32 {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.live == nil {
		t.Fatal("no live XDP program")
	}
	ret, err := x.live.Programs[x.prog].Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("run live program: %v", err)
	}
	return ret
}

func (x *testXDP) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.live != nil {
		x.live.Close()
	}
}

func xdpImage(t testing.TB, key ed25519.PrivateKey, version string, obj []byte) *bitstream.Image {
	t.Helper()
	return testutil.SignedImage(t, testutil.ImageManifest(bitstream.KindXDP, "kvmatch-xdp", version), key,
		bitstream.Payload{Name: "prog", Type: bitstream.PayloadEBPF, Data: obj})
}

func newXDPSlot(t testing.TB, ring *bitstream.KeyRing, opts bitstream.XDPOptions) (*bitstream.Slot, *testXDP) {
	t.Helper()
	testutil.RequireRoot(t, "loading BPF programs")
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("remove memlock rlimit: %v", err)
	}
	target := &testXDP{}
	t.Cleanup(target.close)
	opts.Target = target
	l, err := bitstream.NewXDPLoader(opts)
	if err != nil {
		t.Fatal(err)
	}
	return bitstream.NewSlot(l, bitstream.SlotOptions{Trust: ring}), target
}

// verifierReject reads the packet without a bounds check, which the
// kernel's verifier refuses.
const verifierReject = `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int kvl_match(struct xdp_md *ctx) {
	unsigned char *data = (unsigned char *)(long)ctx->data;
	return data[0] ? XDP_PASS : XDP_DROP;
}
char _license[] SEC("license") = "GPL";
`

func TestXDPLoad(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	slot, target := newXDPSlot(t, ring, bitstream.XDPOptions{})
	pass := xdpImage(t, key, "1.0.0", bpfObject(t, "XDP_PASS"))
	drop := xdpImage(t, key, "1.1.0", bpfObject(t, "XDP_DROP"))
	if err := slot.Load(t.Context(), pass); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := target.run(t); got != xdpPass {
		t.Fatalf("live program returned %d, want XDP_PASS", got)
	}
	if err := slot.Load(t.Context(), drop); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := target.run(t); got != xdpDrop {
		t.Fatalf("live program returned %d, want XDP_DROP", got)
	}

	// The verifier rejects the next image: it never reaches the target and
	// the drop program stays live, with no restore needed.
	bad := xdpImage(t, key, "1.2.0", testutil.BuildBPFObject(t, verifierReject))
	err := slot.Load(t.Context(), bad)
	wantErr(t, err, bitstream.ErrTargetUnchanged, "load image kvmatch-xdp 1.2.0", "into the kernel")
	wantErr(t, err, bitstream.ErrLoadFailed)
	var verr *ebpf.VerifierError
	if !errors.As(err, &verr) {
		t.Fatalf("error %v carries no verifier log", err)
	}
	if got := target.run(t); got != xdpDrop {
		t.Fatalf("after the rejected load the live program returned %d, want XDP_DROP", got)
	}
	st := slot.Status()
	if st.Live == nil || st.Live.ID != drop.ID() || st.Last.Restored || st.Last.Stage != "load" {
		t.Fatalf("status %+v", st)
	}
	if s := slot.Stats(); s.Loads != 2 || s.Failures != 1 || s.Restores != 0 {
		t.Fatalf("stats %+v", s)
	}
}

const twoPrograms = `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int kvl_pass(struct xdp_md *ctx) { return XDP_PASS; }
SEC("xdp") int kvl_drop(struct xdp_md *ctx) { return XDP_DROP; }
char _license[] SEC("license") = "GPL";
`

func TestXDPProgramChoice(t *testing.T) {
	key, ring := testutil.ImageKey(t)
	img := xdpImage(t, key, "1.0.0", testutil.BuildBPFObject(t, twoPrograms))
	slot, _ := newXDPSlot(t, ring, bitstream.XDPOptions{})
	wantErr(t, slot.Load(t.Context(), img), bitstream.ErrIncompatible, "[kvl_drop kvl_pass]", "set XDPOptions.Program")
	named, target := newXDPSlot(t, ring, bitstream.XDPOptions{Program: "kvl_drop"})
	if err := named.Load(t.Context(), img); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := target.run(t); got != xdpDrop {
		t.Fatalf("live program returned %d, want XDP_DROP", got)
	}
	missing, _ := newXDPSlot(t, ring, bitstream.XDPOptions{Program: "kvl_other"})
	wantErr(t, missing.Load(t.Context(), img), bitstream.ErrIncompatible, "no XDP program of that name")

	m := img.Manifest()
	m.Target.Driver = "nfp"
	offload := testutil.SignedImage(t, m, key, img.Payloads()...)
	veth, _ := newXDPSlot(t, ring, bitstream.XDPOptions{Program: "kvl_drop", Driver: "veth"})
	wantErr(t, veth.Load(t.Context(), offload), bitstream.ErrIncompatible, `target.driver: image has "nfp", target has "veth"`)
}
