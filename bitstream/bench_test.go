package bitstream_test

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/testutil"
)

// BenchmarkParse parses a signed image with a 16 MiB payload (the size of a
// mid-range partial bitstream) and verifies its signature. Parsing hashes
// every payload byte once, so the figure is reported against SHA-256 over
// the same bytes: x-vs-sha256 near 1 means parsing adds little to the hash.
func BenchmarkParse(b *testing.B) {
	size := 16 << 20
	if testing.Short() {
		size = 1 << 20
	}
	payload := make([]byte, size)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range payload {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		payload[i] = byte(x) | 1
	}
	key, ring := testutil.ImageKey(b)
	img := testutil.SignedImage(b, testutil.ImageManifest(bitstream.KindFPGA, "kvmatch", "1.0.0"), key,
		bitstream.Payload{Name: "pr", Type: bitstream.PayloadRaw, Data: payload})
	data := img.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := bitstream.Parse(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := got.Verify(ring); err != nil {
			b.Fatal(err)
		}
	}
	benchutil.ReportRatio(b, "x-vs-sha256", float64(len(data)), benchutil.Baseline{
		Op:    func() { sha256.Sum256(data) },
		PerOp: float64(len(data)),
	})
}
