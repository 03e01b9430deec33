//go:build linux

package xdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kvloom/kvloom/nic/wire"
)

const testPort = wire.DefaultPort

// TestProgramAnswersHints runs hints with hits, misses and both through the
// program, over IPv4 and IPv6, and checks the verdict, every byte of the
// reply against wire.Answer's reply built by gopacket (so addresses, TTL,
// and both checksums), the ring-buffer events and the counters.
func TestProgramAnswersHints(t *testing.T) {
	tp := loadProgram(t, testPort)
	const salt = 0x5a17
	index := map[uint64]kvlpKvlpValue{}
	for i := uint64(1); i <= 200; i++ {
		index[i*0x9e3779b97f4a7c15] = kvlpKvlpValue{ChunkKey: chunkKey(i), ChunkOffset: uint32(i * 3)}
	}
	tp.put(t, salt, index)
	// The same fingerprint under another salt must not hit.
	tp.put(t, salt+1, map[uint64]kvlpKvlpValue{0xdead: {ChunkKey: chunkKey(999)}})

	lookup := func(s, fp uint64) (wire.ReplyEntry, bool) {
		v, ok := index[fp]
		if s != salt || !ok {
			return wire.ReplyEntry{}, false
		}
		return wire.ReplyEntry{ChunkID: wire.ChunkID(v.ChunkKey), ChunkOffset: v.ChunkOffset}, true
	}
	hitFP := func(i uint64) uint64 { return i * 0x9e3779b97f4a7c15 }
	var all, mixed, misses []uint64
	for i := uint64(1); i <= wire.MaxEntries; i++ {
		all = append(all, hitFP(i))
	}
	for i := uint64(1); i <= 64; i++ {
		if i%3 == 0 {
			mixed = append(mixed, hitFP(i))
		} else {
			mixed = append(mixed, 0x1000+i)
		}
		misses = append(misses, 0x2000+i)
	}
	cases := []struct {
		name string
		fps  []uint64
		hits int
	}{
		{"one hit", []uint64{hitFP(7)}, 1},
		{"one miss", []uint64{0xdead}, 0},
		{"all miss", misses, 0},
		{"mixed", mixed, 21},
		{"128 hits", all, wire.MaxEntries},
	}
	for _, v6 := range []bool{false, true} {
		for ci, c := range cases {
			t.Run(fmt.Sprintf("%s/v6=%v", c.name, v6), func(t *testing.T) {
				ep := endpoints(v6, testPort)
				hint := hintMsg(uint64(1000+ci), salt, c.fps...)
				frame := mustFrame(t, func() ([]byte, error) { return ep.Frame(hint) })
				reply, err := wire.Answer(hint, lookup)
				if err != nil {
					t.Fatal(err)
				}
				want := mustFrame(t, func() ([]byte, error) { return ep.Reverse().Frame(reply) })

				before := tp.counters(t)
				verdict, out := tp.run(t, frame)
				if verdict != xdpTX {
					t.Fatalf("verdict %d, want XDP_TX", verdict)
				}
				if !bytes.Equal(out, want) {
					t.Fatalf("reply differs from wire.Answer's:\n got %x\nwant %x", out, want)
				}
				d := diff(before, tp.counters(t))
				wantDiff := map[Counter]uint64{HintReplied: 1, Lookups: uint64(len(c.fps))}
				if c.hits > 0 {
					wantDiff[Hits] = uint64(c.hits)
					wantDiff[Events] = uint64(c.hits)
				}
				if !mapsEqual(d, wantDiff) {
					t.Fatalf("counters changed by %v, want %v", d, wantDiff)
				}
				tp.dones = nil
				evs := tp.events(t)
				if len(evs) != c.hits {
					t.Fatalf("%d ring-buffer events, want %d", len(evs), c.hits)
				}
				switch {
				case c.hits == 0 && len(tp.dones) != 0:
					t.Fatalf("a hint without hits wrote done records %+v", tp.dones)
				case c.hits > 0 && (len(tp.dones) != 1 || tp.dones[0].RequestID != hint.RequestID || tp.dones[0].Hits != c.hits ||
					tp.dones[0].Events != c.hits || tp.dones[0].Entries != len(c.fps) || tp.dones[0].FragCount != 1):
					t.Fatalf("done records %+v, want one for request %d with %d hits of %d", tp.dones, hint.RequestID, c.hits, len(c.fps))
				}
				for i, ev := range evs {
					h, err := wire.HitsOf(hint, reply)
					if err != nil {
						t.Fatal(err)
					}
					e := h[i]
					v := index[e.Hint.Fingerprint]
					if ev.RequestID != hint.RequestID || ev.SaltID != salt || ev.Fingerprint != e.Hint.Fingerprint ||
						ev.TokenOffset != e.Hint.TokenOffset || ev.Chunk != v.ChunkKey || ev.ChunkOffset != v.ChunkOffset ||
						int(ev.Entry) != e.Index || ev.FragIndex != 0 || ev.Time == 0 {
						t.Fatalf("event %d = %+v, want hit %+v of chunk %s", i, ev, e, v.ChunkKey)
					}
				}
			})
		}
	}
}

