package wire_test

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/kvloom/kvloom/nic/wire"
)

// A router splits a request's anchors into HINT messages that fit the MTU.
func ExampleHint_Packets() {
	h := wire.Hint{RequestID: 42, SaltID: 0x1122334455667788}
	for i := range 300 {
		h.Anchors = append(h.Anchors, wire.HintEntry{Fingerprint: uint64(i) * 0x9e3779b97f4a7c15, TokenOffset: uint32(i * 16)})
	}
	per, err := wire.EntriesPerPacket(1500, false)
	if err != nil {
		panic(err)
	}
	msgs, err := h.Packets(per)
	if err != nil {
		panic(err)
	}
	for _, m := range msgs {
		b, err := m.Marshal()
		if err != nil {
			panic(err)
		}
		fmt.Printf("fragment %d/%d: %d entries, %d bytes\n", m.FragIndex, m.FragCount, m.Count(), len(b))
	}
	// Output:
	// fragment 0/3: 118 entries, 1464 bytes
	// fragment 1/3: 118 entries, 1464 bytes
	// fragment 2/3: 64 entries, 816 bytes
}

// A responder answers a hint from its index; the sender pairs the reply with
// its hint to learn where the found chunks start in the prompt.
func ExampleAnswer() {
	hint := wire.Hint{RequestID: 7, SaltID: 1, Anchors: []wire.HintEntry{
		{Fingerprint: 0xaaaa, TokenOffset: 0},
		{Fingerprint: 0xbbbb, TokenOffset: 40},
	}}
	msgs, err := hint.Packets(wire.MaxEntries)
	if err != nil {
		panic(err)
	}
	index := map[uint64]wire.ReplyEntry{0xbbbb: {ChunkID: 0xc0ffee, ChunkOffset: 8}}
	reply, err := wire.Answer(msgs[0], func(salt, fp uint64) (wire.ReplyEntry, bool) {
		e, ok := index[fp]
		return e, ok && salt == 1
	})
	if err != nil {
		panic(err)
	}
	hits, err := wire.HitsOf(msgs[0], reply)
	if err != nil {
		panic(err)
	}
	for _, h := range hits {
		fmt.Printf("anchor %d: chunk %#x starts at prompt token %d\n", h.Index, h.Reply.ChunkID, h.Hint.TokenOffset-h.Reply.ChunkOffset)
	}
	// Output:
	// anchor 1: chunk 0xc0ffee starts at prompt token 32
}

// Decode checks every field and names the one that is wrong.
func ExampleDecode() {
	msgs, err := wire.Hint{RequestID: 1, Anchors: []wire.HintEntry{{Fingerprint: 5}}}.Packets(1)
	if err != nil {
		panic(err)
	}
	b, err := msgs[0].Marshal()
	if err != nil {
		panic(err)
	}
	m, err := wire.Decode(b)
	fmt.Println(m.Type, m.RequestID, m.Hints[0].Fingerprint, err)
	b[2] = 9 // version
	_, err = wire.Decode(b)
	fmt.Println(err)
	// Output:
	// HINT 1 5 <nil>
	// decode kvlp: field version at offset 2: value 9, want 1: kvlp unsupported version
}

// Endpoints build whole Ethernet frames; a Parser configured with the port
// decodes them without touching any global registration.
func ExampleParser() {
	ep := wire.Endpoints{
		SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		SrcIP: netip.MustParseAddr("10.0.0.1"), DstIP: netip.MustParseAddr("10.0.0.2"),
		SrcPort: 40000, DstPort: 9000,
	}
	msgs, err := wire.Hint{RequestID: 3, Anchors: []wire.HintEntry{{Fingerprint: 1, TokenOffset: 2}}}.Packets(1)
	if err != nil {
		panic(err)
	}
	frame, err := ep.Frame(msgs[0])
	if err != nil {
		panic(err)
	}
	pkt, err := wire.NewParser(9000).Parse(frame)
	if err != nil {
		panic(err)
	}
	fmt.Println(pkt.SrcIP, "→", pkt.DstIP, pkt.Message.Type, pkt.Message.RequestID)
	_, err = wire.NewParser(wire.DefaultPort).Parse(frame)
	fmt.Println(err != nil)
	// Output:
	// 10.0.0.1 → 10.0.0.2 HINT 3
	// true
}

// A Recorder writes frames to a pcap file that Wireshark reads with
// docs/kvlp.lua.
func ExampleNewRecorder() {
	var file bytes.Buffer
	rec, err := wire.NewRecorder(&file, 0)
	if err != nil {
		panic(err)
	}
	frame := make([]byte, 60)
	if err := rec.Write(time.Unix(0, 0), frame); err != nil {
		panic(err)
	}
	fmt.Println(rec.Frames(), file.Len())
	// Output:
	// 1 100
}
