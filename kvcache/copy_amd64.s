//go:build !purego

#include "textflag.h"

// func copyNT(dst, src unsafe.Pointer, n int)
// Copies n bytes (a non-zero multiple of 256; dst 64-byte aligned) with
// non-temporal stores, as memmove does for copies of 1 MiB and more, then
// fences so the bytes are globally visible before the caller hands them on.
TEXT ·copyNT(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

loop:
	VMOVDQU64 (SI), Z0
	VMOVDQU64 64(SI), Z1
	VMOVDQU64 128(SI), Z2
	VMOVDQU64 192(SI), Z3
	VMOVNTDQ  Z0, (DI)
	VMOVNTDQ  Z1, 64(DI)
	VMOVNTDQ  Z2, 128(DI)
	VMOVNTDQ  Z3, 192(DI)
	ADDQ      $256, SI
	ADDQ      $256, DI
	SUBQ      $256, CX
	JNZ       loop
	SFENCE
	VZEROUPPER
	RET