func mapsEqual(a, b map[Counter]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestProgramChecksums covers the checksum rules of docs/protocol.md: an
// IPv4 hint sent without a UDP checksum is answered without one, IPv4
// options are kept with a correct header checksum, and a computed UDP
// checksum of zero goes out as 0xffff.
func TestProgramChecksums(t *testing.T) {
	tp := loadProgram(t, testPort)
	const salt = 77
	tp.put(t, salt, map[uint64]kvlpKvlpValue{42: {ChunkKey: chunkKey(42), ChunkOffset: 9}})
	lookup := func(s, fp uint64) (wire.ReplyEntry, bool) {
		return wire.ReplyEntry{ChunkID: wire.ChunkID(chunkKey(42)), ChunkOffset: 9}, s == salt && fp == 42
	}
	ep := endpoints(false, testPort)
	hint := hintMsg(5, salt, 42, 43)
	reply, err := wire.Answer(hint, lookup)
	if err != nil {
		t.Fatal(err)
	}
	frame := mustFrame(t, func() ([]byte, error) { return ep.Frame(hint) })
	want := mustFrame(t, func() ([]byte, error) { return ep.Reverse().Frame(reply) })

	t.Run("no UDP checksum", func(t *testing.T) {
		in, exp := bytes.Clone(frame), bytes.Clone(want)
		in[40], in[41], exp[40], exp[41] = 0, 0, 0, 0
		if v, out := tp.run(t, in); v != xdpTX || !bytes.Equal(out, exp) {
			t.Fatalf("verdict %d, reply\n got %x\nwant %x", v, out, exp)
		}
	})
	t.Run("IPv4 options", func(t *testing.T) {
		in, exp := withIPOptions(frame), withIPOptions(want)
		if v, out := tp.run(t, in); v != xdpTX || !bytes.Equal(out, exp) {
			t.Fatalf("verdict %d, reply\n got %x\nwant %x", v, out, exp)
		}
		if !ipv4HeaderOK(exp) {
			t.Fatal("the expected frame's header checksum is wrong: the test itself is broken")
		}
	})
	t.Run("zero sum becomes 0xffff", func(t *testing.T) {
		// Choose the request id's low 16 bits so that the reply's checksum
		// computes to zero: the reply must carry 0xffff (RFC 768).
		r0, err := wire.Answer(hintMsg(0x10000, salt, 42, 43), lookup)
		if err != nil {
			t.Fatal(err)
		}
		c := binary.BigEndian.Uint16(mustFrame(t, func() ([]byte, error) { return ep.Reverse().Frame(r0) })[40:])
		h := hintMsg(0x10000|uint64(c), salt, 42, 43)
		r, err := wire.Answer(h, lookup)
		if err != nil {
			t.Fatal(err)
		}
		exp := mustFrame(t, func() ([]byte, error) { return ep.Reverse().Frame(r) })
		if binary.BigEndian.Uint16(exp[40:]) != 0xffff {
			t.Fatalf("the crafted reply's checksum is %#04x, not a computed zero: the test is broken", binary.BigEndian.Uint16(exp[40:]))
		}
		in := mustFrame(t, func() ([]byte, error) { return ep.Frame(h) })
		if v, out := tp.run(t, in); v != xdpTX || !bytes.Equal(out, exp) {
			t.Fatalf("verdict %d, reply\n got %x\nwant %x", v, out, exp)
		}
	})
	for _, v6 := range []bool{false, true} {
		ep := endpoints(v6, testPort)
		in := mustFrame(t, func() ([]byte, error) { return ep.Frame(hint) })
		exp := mustFrame(t, func() ([]byte, error) { return ep.Reverse().Frame(reply) })
		at := udpChecksumAt(in)
		partial := pseudoSum(in)
		binary.BigEndian.PutUint16(in[at:], partial)
		t.Run(fmt.Sprintf("partial checksum native v6=%v", v6), func(t *testing.T) {
			// A local sender's hint through a veth still holds the
			// pseudo-header sum; native XDP drops the skb's note of it, so
			// the reply must carry a whole checksum.
			if err := tp.generic.Set(uint8(0)); err != nil {
				t.Fatal(err)
			}
			if v, out := tp.run(t, in); v != xdpTX || !bytes.Equal(out, exp) {
				t.Fatalf("verdict %d, reply\n got %x\nwant %x", v, out, exp)
			}
		})
		t.Run(fmt.Sprintf("partial checksum generic v6=%v", v6), func(t *testing.T) {
			// In generic mode the skb keeps CHECKSUM_PARTIAL: the field must
			// stay the pseudo-header sum, which the swap leaves unchanged.
			if err := tp.generic.Set(uint8(1)); err != nil {
				t.Fatal(err)
			}
			defer tp.generic.Set(uint8(0))
			want := bytes.Clone(exp)
			binary.BigEndian.PutUint16(want[at:], partial)
			if v, out := tp.run(t, in); v != xdpTX || !bytes.Equal(out, want) {
				t.Fatalf("verdict %d, reply\n got %x\nwant %x", v, out, want)
			}
			// A whole checksum is still replaced by the reply's in generic mode.
			full := mustFrame(t, func() ([]byte, error) { return ep.Frame(hint) })
			if v, out := tp.run(t, full); v != xdpTX || !bytes.Equal(out, exp) {
				t.Fatalf("generic, whole checksum: verdict %d, reply\n got %x\nwant %x", v, out, exp)
			}
		})
	}
	tp.events(t)
}

// udpChecksumAt is the offset of an Ethernet/IP/UDP frame's UDP checksum.
func udpChecksumAt(frame []byte) int {
	if binary.BigEndian.Uint16(frame[12:]) == 0x86dd {
		return 14 + 40 + 6
	}
	return 14 + int(frame[14]&0xf)*4 + 6
}

// pseudoSum is what a stack that leaves the UDP checksum to the device
// (CHECKSUM_PARTIAL) puts in the field: the folded pseudo-header sum.
func pseudoSum(frame []byte) uint16 {
	var s uint32
	add := func(b []byte) {
		for i := 0; i < len(b); i += 2 {
			s += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	at := udpChecksumAt(frame)
	if binary.BigEndian.Uint16(frame[12:]) == 0x86dd {
		add(frame[14+8 : 14+40])
	} else {
		add(frame[14+12 : 14+20])
	}
	s += 17 + uint32(binary.BigEndian.Uint16(frame[at-2:]))
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// withIPOptions inserts four NOP options into an IPv4 frame's header and
// fixes its length and header checksum (the UDP checksum does not cover
// options).
func withIPOptions(frame []byte) []byte {
	out := slices.Concat(frame[:34], []byte{1, 1, 1, 1}, frame[34:])
	out[14] = 0x46
	binary.BigEndian.PutUint16(out[16:], binary.BigEndian.Uint16(out[16:])+4)
	out[24], out[25] = 0, 0
	binary.BigEndian.PutUint16(out[24:], ipChecksum(out[14:38]))
	return out
}

func ipChecksum(h []byte) uint16 {
	var s uint32
	for i := 0; i < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func ipv4HeaderOK(frame []byte) bool {
	ihl := int(frame[14]&0xf) * 4
	return ipChecksum(frame[14:14+ihl]) == 0
}

// TestProgramMalformed feeds every malformed and every non-KVLP case and
// checks the verdict, that a passed or dropped frame is left as it was, the
// one counter it must bump, and (for KVLP-level faults) that wire's decoder
// refuses the same message with the matching error.
func TestProgramMalformed(t *testing.T) {
	tp := loadProgram(t, testPort)
	ep4, ep6 := endpoints(false, testPort), endpoints(true, testPort)
	hint := hintMsg(1, 9, 10, 11, 12)
	good4 := mustFrame(t, func() ([]byte, error) { return ep4.Frame(hint) })
	good6 := mustFrame(t, func() ([]byte, error) { return ep6.Frame(hint) })

	// kvlp rebuilds a frame after changing its KVLP message's bytes, with
	// correct IP and UDP lengths and checksums.
	kvlp := func(v6 bool, f func(b []byte) []byte) []byte {
		msg, err := hint.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ep := ep4
		if v6 {
			ep = ep6
		}
		return mustFrame(t, func() ([]byte, error) { return ep.PayloadFrame(f(msg)) })
	}
	edit := func(base []byte, f func(b []byte)) []byte {
		b := bytes.Clone(base)
		f(b)
		return b
	}
	const udp4, udp6 = 34, 54 // UDP header offsets
	replyMsg, err := wire.Answer(hint, func(_, fp uint64) (wire.ReplyEntry, bool) { return wire.ReplyEntry{ChunkID: 1}, fp == 11 })
	if err != nil {
		t.Fatal(err)
	}
	otherPort := ep4
	otherPort.DstPort = 53

	cases := []struct {
		name    string
		frame   []byte
		verdict uint32
		counter Counter
		wireErr error // for KVLP-level faults: what wire.Decode says
	}{
		{"ethernet only", edit(good4[:14], func([]byte) {}), xdpPass, PassShort, nil},
		{"truncated IPv4 header", good4[:14+12], xdpPass, PassShort, nil},
		{"truncated IPv6 header", good6[:14+30], xdpPass, PassShort, nil},
		{"truncated UDP header", good4[:udp4+4], xdpPass, PassShort, nil},
		{"ARP", edit(good4[:60], func(b []byte) { b[12], b[13] = 0x08, 0x06 }), xdpPass, PassNotIP, nil},
		{"VLAN tag", edit(good4, func(b []byte) { b[12], b[13] = 0x81, 0x00 }), xdpPass, PassNotIP, nil},
		{"IPv4 version 5", edit(good4, func(b []byte) { b[14] = 0x55 }), xdpPass, PassNotIP, nil},
		{"TCP", ipv4Edit(good4, func(b []byte) { b[14+9] = 6 }), xdpPass, PassNotUDP, nil},
		{"IPv6 extension header", edit(good6, func(b []byte) { b[14+6] = 0 }), xdpPass, PassNotUDP, nil},
		{"IPv4 fragment", ipv4Edit(good4, func(b []byte) { b[14+6] = 0x20 }), xdpPass, PassIPFragment, nil},
		{"IPv4 bad header checksum", edit(good4, func(b []byte) { b[24] ^= 0xff }), xdpPass, PassIPChecksum, nil},
		{"other UDP port", mustFrame(t, func() ([]byte, error) { return otherPort.Frame(hint) }), xdpPass, PassOtherPort, nil},
		{"reply to this host", mustFrame(t, func() ([]byte, error) { return ep4.Frame(replyMsg) }), xdpPass, PassReply, nil},
		{"UDP length past frame", edit(good4, func(b []byte) {
			binary.BigEndian.PutUint16(b[udp4+4:], uint16(len(b)-udp4+1))
		}), xdpDrop, DropUDPLength, nil},
		{"UDP length past IP payload", ipv4Edit(good4, func(b []byte) {
			binary.BigEndian.PutUint16(b[16:], binary.BigEndian.Uint16(b[16:])-1)
		}), xdpDrop, DropUDPLength, nil},
		{"UDP length below 8", edit(good4, func(b []byte) { binary.BigEndian.PutUint16(b[udp4+4:], 7) }), xdpDrop, DropUDPLength, nil},
		{"IPv6 without UDP checksum", edit(good6, func(b []byte) { b[udp6+6], b[udp6+7] = 0, 0 }), xdpDrop, DropUDPChecksum, nil},
		{"KVLP header truncated", kvlp(false, func(b []byte) []byte { return b[:wire.HeaderLen-1] }), xdpDrop, DropTruncated, wire.ErrTruncated},
		{"entries past the datagram", kvlp(false, func(b []byte) []byte { return b[:len(b)-1] }), xdpDrop, DropTruncated, wire.ErrTruncated},
		{"trailing bytes", kvlp(false, func(b []byte) []byte { return append(b, 0) }), xdpDrop, DropLength, wire.ErrLength},
		{"magic", kvlp(false, func(b []byte) []byte { b[0] = 'X'; return b }), xdpDrop, DropMagic, wire.ErrMagic},
		{"version 0", kvlp(false, func(b []byte) []byte { b[2] = 0; return b }), xdpDrop, DropVersion, wire.ErrVersion},
		{"version 2", kvlp(true, func(b []byte) []byte { b[2] = 2; return b }), xdpDrop, DropVersion, wire.ErrVersion},
		{"type 3", kvlp(false, func(b []byte) []byte { b[3] = 3; return b }), xdpDrop, DropType, wire.ErrType},
		{"count 0", kvlp(false, func(b []byte) []byte { b[6] = 0; return b }), xdpDrop, DropCount, wire.ErrCount},
		{"count 129", kvlp(false, func(b []byte) []byte { b[6] = 129; return b }), xdpDrop, DropCount, wire.ErrCount},
		{"length field", kvlp(false, func(b []byte) []byte { b[5]++; return b }), xdpDrop, DropLength, wire.ErrLength},
		{"count past datagram", kvlp(true, func(b []byte) []byte {
			b[6]++
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)+wire.EntryLen))
			return b
		}), xdpDrop, DropTruncated, wire.ErrTruncated},
		{"unknown flag", kvlp(false, func(b []byte) []byte { b[7] = 0x80; return b }), xdpDrop, DropFlags, wire.ErrFlags},
		{"fragment index", kvlp(false, func(b []byte) []byte { b[25] = 1; return b }), xdpDrop, DropFragment, wire.ErrFragment},
		{"fragment count 0", kvlp(false, func(b []byte) []byte { b[27] = 0; return b }), xdpDrop, DropFragment, wire.ErrFragment},
		{"reserved", kvlp(false, func(b []byte) []byte { b[30] = 1; return b }), xdpDrop, DropReserved, wire.ErrReserved},
		{"hint with hits", kvlp(false, func(b []byte) []byte { b[29] = 1; return b }), xdpDrop, DropReserved, wire.ErrReserved},
		{"hint with bitmap", kvlp(true, func(b []byte) []byte { b[47] = 0x80; return b }), xdpDrop, DropReserved, wire.ErrReserved},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := tp.counters(t)
			v, out := tp.run(t, c.frame)
			if v != c.verdict {
				t.Fatalf("verdict %d, want %d", v, c.verdict)
			}
			if !bytes.Equal(out, c.frame) {
				t.Fatal("the program changed a frame it did not answer")
			}
			want := map[Counter]uint64{c.counter: 1}
			if d := diff(before, tp.counters(t)); !mapsEqual(d, want) {
				t.Fatalf("counters changed by %v, want %v", d, want)
			}
			if c.wireErr != nil {
				pkt, err := wire.NewParser(testPort).Parse(c.frame)
				if !errors.Is(err, c.wireErr) {
					t.Fatalf("wire parses the same frame with %v (packet %v), want %v", err, pkt, c.wireErr)
				}
			}
		})
	}
	if evs := tp.events(t); len(evs) != 0 {
		t.Fatalf("malformed frames produced %d ring-buffer events", len(evs))
	}
	c := tp.counters(t)
	var drops uint64
	for _, cs := range cases {
		if cs.verdict == xdpDrop {
			drops++
		}
	}
	if c.Malformed() != drops {
		t.Fatalf("Malformed() = %d, %d frames were dropped", c.Malformed(), drops)
	}
}

