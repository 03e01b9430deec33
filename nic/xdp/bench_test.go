//go:build linux

package xdp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/wire"
)

const (
	benchFPs     = 64    // fingerprints per hint: the figure
	benchHits    = 16    // of which the index holds a quarter
	benchIndex   = 50000 // entries in the index map
	benchRepeats = 256   // BPF_PROG_TEST_RUN repetitions per call
)

// noopProgram is the baseline: an XDP program that passes every frame.
func noopProgram(b *testing.B) *ebpf.Program {
	b.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// drainRing empties the program's ring buffer in a goroutine for as long
// as the benchmark runs, as the daemon's reader would.
func drainRing(b *testing.B, tp *testProgram) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var rec ringbuf.Record
		for ctx.Err() == nil {
			tp.ring.SetDeadline(time.Now().Add(50 * time.Millisecond))
			if err := tp.ring.ReadInto(&rec); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
	}()
	b.Cleanup(func() { cancel(); wg.Wait() })
}

// benchFrame is a 64-fingerprint hint of which benchHits are in an index of
// benchIndex entries.
func benchFrame(b *testing.B, tp *testProgram, flags wire.Flags) []byte {
	b.Helper()
	const salt = 0xbe7c4
	keys := make([]kvlpKvlpKey, benchIndex)
	vals := make([]kvlpKvlpValue, benchIndex)
	for i := range keys {
		keys[i] = kvlpKvlpKey{SaltId: salt, Fingerprint: uint64(i+1) * 0x9e3779b97f4a7c15}
		vals[i] = kvlpKvlpValue{ChunkKey: chunkKey(uint64(i)), ChunkOffset: uint32(i)}
	}
	if _, err := tp.index.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatal(err)
	}
	h := wire.Hint{RequestID: 1, SaltID: salt, Flags: flags}
	for i := range benchFPs {
		fp := uint64(0xf00d0000 + i) // misses
		if i%(benchFPs/benchHits) == 0 {
			fp = keys[(i*997)%benchIndex].Fingerprint
		}
		h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: fp, TokenOffset: uint32(16 * i)})
	}
	ps, err := h.Packets(wire.MaxEntries)
	if err != nil {
		b.Fatal(err)
	}
	return mustFrame(b, func() ([]byte, error) { return endpoints(false, testPort).Frame(ps[0]) })
}

// kernelNs runs prog on frame with BPF_PROG_TEST_RUN and returns the
// kernel's own time per run, which leaves the syscall out.
func kernelNs(b *testing.B, prog *ebpf.Program, frame []byte, repeat int, want uint32) float64 {
	verdict, d, err := prog.Benchmark(frame, repeat, nil)
	if err != nil {
		b.Fatal(err)
	}
	if verdict != want {
		b.Fatalf("verdict %d, want %d", verdict, want)
	}
	return float64(d.Nanoseconds())
}

// BenchmarkProgramHint64 is the per-packet cost of a 64-fingerprint hint
// (16 hits in a 50k-entry index, one ring-buffer event each) in the
// kernel, timed by BPF_PROG_TEST_RUN, against a no-op XDP program timed
// the same way in the same run. x-vs-noop is packets/s of kvlp_xdp over
// packets/s of the no-op (so 1/x is the cost in no-op packets).
//
//   - repeat: a NO_REPLY hint, BPF_PROG_TEST_RUN repeating it 256 times per
//     call (it leaves the frame as it was, so every repetition does the
//     same work): parsing, 64 lookups, 16 events; no reply.
//   - reply: the full path with the in-place reply, one run per call
//     (a reply is no longer a hint, so it cannot be repeated).
func BenchmarkProgramHint64(b *testing.B) {
	tp := loadProgram(b, testPort)
	noop := noopProgram(b)
	drainRing(b, tp)
	for _, c := range []struct {
		name    string
		flags   wire.Flags
		repeat  int
		verdict uint32
	}{
		{"repeat", wire.FlagNoReply, benchRepeats, xdpDrop},
		{"reply", 0, 1, xdpTX},
	} {
		b.Run(c.name, func(b *testing.B) {
			frame := benchFrame(b, tp, c.flags)
			before := tp.counters(b)
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			var kvlpNs, noopNs float64
			n := 0
			for b.Loop() {
				kvlpNs += kernelNs(b, tp.prog, frame, c.repeat, c.verdict)
				noopNs += kernelNs(b, noop, frame, c.repeat, xdpPass)
				n++
			}
			kvlpNs /= float64(n)
			noopNs /= float64(n)
			b.ReportMetric(kvlpNs, "ns/packet")
			b.ReportMetric(noopNs, "noop-ns/packet")
			b.ReportMetric(noopNs/kvlpNs, "x-vs-noop")
			d := diff(before, tp.counters(b))
			b.ReportMetric(float64(d[EventsLost])/float64(max(d[Hits], 1)), "events-lost/hit")
		})
	}
}

