package bitstream_test

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
)

// Every fuzz target's property: an error means no result; a result is
// consistent with the input (and re-encodes to it where the format is
// canonical). Seeds live in testdata/fuzz/<target>/ (TestFuzzCorpus).

func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := bitstream.ParseWithLimits(bytes.NewReader(data), bitstream.Limits{MaxImageSize: 1 << 20})
		if err != nil {
			if img != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		if !bytes.Equal(img.Bytes(), data) {
			t.Fatalf("parsed image re-encodes to other bytes")
		}
		again, err := bitstream.Parse(bytes.NewReader(img.Bytes()))
		if err != nil || again.ID() != img.ID() {
			t.Fatalf("re-parse: %v", err)
		}
		if err := img.Manifest().Validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		_ = bitstream.Inspect(img)
		_, _ = img.Verify(nil)
	})
}

func FuzzParseBit(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		bf, err := bitstream.ParseBit(data)
		if err != nil {
			if bf != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		// Re-encode from the parsed fields: the input must come back.
		out := []byte{0x00, 0x09, 0x0f, 0xf0, 0x0f, 0xf0, 0x0f, 0xf0, 0x0f, 0xf0, 0x00, 0x00, 0x01}
		for i, v := range []string{bf.DesignField, bf.Part, bf.Date, bf.Time} {
			out = append(out, "abcd"[i])
			out = binary.BigEndian.AppendUint16(out, uint16(len(v)+1))
			out = append(append(out, v...), 0)
		}
		out = append(out, 'e')
		out = binary.BigEndian.AppendUint32(out, uint32(bf.DataLength))
		if len(out) != bf.DataOffset {
			t.Fatalf("data offset %d, header re-encodes to %d bytes", bf.DataOffset, len(out))
		}
		out = append(out, bf.Data...)
		out = append(out, data[len(out):]...)
		if !bytes.Equal(out, data) || bf.DataOffset+bf.DataLength+bf.Trailing != len(data) {
			t.Fatalf("fields do not re-encode to the input")
		}
		if bf.SyncOffset%4 != 0 || !bytes.Equal(bf.Data[bf.SyncOffset:bf.SyncOffset+4], bitstream.SyncWord[:]) {
			t.Fatalf("sync offset %d does not hold the sync word", bf.SyncOffset)
		}
	})
}

func FuzzParseXclbin(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := bitstream.ParseXclbin(data)
		if err != nil {
			if x != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		if x.Length != uint64(len(data)) {
			t.Fatalf("length %d for %d bytes", x.Length, len(data))
		}
		end := uint64(456 + 40*len(x.Sections))
		for i, s := range x.Sections {
			if s.Size == 0 {
				continue
			}
			if s.Offset < end || s.Offset+s.Size > x.Length || s.Offset%8 != 0 || !bytes.Equal(s.Data, data[s.Offset:s.Offset+s.Size]) {
				t.Fatalf("section %d [%d, +%d) inconsistent", i, s.Offset, s.Size)
			}
		}
	})
}

func FuzzInspectEBPF(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := bitstream.InspectEBPF(data)
		if err != nil {
			if info != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		if len(info.Programs) == 0 || info.License == "" {
			t.Fatalf("accepted an object without programs or license: %+v", info)
		}
	})
}

func FuzzUnmarshalManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := bitstream.UnmarshalManifest(data)
		if err != nil {
			if !reflect.DeepEqual(m, bitstream.Manifest{}) {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		canon, err := m.MarshalCanonical()
		if err != nil {
			t.Fatalf("valid manifest does not encode: %v", err)
		}
		again, err := bitstream.UnmarshalManifest(canon)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("canonical round trip: %v", err)
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := bitstream.ParsePublicKey(data)
		if err != nil {
			if pub != nil {
				t.Fatalf("error %v with a result", err)
			}
			return
		}
		enc, err := bitstream.MarshalPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		back, err := bitstream.ParsePublicKey(enc)
		if err != nil || !back.Equal(pub) {
			t.Fatalf("key round trip: %v", err)
		}
	})
}
