//go:build !purego

#include "textflag.h"

// CRC32C (Castagnoli, reflected) by carry-less multiplication, after Intel's
// "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ": the data
// is folded 64 bytes at a time into one 512-bit accumulator (four 128-bit
// lanes), the lanes are folded into one, and Go finishes the last 16 bytes
// with hash/crc32. Fold constants for a distance of D bits are
// reflect32(x^(D+32) mod P)<<1 (low qword) and reflect32(x^(D-32) mod P)<<1
// (high qword); crc_test.go recomputes them.

// D = 512: four copies, one per lane.
DATA k512<>+0(SB)/8, $0x00000000740eef02
DATA k512<>+8(SB)/8, $0x000000009e4addf8
DATA k512<>+16(SB)/8, $0x00000000740eef02
DATA k512<>+24(SB)/8, $0x000000009e4addf8
DATA k512<>+32(SB)/8, $0x00000000740eef02
DATA k512<>+40(SB)/8, $0x000000009e4addf8
DATA k512<>+48(SB)/8, $0x00000000740eef02
DATA k512<>+56(SB)/8, $0x000000009e4addf8
GLOBL k512<>(SB), RODATA, $64

// D = 128.
DATA k128<>+0(SB)/8, $0x00000000f20c0dfe
DATA k128<>+8(SB)/8, $0x000000014cd00bd6
GLOBL k128<>(SB), RODATA, $16

// func crc32cFold(init uint32, p []byte, out *[16]byte)
TEXT ·crc32cFold(SB), NOSPLIT, $0-40
	MOVL init+0(FP), X0
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	MOVQ out+32(FP), DI

	VPXORQ    Z10, Z10, Z10
	VMOVAPS   X0, X10
	VMOVDQU64 (SI), Z1
	VPXORQ    Z10, Z1, Z1
	ADDQ      $64, SI
	SUBQ      $64, CX
	VMOVDQU64 k512<>+0(SB), Z0
	JZ        fold4

loop:
	VMOVDQU64  (SI), Z11
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0x00, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z11, Z5, Z1
	ADDQ       $64, SI
	SUBQ       $64, CX
	JNZ        loop

fold4:
	VEXTRACTF32X4 $1, Z1, X2
	VEXTRACTF32X4 $2, Z1, X3
	VEXTRACTF32X4 $3, Z1, X4
	VMOVDQU       k128<>+0(SB), X0

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X2, X1, X1

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X3, X1, X1

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X4, X1, X1

	VMOVDQU X1, (DI)
	VZEROUPPER
	RET

// func crc32cCopyFold(init uint32, dst, src []byte, out *[16]byte)
TEXT ·crc32cCopyFold(SB), NOSPLIT, $0-64
	MOVL init+0(FP), X0
	MOVQ dst_base+8(FP), DI
	MOVQ src_base+32(FP), SI
	MOVQ src_len+40(FP), CX
	MOVQ out+56(FP), DX

	VPXORQ    Z10, Z10, Z10
	VMOVAPS   X0, X10
	VMOVDQU64 (SI), Z1
	VMOVDQU64 Z1, (DI)
	VPXORQ    Z10, Z1, Z1
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $64, CX
	VMOVDQU64 k512<>+0(SB), Z0
	JZ        cfold4

cloop:
	VMOVDQU64  (SI), Z11
	VMOVDQU64  Z11, (DI)
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0x00, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z11, Z5, Z1
	ADDQ       $64, SI
	ADDQ       $64, DI
	SUBQ       $64, CX
	JNZ        cloop

cfold4:
	VEXTRACTF32X4 $1, Z1, X2
	VEXTRACTF32X4 $2, Z1, X3
	VEXTRACTF32X4 $3, Z1, X4
	VMOVDQU       k128<>+0(SB), X0

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X2, X1, X1

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X3, X1, X1

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X4, X1, X1

	VMOVDQU X1, (DX)
	VZEROUPPER
	RET

// func crc32cCopyFoldNT(init uint32, dst, src []byte, out *[16]byte)
// Stores bypass the cache (VMOVNTDQ, dst 64-byte aligned), as memmove does
// for copies of 1 MiB and more.
TEXT ·crc32cCopyFoldNT(SB), NOSPLIT, $0-64
	MOVL init+0(FP), X0
	MOVQ dst_base+8(FP), DI
	MOVQ src_base+32(FP), SI
	MOVQ src_len+40(FP), CX
	MOVQ out+56(FP), DX

	VPXORQ    Z10, Z10, Z10
	VMOVAPS   X0, X10
	VMOVDQU64 (SI), Z1
	VMOVNTDQ  Z1, (DI)
	VPXORQ    Z10, Z1, Z1
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $64, CX
	VMOVDQU64 k512<>+0(SB), Z0
	JZ        nfold4

nloop:
	VMOVDQU64  (SI), Z11
	VMOVNTDQ   Z11, (DI)
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0x00, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z11, Z5, Z1
	ADDQ       $64, SI
	ADDQ       $64, DI
	SUBQ       $64, CX
	JNZ        nloop

nfold4:
	VEXTRACTF32X4 $1, Z1, X2
	VEXTRACTF32X4 $2, Z1, X3
	VEXTRACTF32X4 $3, Z1, X4
	VMOVDQU       k128<>+0(SB), X0

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X2, X1, X1

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X3, X1, X1

	VPCLMULQDQ $0x11, X0, X1, X5
	VPCLMULQDQ $0x00, X0, X1, X1
	VPXOR      X5, X1, X1
	VPXOR      X4, X1, X1

	VMOVDQU X1, (DX)
	SFENCE
	VZEROUPPER
	RET
