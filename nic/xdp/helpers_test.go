//go:build linux

package xdp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireBPF fails t unless the test can load and run BPF programs here.
func requireBPF(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t, "BPF programs")
	if err := CheckKernel(); err != nil {
		t.Fatalf("this kernel cannot run the kvlp program: %v (need Linux ≥ 5.17 with BPF ring buffers and bpf_loop)", err)
	}
}

// testProgram is the built-in object loaded straight into the kernel, with
// no device around it: the program under test.
type testProgram struct {
	*program
	ring  *ringbuf.Reader
	dones []HintDone // done records events() read
}

func loadProgram(t testing.TB, port uint16) *testProgram {
	t.Helper()
	requireBPF(t)
	spec, err := loadKvlp()
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier rejected kvlp_xdp: %+v", ve)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	p, err := bind(coll, ProgramName)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.port.Set(port); err != nil {
		t.Fatal(err)
	}
	rd, err := ringbuf.NewReader(p.events)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return &testProgram{program: p, ring: rd}
}

// put stores index entries straight into the map.
func (tp *testProgram) put(t testing.TB, salt uint64, fps map[uint64]kvlpKvlpValue) {
	t.Helper()
	for fp, v := range fps {
		if err := tp.index.Put(kvlpKvlpKey{SaltId: salt, Fingerprint: fp}, v); err != nil {
			t.Fatal(err)
		}
	}
}

// run feeds one frame to the program and returns its verdict and the frame
// as the program left it.
func (tp *testProgram) run(t testing.TB, frame []byte) (uint32, []byte) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	opts := ebpf.RunOptions{Data: frame, DataOut: out}
	verdict, err := tp.prog.Run(&opts)
	if err != nil {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
	}
	return verdict, opts.DataOut
}

// counters reads and sums the per-CPU counters.
func (tp *testProgram) counters(t testing.TB) Counters {
	t.Helper()
	out, err := tp.readCounters()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// events drains what the ring buffer holds now and returns the hits; the
// done records go to tp.dones.
func (tp *testProgram) events(t testing.TB) []PrefetchEvent {
	t.Helper()
	var out []PrefetchEvent
	for {
		tp.ring.SetDeadline(time.Now().Add(20 * time.Millisecond))
		rec, err := tp.ring.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		ev, done, err := decodeRecord(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		if ev != nil {
			out = append(out, *ev)
		} else {
			tp.dones = append(tp.dones, *done)
		}
	}
}

// diff returns after - before for every counter that changed.
func diff(before, after Counters) map[Counter]uint64 {
	out := map[Counter]uint64{}
	for i := range NumCounters {
		if d := after[i] - before[i]; d != 0 {
			out[Counter(i)] = d
		}
	}
	return out
}

func endpoints(v6 bool, port uint16) wire.Endpoints {
	e := wire.Endpoints{
		SrcMAC: net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x01}, DstMAC: net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 0x02},
		SrcIP: netip.MustParseAddr("192.0.2.1"), DstIP: netip.MustParseAddr("192.0.2.2"),
		SrcPort: 43210, DstPort: port,
	}
	if v6 {
		e.SrcIP, e.DstIP = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	}
	return e
}

func hintMsg(reqID, salt uint64, fps ...uint64) *wire.KVLP {
	h := wire.Hint{RequestID: reqID, SaltID: salt}
	for i, fp := range fps {
		h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: fp, TokenOffset: uint32(100 + 7*i)})
	}
	ps, err := h.Packets(wire.MaxEntries)
	if err != nil {
		panic(err)
	}
	return ps[0]
}

func chunkKey(i uint64) matcher.ChunkKey {
	var k matcher.ChunkKey
	binary.BigEndian.PutUint64(k[:8], 0xc0ffee0000000000|i)
	binary.BigEndian.PutUint64(k[8:], ^i)
	return k
}

func mustFrame(t testing.TB, f func() ([]byte, error)) []byte {
	t.Helper()
	b, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
