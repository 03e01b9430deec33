//go:build !purego

package kvcache

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveCRCFold says the CPU (and OS) support the AVX-512 folding kernel.
var haveCRCFold = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasPCLMULQDQ && cpu.X86.HasAVX

// crc32cFold folds p (a non-zero multiple of 64 bytes) into 16 bytes out
// whose raw CRC32C equals that of p with init XORed into its first 4 bytes:
// crc32.Update(0xffffffff, castagnoli, out) is p's CRC32C for initial
// value ^init.
//
//go:noescape
func crc32cFold(init uint32, p []byte, out *[16]byte)

// crc32cCopyFold is crc32cFold that also stores every 64-byte block it
// loads from src into dst (len(dst) == len(src)).
//
//go:noescape
func crc32cCopyFold(init uint32, dst, src []byte, out *[16]byte)

// crc32cCopyFoldNT is crc32cCopyFold with non-temporal stores; dst must be
// 64-byte aligned.
//
//go:noescape
func crc32cCopyFoldNT(init uint32, dst, src []byte, out *[16]byte)

// copyNT copies n bytes (a non-zero multiple of 256, dst 64-byte aligned)
// with non-temporal stores and a final SFENCE.
//
//go:noescape
func copyNT(dst, src unsafe.Pointer, n int)

// haveCopyNT says copyNT can run.
var haveCopyNT = cpu.X86.HasAVX512F
