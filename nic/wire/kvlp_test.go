package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/kvloom/kvloom/matcher"
)

func testEndpoints(v6 bool) Endpoints {
	e := Endpoints{
		SrcMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}, DstMAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02},
		SrcIP: netip.MustParseAddr("10.1.0.1"), DstIP: netip.MustParseAddr("10.1.0.2"),
		SrcPort: 40001, DstPort: DefaultPort,
	}
	if v6 {
		e.SrcIP, e.DstIP = netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	}
	return e
}

func sampleHint(n int) *KVLP {
	h := Hint{RequestID: 0x0102030405060708, SaltID: 0x1122334455667788}
	for i := range n {
		h.Anchors = append(h.Anchors, HintEntry{Fingerprint: 0x9e3779b97f4a7c15 * uint64(i+1), TokenOffset: uint32(17 * i)})
	}
	ps, err := h.Packets(MaxEntries)
	if err != nil {
		panic(err)
	}
	return ps[0]
}

func TestRoundTrip(t *testing.T) {
	hint := sampleHint(5)
	data, err := hint.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != HeaderLen+5*EntryLen {
		t.Fatalf("hint is %d bytes, want %d", len(data), HeaderLen+5*EntryLen)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.RequestID != hint.RequestID || got.SaltID != hint.SaltID || got.FragCount != 1 || !slices.Equal(got.Hints, hint.Hints) {
		t.Fatalf("decoded %+v, want %+v", got, hint)
	}
	if !bytes.Equal(got.LayerContents(), data) {
		t.Fatal("LayerContents is not the message bytes")
	}

	reply, err := Answer(hint, func(salt, fp uint64) (ReplyEntry, bool) {
		if salt != hint.SaltID {
			t.Fatalf("lookup under salt %#x", salt)
		}
		if fp == hint.Hints[1].Fingerprint || fp == hint.Hints[4].Fingerprint {
			return ReplyEntry{ChunkID: fp ^ 1, ChunkOffset: 3}, true
		}
		return ReplyEntry{}, false
	})
	if err != nil {
		t.Fatal(err)
	}
	rdata, err := reply.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(rdata) != len(data) {
		t.Fatalf("reply is %d bytes, hint %d: a reply must fit in place", len(rdata), len(data))
	}
	back, err := Decode(rdata)
	if err != nil {
		t.Fatal(err)
	}
	if back.Hits != 2 || back.Bitmap[0] != 0b10010 || back.Type != TypeHintReply {
		t.Fatalf("reply hits %d bitmap %08b type %v, want 2, 10010, HINT_REPLY", back.Hits, back.Bitmap[0], back.Type)
	}
	hits, err := HitsOf(hint, back)
	if err != nil {
		t.Fatal(err)
	}
	want := []Hit{
		{Index: 1, Hint: hint.Hints[1], Reply: ReplyEntry{ChunkID: hint.Hints[1].Fingerprint ^ 1, ChunkOffset: 3}},
		{Index: 4, Hint: hint.Hints[4], Reply: ReplyEntry{ChunkID: hint.Hints[4].Fingerprint ^ 1, ChunkOffset: 3}},
	}
	if !slices.Equal(hits, want) {
		t.Fatalf("hits %+v, want %+v", hits, want)
	}
}

// TestSpecExample pins the byte layout of docs/protocol.md's example.
func TestSpecExample(t *testing.T) {
	h := Hint{RequestID: 7, SaltID: 0x1122334455667788, Anchors: []HintEntry{
		{Fingerprint: 0x0102030405060708, TokenOffset: 0},
		{Fingerprint: 0xaabbccddeeff0011, TokenOffset: 37},
	}}
	ps, err := h.Packets(EntriesPerPacketMust(t, 1500, false))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ps[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x4b, 0x56, 0x01, 0x01, 0x00, 0x48, 0x02, 0x00,
		0, 0, 0, 0, 0, 0, 0, 7,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
		0, 0, 0, 1, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0,
		1, 2, 3, 4, 5, 6, 7, 8,
		0, 0, 0, 0,
		0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11,
		0, 0, 0, 37,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("spec example:\n got %x\nwant %x", got, want)
	}
	var key matcher.ChunkKey
	copy(key[:], []byte{0xc0, 0xff, 0xee, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	reply, err := Answer(ps[0], func(_, fp uint64) (ReplyEntry, bool) {
		return ReplyEntry{ChunkID: ChunkID(key), ChunkOffset: 5}, fp == 0xaabbccddeeff0011
	})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := reply.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if rb[3] != 2 || rb[29] != 1 || rb[32] != 0x02 || !bytes.Equal(rb[48:60], make([]byte, 12)) ||
		!bytes.Equal(rb[60:68], key[:8]) || binary.BigEndian.Uint32(rb[68:]) != 5 {
		t.Fatalf("spec example reply: %x", rb)
	}
}

func EntriesPerPacketMust(t *testing.T, mtu int, v6 bool) int {
	t.Helper()
	n, err := EntriesPerPacket(mtu, v6)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEntriesPerPacket(t *testing.T) {
	for _, c := range []struct {
		mtu  int
		v6   bool
		want int
	}{
		{1500, false, 118}, {1500, true, 117}, {9000, false, MaxEntries}, {576, false, 41}, {88, false, 1},
	} {
		if got := EntriesPerPacketMust(t, c.mtu, c.v6); got != c.want {
			t.Errorf("EntriesPerPacket(%d, v6=%v) = %d, want %d", c.mtu, c.v6, got, c.want)
		}
		// The frame of a full packet must fit the MTU.
		h := Hint{RequestID: 1, Anchors: make([]HintEntry, c.want)}
		ps, err := h.Packets(c.want)
		if err != nil {
			t.Fatal(err)
		}
		f, err := testEndpoints(c.v6).Frame(ps[0])
		if err != nil {
			t.Fatal(err)
		}
		if ipLen := len(f) - 14; ipLen > c.mtu {
			t.Errorf("mtu %d: IP packet of %d entries is %d bytes", c.mtu, c.want, ipLen)
		}
	}
	if _, err := EntriesPerPacket(87, false); err == nil {
		t.Fatal("EntriesPerPacket(87) fits no entry but did not fail")
	}
}

func TestPackets(t *testing.T) {
	h := Hint{RequestID: 9, SaltID: 3, Flags: FlagNoReply}
	for i := range 250 {
		h.Anchors = append(h.Anchors, HintEntry{Fingerprint: uint64(i), TokenOffset: uint32(i)})
	}
	ps, err := h.Packets(118)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("250 anchors at 118 per packet: %d packets, want 3", len(ps))
	}
	var all []HintEntry
	for i, p := range ps {
		data, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if int(d.FragIndex) != i || d.FragCount != 3 || d.Flags != FlagNoReply || d.RequestID != 9 {
			t.Fatalf("packet %d: frag %d/%d flags %v request %d", i, d.FragIndex, d.FragCount, d.Flags, d.RequestID)
		}
		all = append(all, d.Hints...)
	}
	if !slices.Equal(all, h.Anchors) {
		t.Fatal("packets do not carry the anchors in order")
	}
	if ps, err := (Hint{}).Packets(10); err != nil || len(ps) != 0 {
		t.Fatalf("empty hint: %d packets, err %v; want none", len(ps), err)
	}
	for _, n := range []int{0, MaxEntries + 1} {
		if _, err := h.Packets(n); err == nil {
			t.Errorf("Packets(%d) did not fail", n)
		}
	}
	if _, err := (Hint{Flags: 0x80, Anchors: h.Anchors}).Packets(10); !errors.Is(err, ErrFlags) {
		t.Errorf("unknown flag: err %v, want ErrFlags", err)
	}
}

// TestDecodeMalformed covers every check of the header table in
// docs/protocol.md, with the sentinel and the field each must name.
func TestDecodeMalformed(t *testing.T) {
	good, err := sampleHint(3).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	reply := func() []byte {
		r, err := Answer(sampleHint(3), func(_, fp uint64) (ReplyEntry, bool) { return ReplyEntry{ChunkID: 1}, fp%2 == 1 })
		if err != nil {
			t.Fatal(err)
		}
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mod := func(base []byte, f func(b []byte) []byte) []byte { return f(bytes.Clone(base)) }
	cases := []struct {
		name  string
		data  []byte
		want  error
		field string
	}{
		{"empty", nil, ErrTruncated, "header"},
		{"short header", good[:HeaderLen-1], ErrTruncated, "header"},
		{"entries cut", good[:len(good)-1], ErrTruncated, "length"},
		{"trailing byte", append(bytes.Clone(good), 0), ErrLength, "length"},
		{"magic", mod(good, func(b []byte) []byte { b[0] = 'X'; return b }), ErrMagic, "magic"},
		{"version 0", mod(good, func(b []byte) []byte { b[2] = 0; return b }), ErrVersion, "version"},
		{"version 2", mod(good, func(b []byte) []byte { b[2] = 2; return b }), ErrVersion, "version"},
		{"type 0", mod(good, func(b []byte) []byte { b[3] = 0; return b }), ErrType, "type"},
		{"type 3", mod(good, func(b []byte) []byte { b[3] = 3; return b }), ErrType, "type"},
		{"count 0", mod(good, func(b []byte) []byte { b[6] = 0; return b }), ErrCount, "count"},
		{"count 129", mod(good, func(b []byte) []byte { b[6] = 129; return b }), ErrCount, "count"},
		{"count past data", mod(good, func(b []byte) []byte { b[6] = 4; return b }), ErrLength, "length"},
		{"length past data", mod(good, func(b []byte) []byte {
			b[6] = 4
			binary.BigEndian.PutUint16(b[4:], HeaderLen+4*EntryLen)
			return b
		}), ErrTruncated, "length"},
		{"length short", mod(good, func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], HeaderLen); return b }), ErrLength, "length"},
		{"flags", mod(good, func(b []byte) []byte { b[7] = 0x02; return b }), ErrFlags, "flags"},
		{"frag count 0", mod(good, func(b []byte) []byte { b[26], b[27] = 0, 0; return b }), ErrFragment, "frag_index"},
		{"frag index = count", mod(good, func(b []byte) []byte { b[25] = 1; return b }), ErrFragment, "frag_index"},
		{"reserved", mod(good, func(b []byte) []byte { b[31] = 1; return b }), ErrReserved, "reserved"},
		{"hint with hits", mod(good, func(b []byte) []byte { b[29] = 1; return b }), ErrReserved, "hits"},
		{"hint with bitmap", mod(good, func(b []byte) []byte { b[40] = 1; return b }), ErrReserved, "bitmap"},
		{"reply hits disagree", mod(reply(), func(b []byte) []byte { b[29]++; return b }), ErrReserved, "hits"},
		{"reply bit past count", mod(reply(), func(b []byte) []byte { b[32] |= 1 << 3; b[29]++; return b }), ErrReserved, "bitmap"},
		{"reply miss not zero", mod(reply(), func(b []byte) []byte { b[HeaderLen+EntryLen+3] = 9; return b }), ErrReserved, "entry[1]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := Decode(c.data)
			if m != nil {
				t.Fatal("error decode returned a message")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.Field != c.field {
				t.Fatalf("err %v does not name field %q", err, c.field)
			}
		})
	}
	// The reply helper itself must decode, or the reply cases prove nothing.
	if _, err := Decode(reply()); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeReusesAndResets(t *testing.T) {
	var m KVLP
	good, _ := sampleHint(4).Marshal()
	if err := m.DecodeFromBytes(good, gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[2] = 9
	if err := m.DecodeFromBytes(bad, gopacket.NilDecodeFeedback); err == nil {
		t.Fatal("bad version decoded")
	}
	if len(m.Hints) != 0 || m.LayerContents() != nil {
		t.Fatal("a failed decode left entries behind")
	}
	var df truncFeedback
	if err := m.DecodeFromBytes(good[:20], &df); !errors.Is(err, ErrTruncated) || !df.truncated {
		t.Fatalf("short data: err %v truncated %v", err, df.truncated)
	}
}

type truncFeedback struct{ truncated bool }

func (f *truncFeedback) SetTruncated() { f.truncated = true }

func TestSerializeChecks(t *testing.T) {
	m := sampleHint(2)
	m.FragIndex = 5
	if _, err := m.Marshal(); !errors.Is(err, ErrFragment) {
		t.Fatalf("fixed-length serialize of a bad fragment: %v, want ErrFragment", err)
	}
	// Without FixLengths the fields go out as they are, so tests can craft bad packets.
	buf := gopacket.NewSerializeBuffer()
	if err := m.SerializeTo(buf, gopacket.SerializeOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(buf.Bytes()); !errors.Is(err, ErrFragment) {
		t.Fatalf("crafted packet decodes with %v, want ErrFragment", err)
	}
	big := &KVLP{Version: Version, Type: TypeHint, Hints: make([]HintEntry, 256)}
	if err := big.SerializeTo(gopacket.NewSerializeBuffer(), gopacket.SerializeOptions{}); err == nil {
		t.Fatal("256 entries serialized into a one-byte count")
	}
}

func TestAnswerAndHitsOfMismatch(t *testing.T) {
	hint := sampleHint(3)
	if _, err := Answer(&KVLP{Type: TypeHintReply}, nil); err == nil {
		t.Fatal("answered a reply")
	}
	reply, err := Answer(hint, func(uint64, uint64) (ReplyEntry, bool) { return ReplyEntry{ChunkID: 5}, true })
	if err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(r *KVLP){
		"request":  func(r *KVLP) { r.RequestID++ },
		"salt":     func(r *KVLP) { r.SaltID++ },
		"fragment": func(r *KVLP) { r.FragIndex++ },
		"count":    func(r *KVLP) { r.Replies = r.Replies[:2] },
		"type":     func(r *KVLP) { r.Type = TypeHint },
	} {
		r := *reply
		mut(&r)
		if _, err := HitsOf(hint, &r); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: err %v, want ErrMismatch", name, err)
		}
	}
}

func TestParser(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		ep := testEndpoints(v6)
		hint := sampleHint(7)
		frame, err := ep.Frame(hint)
		if err != nil {
			t.Fatal(err)
		}
		p := NewParser(0)
		pkt, err := p.Parse(frame)
		if err != nil {
			t.Fatalf("v6=%v: %v", v6, err)
		}
		if pkt.SrcIP != ep.SrcIP || pkt.DstIP != ep.DstIP || pkt.SrcPort != ep.SrcPort || pkt.DstPort != ep.DstPort ||
			!bytes.Equal(pkt.SrcMAC, ep.SrcMAC) || !bytes.Equal(pkt.DstMAC, ep.DstMAC) {
			t.Fatalf("v6=%v: endpoints %+v, want %+v", v6, pkt.Endpoints, ep)
		}
		if !slices.Equal(pkt.Message.Hints, hint.Hints) {
			t.Fatalf("v6=%v: hints differ", v6)
		}
		// The UDP checksum gopacket computed must verify.
		if !udpChecksumOK(t, frame) {
			t.Fatalf("v6=%v: frame's UDP checksum does not verify", v6)
		}

		other := ep
		other.DstPort = 53
		f2, err := other.PayloadFrame([]byte("not kvlp"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(f2); !errors.Is(err, ErrNotKVLP) {
			t.Fatalf("v6=%v: DNS port frame: %v, want ErrNotKVLP", v6, err)
		}
		bad := bytes.Clone(frame)
		bad[len(bad)-EntryLen*7-HeaderLen+2] = 7 // version
		if _, err := p.Parse(bad); !errors.Is(err, ErrVersion) {
			t.Fatalf("v6=%v: bad version: %v", v6, err)
		}
	}
	if _, err := NewParser(0).Parse([]byte{1, 2, 3}); !errors.Is(err, ErrNotKVLP) {
		t.Fatalf("3-byte frame: %v", err)
	}
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	if _, err := NewParser(0).Parse(arp); !errors.Is(err, ErrNotKVLP) {
		t.Fatalf("ARP frame: %v", err)
	}
	if _, err := (Endpoints{SrcMAC: net.HardwareAddr{1}, DstMAC: net.HardwareAddr{1}}).Frame(sampleHint(1)); err == nil {
		t.Fatal("short MAC accepted")
	}
	e := testEndpoints(false)
	e.DstIP = netip.MustParseAddr("fd00::2")
	if _, err := e.Frame(sampleHint(1)); err == nil {
		t.Fatal("mixed address families accepted")
	}
}

// udpChecksumOK verifies the UDP checksum of an Ethernet/IP/UDP frame with
// an independent ones'-complement sum.
func udpChecksumOK(t *testing.T, frame []byte) bool {
	t.Helper()
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	var udp []byte
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		ihl := int(frame[14]&0xf) * 4
		add(frame[14+12 : 14+20])
		udp = frame[14+ihl:]
	case 0x86dd:
		add(frame[14+8 : 14+40])
		udp = frame[14+40:]
	default:
		t.Fatalf("not IP: %x", frame[12:14])
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	udp = udp[:ulen]
	sum += 17 + uint32(ulen)
	add(udp)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

func TestRegisterNewPacket(t *testing.T) {
	const port = 47011 // a port no other test maps
	Register(port)
	e := testEndpoints(false)
	e.DstPort = port
	frame, err := e.Frame(sampleHint(2))
	if err != nil {
		t.Fatal(err)
	}
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	l, ok := pkt.Layer(LayerTypeKVLP).(*KVLP)
	if !ok {
		t.Fatalf("NewPacket did not decode KVLP on port %d: %v", port, pkt)
	}
	if len(l.Hints) != 2 || LayerTypeKVLP.String() != "KVLP" {
		t.Fatalf("decoded %d hints, layer %v", len(l.Hints), LayerTypeKVLP)
	}
	if pkt.ApplicationLayer() != l {
		t.Fatal("KVLP is not the application layer")
	}
}

func TestChunkID(t *testing.T) {
	k, err := matcher.ParseChunkKey("c0ffee00112233445566778899aabbcc")
	if err != nil {
		t.Fatal(err)
	}
	if got := ChunkID(k); got != 0xc0ffee0011223344 {
		t.Fatalf("ChunkID = %#x", got)
	}
}

// TestFrameZeroChecksum: a UDP checksum that computes to zero goes out as
// 0xffff (RFC 768), not as "no checksum".
func TestFrameZeroChecksum(t *testing.T) {
	ep := testEndpoints(false)
	base := sampleHint(2)
	f0, err := ep.Frame(base)
	if err != nil {
		t.Fatal(err)
	}
	// Adding the checksum to the low word of the request id brings the sum
	// to 0xffff, whose complement is zero.
	c := binary.BigEndian.Uint16(f0[40:])
	m := *base
	m.RequestID = base.RequestID&^0xffff | uint64(uint16(base.RequestID)+c)
	if uint16(base.RequestID)+c < uint16(base.RequestID) { // ones' complement carry
		m.RequestID++
	}
	f, err := ep.Frame(&m)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.BigEndian.Uint16(f[40:]); got != 0xffff {
		t.Fatalf("checksum %#04x, want 0xffff", got)
	}
	if !udpChecksumOK(t, f) {
		t.Fatal("0xffff does not verify")
	}
}
