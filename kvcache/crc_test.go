package kvcache

import (
	"bytes"
	"hash/crc32"
	"math/bits"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// foldConst is reflect32(x^e mod P)<<1 for the Castagnoli polynomial, the
// form the folding kernel's constants take.
func foldConst(e int) uint64 {
	const poly = 0x1EDC6F41 // normal form of 0x82F63B78
	r := uint32(1)
	for range e {
		carry := r & 0x80000000
		r <<= 1
		if carry != 0 {
			r ^= poly
		}
	}
	return uint64(bits.Reverse32(r)) << 1
}

func TestCRCFoldConstants(t *testing.T) {
	// The values in crc_amd64.s.
	want := map[int]uint64{544: 0x740eef02, 480: 0x9e4addf8, 160: 0xf20c0dfe, 96: 0x14cd00bd6}
	for e, w := range want {
		if got := foldConst(e); got != w {
			t.Errorf("x^%d constant = %#x, crc_amd64.s has %#x", e, got, w)
		}
	}
}

// crc32c and crc32cCopy agree with hash/crc32 (the pure-Go path) on every
// length, alignment and initial value.
func TestCRC32CMatchesHashCRC32(t *testing.T) {
	if !haveCRCFold {
		t.Logf("no AVX-512 VPCLMULQDQ here: checking the hash/crc32 fallback only")
	}
	r := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 1<<16+200)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	lengths := []int{0, 1, 63, 64, 255, 256, 257, 319, 320, 1000, 4096, 4097, 1 << 16}
	for range 200 {
		lengths = append(lengths, r.IntN(1<<14))
	}
	dst := make([]byte, len(buf)+64)
	if a := int(uintptr(unsafe.Pointer(&dst[0])) % 64); a != 0 {
		dst = dst[64-a:] // so that offset 0 and 64 are 64-byte aligned
	}
	for _, n := range lengths {
		for _, off := range []int{0, 1, 7, 64} {
			p := buf[off : off+n]
			init := r.Uint32()
			want := crc32.Update(init, castagnoli, p)
			if got := crc32c(init, p); got != want {
				t.Fatalf("crc32c(len %d, off %d) = %08x, hash/crc32 %08x", n, off, got, want)
			}
			for _, doff := range []int{off + 3, 0, 64} { // unaligned and (for large) aligned destinations
				d := dst[doff : doff+n]
				clear(d)
				if got := crc32cCopy(init, d, p, true); got != want || !bytes.Equal(d, p) {
					t.Fatalf("crc32cCopy(len %d, off %d→%d) = %08x (copied ok: %v), hash/crc32 %08x", n, off, doff, got, bytes.Equal(d, p), want)
				}
				clear(d)
				if got := crc32cCopy(init, d, p, false); got != want || !bytes.Equal(d, p) {
					t.Fatalf("crc32cCopy(len %d, off %d→%d, small) = %08x, hash/crc32 %08x", n, off, doff, got, want)
				}
			}
		}
	}
	// The kernel itself, driven directly, on multiples of 64.
	if haveCRCFold {
		for _, n := range []int{64, 128, 192, 4096} {
			var out [16]byte
			crc32cFold(^uint32(0), buf[:n], &out)
			if got, want := crc32.Update(0xffffffff, castagnoli, out[:]), crc32.Checksum(buf[:n], castagnoli); got != want {
				t.Fatalf("kernel on %d bytes: %08x, want %08x", n, got, want)
			}
		}
	}
}

func TestCopyLarge(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	src := make([]byte, 1<<16+300)
	for i := range src {
		src[i] = byte(r.Uint32())
	}
	dst := make([]byte, len(src)+64)
	for _, n := range []int{0, 100, 4095, 4096, 4097, 10000, 1 << 16} {
		for _, off := range []int{0, 1, 63} {
			for _, large := range []bool{false, true} {
				d := dst[off : off+n]
				clear(dst)
				copyLarge(d, src[3:3+n], large)
				if !bytes.Equal(d, src[3:3+n]) || !allZero(dst[:off]) || !allZero(dst[off+n:]) {
					t.Fatalf("copyLarge n=%d off=%d large=%v wrote the wrong bytes", n, off, large)
				}
			}
		}
	}
}