// ipv4Edit changes an IPv4 frame's header and fixes its checksum.
func ipv4Edit(frame []byte, f func(b []byte)) []byte {
	b := bytes.Clone(frame)
	f(b)
	b[24], b[25] = 0, 0
	binary.BigEndian.PutUint16(b[24:], ipChecksum(b[14:34]))
	return b
}

// TestProgramNoReply: a NO_REPLY hint starts the prefetches and is consumed.
func TestProgramNoReply(t *testing.T) {
	tp := loadProgram(t, testPort)
	tp.put(t, 3, map[uint64]kvlpKvlpValue{1: {ChunkKey: chunkKey(1)}, 2: {ChunkKey: chunkKey(2)}})
	h := wire.Hint{RequestID: 8, SaltID: 3, Flags: wire.FlagNoReply, Anchors: []wire.HintEntry{{Fingerprint: 1}, {Fingerprint: 5}, {Fingerprint: 2}}}
	ps, err := h.Packets(wire.MaxEntries)
	if err != nil {
		t.Fatal(err)
	}
	frame := mustFrame(t, func() ([]byte, error) { return endpoints(false, testPort).Frame(ps[0]) })
	before := tp.counters(t)
	v, out := tp.run(t, frame)
	if v != xdpDrop || !bytes.Equal(out, frame) {
		t.Fatalf("verdict %d (want XDP_DROP), frame changed %v", v, !bytes.Equal(out, frame))
	}
	want := map[Counter]uint64{HintConsumed: 1, Lookups: 3, Hits: 2, Events: 2}
	if d := diff(before, tp.counters(t)); !mapsEqual(d, want) {
		t.Fatalf("counters changed by %v, want %v", d, want)
	}
	evs := tp.events(t)
	if len(evs) != 2 || evs[0].Chunk != chunkKey(1) || evs[1].Chunk != chunkKey(2) || evs[1].Entry != 2 {
		t.Fatalf("events %+v", evs)
	}
}

