package kvcache

import (
	"hash/crc32"
	"unsafe"
)

// crcFoldMin is the shortest input the folding kernel takes; shorter ones
// go to hash/crc32 directly.
const crcFoldMin = 256

// crc32c updates a CRC32C (Castagnoli) with p, like crc32.Update with the
// Castagnoli table. On amd64 with AVX-512 VPCLMULQDQ it folds 64 bytes per
// step with carry-less multiplies (hash/crc32 has that kernel only for the
// IEEE polynomial; its Castagnoli path, SSE4.2 CRC32, runs at a third of
// memory bandwidth); elsewhere it is hash/crc32.
func crc32c(crc uint32, p []byte) uint32 {
	if !haveCRCFold || len(p) < crcFoldMin {
		return crc32.Update(crc, castagnoli, p)
	}
	n := len(p) &^ 63
	var r [16]byte
	crc32cFold(^crc, p[:n], &r)
	return crc32.Update(crc32cFinish(&r), castagnoli, p[n:])
}

// crc32cFinish is crc32.Update(0xffffffff, castagnoli, r[:]) without
// letting r escape to the heap.
func crc32cFinish(r *[16]byte) uint32 {
	c := uint32(0)
	for _, b := range r {
		c = castagnoli[byte(c)^b] ^ c>>8
	}
	return ^c
}

// ntCopyMin is where memmove switches to non-temporal stores; the copying
// kernel follows it so that it is compared with copy() doing the same.
const ntCopyMin = 1 << 20

// crc32cCopy copies src to dst (equal lengths) and returns crc updated with
// the bytes, reading each byte from memory once. large says the copy is
// part of one of at least ntCopyMin bytes, so stores may bypass the cache.
func crc32cCopy(crc uint32, dst, src []byte, large bool) uint32 {
	if !haveCRCFold || len(src) < crcFoldMin {
		copy(dst, src)
		return crc32.Update(crc, castagnoli, dst)
	}
	n := len(src) &^ 63
	var r [16]byte
	if large && uintptr(unsafe.Pointer(&dst[0]))%64 == 0 {
		crc32cCopyFoldNT(^crc, dst[:n], src[:n], &r)
	} else {
		crc32cCopyFold(^crc, dst[:n], src[:n], &r)
	}
	copy(dst[n:], src[n:])
	return crc32.Update(crc32cFinish(&r), castagnoli, dst[n:len(src)])
}

// copyLarge is copy(dst, src) for bytes that are written once and read
// later by someone else (DMA, another core): with large set it stores past
// the cache, as memmove does for its own copies of ntCopyMin bytes and more.
func copyLarge(dst, src []byte, large bool) {
	n := min(len(dst), len(src))
	if !large || !haveCopyNT || n < 4096 {
		copy(dst, src)
		return
	}
	head := int((64 - uintptr(unsafe.Pointer(unsafe.SliceData(dst)))%64) % 64)
	copy(dst[:head], src[:head])
	body := (n - head) &^ 255
	copyNT(unsafe.Pointer(&dst[head]), unsafe.Pointer(&src[head]), body)
	copy(dst[head+body:n], src[head+body:n])
}
