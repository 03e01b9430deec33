package wire

import (
	"bytes"
	"testing"
)

// FuzzDecode: an error leaves no message; a decoded message re-serializes to
// exactly the bytes it came from. Seeds: testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, n := range []int{1, 3, MaxEntries} {
		hint := sampleHint(n)
		b, err := hint.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		r, err := Answer(hint, func(_, fp uint64) (ReplyEntry, bool) { return ReplyEntry{ChunkID: fp, ChunkOffset: 1}, fp%3 == 0 })
		if err != nil {
			f.Fatal(err)
		}
		if b, err = r.Marshal(); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			if m != nil {
				t.Fatalf("error %v with a message", err)
			}
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("decoded message does not serialize: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("round trip changed the message:\n in %x\nout %x", data, out)
		}
	})
}

// FuzzParse: whole frames through the Parser never panic; an accepted frame
// carries a message that re-serializes to its UDP payload's prefix of the
// declared length.
func FuzzParse(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		frame, err := testEndpoints(v6).Frame(sampleHint(4))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	p := NewParser(DefaultPort)
	f.Fuzz(func(t *testing.T, frame []byte) {
		pkt, err := p.Parse(frame)
		if err != nil {
			if pkt != nil {
				t.Fatalf("error %v with a packet", err)
			}
			return
		}
		out, err := pkt.Message.Marshal()
		if err != nil {
			t.Fatalf("parsed message does not serialize: %v", err)
		}
		if !bytes.Contains(frame, out) {
			t.Fatal("parsed message is not in the frame")
		}
	})
}