// TestProgramPort: the port is the program's variable, not a constant.
func TestProgramPort(t *testing.T) {
	tp := loadProgram(t, 9000)
	hint := hintMsg(1, 1, 1)
	on7470 := mustFrame(t, func() ([]byte, error) { return endpoints(false, wire.DefaultPort).Frame(hint) })
	on9000 := mustFrame(t, func() ([]byte, error) { return endpoints(false, 9000).Frame(hint) })
	if v, _ := tp.run(t, on7470); v != xdpPass {
		t.Fatalf("hint on 7470 with port 9000 configured: verdict %d, want XDP_PASS", v)
	}
	if v, _ := tp.run(t, on9000); v != xdpTX {
		t.Fatalf("hint on 9000: verdict %d, want XDP_TX", v)
	}
	if err := tp.port.Set(uint16(wire.DefaultPort)); err != nil {
		t.Fatal(err)
	}
	if v, _ := tp.run(t, on7470); v != xdpTX {
		t.Fatalf("after switching to 7470: verdict %d, want XDP_TX", v)
	}
}

// TestProgramRingFull: when the consumer falls behind, events are lost and
// counted, and replies are not affected.
func TestProgramRingFull(t *testing.T) {
	tp := loadProgram(t, testPort)
	idx := map[uint64]kvlpKvlpValue{}
	var fps []uint64
	for i := uint64(1); i <= wire.MaxEntries; i++ {
		idx[i] = kvlpKvlpValue{ChunkKey: chunkKey(i)}
		fps = append(fps, i)
	}
	tp.put(t, 1, idx)
	h := wire.Hint{RequestID: 1, SaltID: 1, Flags: wire.FlagNoReply}
	for _, fp := range fps {
		h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: fp})
	}
	ps, err := h.Packets(wire.MaxEntries)
	if err != nil {
		t.Fatal(err)
	}
	frame := mustFrame(t, func() ([]byte, error) { return endpoints(false, testPort).Frame(ps[0]) })
	ringSize := uint64(tp.program.events.MaxEntries())
	runs := 2 * ringSize / (wire.MaxEntries * 64) // twice what the ring can hold
	before := tp.counters(t)
	if _, err := tp.prog.Run(&ebpf.RunOptions{Data: frame, Repeat: uint32(runs)}); err != nil {
		t.Fatal(err)
	}
	d := diff(before, tp.counters(t))
	hits := d[Hits]
	if hits < runs*wire.MaxEntries || d[EventsLost] == 0 || d[Events]+d[EventsLost] != hits {
		t.Fatalf("after %d runs of 128 hits: counters %v, want events+events_lost = hits and some lost", runs, d)
	}
	// Drain, then a replied hint still gets its events and its reply.
	tp.events(t)
	hint := hintMsg(2, 1, 1, 2)
	v, _ := tp.run(t, mustFrame(t, func() ([]byte, error) { return endpoints(false, testPort).Frame(hint) }))
	if evs := tp.events(t); v != xdpTX || len(evs) != 2 {
		t.Fatalf("after draining: verdict %d, %d events", v, len(evs))
	}
}