// BenchmarkHintRoundTrip is the round trip of a 64-fingerprint hint from a
// router namespace over a veth pair, answered by kvlp_xdp on the host end
// (native and generic mode), against a plain UDP echo of the same size
// served from user space in the host namespace (through the same attached
// program), measured in the same run. x-vs-udp-echo is round trips/s over
// echo round trips/s.
func BenchmarkHintRoundTrip(b *testing.B) {
	for _, mode := range []AttachMode{AttachNative, AttachGeneric} {
		b.Run(mode.String(), func(b *testing.B) { benchRoundTrip(b, mode) })
	}
}

func benchRoundTrip(b *testing.B, mode AttachMode) {
	requireBPF(b)
	pair := testutil.NewVethPair(b)
	if mode == AttachNative {
		attachPass(b, pair.Router, pair.RouterIf) // native XDP_TX on veth needs the peer's NAPI
	}
	d := openDevice(b, Options{Interface: pair.HostIf, Netns: "/var/run/netns/" + pair.Host.Name, Mode: mode})
	w := newTestWorld(b, 10, d.Info().Matcher)
	var entries []nic.Entry
	for range 40 {
		entries = append(entries, w.entry(w.tokens(256), false, 1))
	}
	if err := d.PushIndex(b.Context(), nic.IndexUpdate{Add: entries}); err != nil {
		b.Fatal(err)
	}
	h := wire.Hint{RequestID: 1, SaltID: w.salt.ID()}
	for _, a := range d.cfg.params.Anchors(append(entries[0].Tokens, w.tokens(3000)...), nil)[:benchFPs] {
		h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: a.FP, TokenOffset: uint32(a.Off)})
	}
	ps, err := h.Packets(wire.MaxEntries)
	if err != nil {
		b.Fatal(err)
	}
	hint, err := ps[0].Marshal()
	if err != nil {
		b.Fatal(err)
	}
	echo := startEcho(b, pair, false)
	hintConn := dialFromRouter(b, pair, wire.DefaultPort)
	echoConn := dialFromRouter(b, pair, echo.port)
	payload := bytes.Repeat([]byte{0xa5}, len(hint)) // same size, non-zero
	buf := make([]byte, 2048)
	roundTrip := func(c *net.UDPConn, msg []byte) {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			b.Fatal(err)
		}
		n, err := c.Read(buf)
		if err != nil || n != len(msg) {
			b.Fatalf("round trip: %d bytes, %v", n, err)
		}
	}
	roundTrip(hintConn, hint)
	if r, err := wire.Decode(buf[:len(hint)]); err != nil || r.Type != wire.TypeHintReply || r.Hits == 0 {
		b.Fatalf("hint answered with %+v, %v", r, err)
	}
	b.SetBytes(int64(len(hint)))
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(hintConn, hint)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/roundtrip")
	benchutil.ReportRatio(b, "x-vs-udp-echo", 1, benchutil.Baseline{Op: func() { roundTrip(echoConn, payload) }, PerOp: 1})
}

// dialFromRouter opens a UDP socket in the router namespace connected to
// the host's port.
func dialFromRouter(b *testing.B, pair *testutil.VethPair, port uint16) *net.UDPConn {
	b.Helper()
	var c *net.UDPConn
	err := pair.Router.Do(func() error {
		var err error
		c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pair.RouterIP4, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(pair.HostIP4, port)))
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
