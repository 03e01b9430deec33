//go:build linux

package xdp

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func encodeHit(ev PrefetchEvent) []byte {
	raw := kvlpKvlpEvent{Kind: recordHit, Ifindex: ev.Ifindex, RequestId: ev.RequestID, SaltId: ev.SaltID, Fingerprint: ev.Fingerprint,
		ChunkKey: ev.Chunk, TokenOffset: ev.TokenOffset, ChunkOffset: ev.ChunkOffset, FragIndex: ev.FragIndex, Entry: ev.Entry,
		TimestampNs: uint64(ev.Time)}
	b, err := binary.Append(nil, binary.NativeEndian, &raw)
	if err != nil {
		panic(err)
	}
	return b
}

func encodeDone(d HintDone) []byte {
	raw := kvlpKvlpDone{Kind: recordDone, Ifindex: d.Ifindex, RequestId: d.RequestID, SaltId: d.SaltID, FragIndex: d.FragIndex,
		FragCount: d.FragCount, Entries: uint16(d.Entries), Hits: uint16(d.Hits), Events: uint32(d.Events), TimestampNs: uint64(d.Time)}
	b, err := binary.Append(nil, binary.NativeEndian, &raw)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecodeRecord: ring-buffer records never panic the reader; an error
// yields nothing; a decoded record encodes back to the bytes it came from
// (reserved fields aside). Seeds: testdata/fuzz/FuzzDecodeRecord.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeHit(PrefetchEvent{RequestID: 1, SaltID: 2, Fingerprint: 3, Chunk: chunkKey(4), TokenOffset: 5, ChunkOffset: 6, FragIndex: 7, Entry: 8, Ifindex: 9, Time: 10}))
	f.Add(encodeDone(HintDone{RequestID: 1, SaltID: 2, FragIndex: 0, FragCount: 1, Entries: 64, Hits: 16, Events: 16, Ifindex: 3, Time: 4}))
	f.Fuzz(func(t *testing.T, b []byte) {
		hit, done, err := decodeRecord(b)
		if err != nil {
			if hit != nil || done != nil {
				t.Fatalf("error %v with a record", err)
			}
			return
		}
		var enc []byte
		var reserved int
		switch {
		case hit != nil && done == nil:
			enc, reserved = encodeHit(*hit), 60
		case done != nil && hit == nil:
			enc, reserved = encodeDone(*done), 36
		default:
			t.Fatalf("decoded %v and %v", hit, done)
		}
		in := bytes.Clone(b[:len(enc)])
		copy(in[reserved:reserved+4], make([]byte, 4))
		if !bytes.Equal(in, enc) {
			t.Fatalf("record does not round-trip:\n in %x\nout %x", in, enc)
		}
	})
}

// TestRecordLayout pins decodeRecord's offsets to the bpf2go structs: a
// record encoded from the struct decodes to the same fields.
func TestRecordLayout(t *testing.T) {
	if hitSize != 72 || doneSize != 48 {
		t.Fatalf("record sizes %d and %d, bpf/kvlp.c asserts 72 and 48", hitSize, doneSize)
	}
	want := PrefetchEvent{RequestID: 1, SaltID: 2, Fingerprint: 3, Chunk: chunkKey(4), TokenOffset: 5, ChunkOffset: 6, FragIndex: 7, Entry: 8, Ifindex: 9, Time: 10}
	if ev, _, err := decodeRecord(encodeHit(want)); err != nil || *ev != want {
		t.Fatalf("hit record decodes to %+v, %v; want %+v", ev, err, want)
	}
	wd := HintDone{RequestID: 1, SaltID: 2, FragIndex: 3, FragCount: 4, Entries: 5, Hits: 6, Events: 7, Ifindex: 8, Time: 9}
	if _, d, err := decodeRecord(encodeDone(wd)); err != nil || *d != wd {
		t.Fatalf("done record decodes to %+v, %v; want %+v", d, err, wd)
	}
	if _, _, err := decodeRecord([]byte{9, 0, 0, 0}); err == nil {
		t.Fatal("unknown record kind decoded")
	}
}
