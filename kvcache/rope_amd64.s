//go:build !purego

#include "textflag.h"

// bf16 RoPE rotation, 16 pairs per step. Each step widens bf16 to float32
// (shift into the top half), computes y0 = x0·c − x1·s and y1 = x0·s + x1·c
// with separately rounded multiplies (exactly the pure-Go path's float32
// arithmetic), and rounds back to bf16 by adding 0x7fff plus the kept lsb
// (round to nearest even; see bf16RoundFast for why NaNs survive).

DATA hiMask<>+0(SB)/4, $0xffff0000
GLOBL hiMask<>(SB), RODATA, $4
DATA lsbOne<>+0(SB)/4, $1
GLOBL lsbOne<>(SB), RODATA, $4
DATA rnd<>+0(SB)/4, $0x7fff
GLOBL rnd<>(SB), RODATA, $4

// func ropeBF16Pairs(dst, src, cos, sin unsafe.Pointer, heads, stride, blocks int)
TEXT ·ropeBF16Pairs(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ cos+16(FP), R8
	MOVQ sin+24(FP), R9
	MOVQ heads+32(FP), CX
	MOVQ stride+40(FP), R10
	MOVQ blocks+48(FP), R11
	VPBROADCASTD hiMask<>+0(SB), Z20
	VPBROADCASTD lsbOne<>+0(SB), Z21
	VPBROADCASTD rnd<>+0(SB), Z22

pairsHead:
	XORQ AX, AX
	MOVQ R11, BX

pairsBlock:
	VMOVDQU32 (SI)(AX*1), Z0
	VMOVUPS   (R8)(AX*1), Z1
	VMOVUPS   (R9)(AX*1), Z2
	VPSLLD    $16, Z0, Z3
	VPANDD    Z20, Z0, Z4
	VMULPS    Z1, Z3, Z5
	VMULPS    Z2, Z4, Z6
	VSUBPS    Z6, Z5, Z5
	VMULPS    Z2, Z3, Z7
	VMULPS    Z1, Z4, Z8
	VADDPS    Z8, Z7, Z7
	VPSRLD    $16, Z5, Z9
	VPANDD    Z21, Z9, Z9
	VPADDD    Z22, Z5, Z5
	VPADDD    Z9, Z5, Z5
	VPSRLD    $16, Z7, Z9
	VPANDD    Z21, Z9, Z9
	VPADDD    Z22, Z7, Z7
	VPADDD    Z9, Z7, Z7
	VPSRLD    $16, Z5, Z5
	VPANDD    Z20, Z7, Z7
	VPORD     Z7, Z5, Z5
	VMOVDQU32 Z5, (DI)(AX*1)
	ADDQ      $64, AX
	DECQ      BX
	JNZ       pairsBlock

	ADDQ R10, SI
	ADDQ R10, DI
	DECQ CX
	JNZ  pairsHead
	VZEROUPPER
	RET

// func ropeBF16Halves(dst, src, cos, sin unsafe.Pointer, heads, stride, blocks, halfBytes int)
TEXT ·ropeBF16Halves(SB), NOSPLIT, $0-64
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ cos+16(FP), R8
	MOVQ sin+24(FP), R9
	MOVQ heads+32(FP), CX
	MOVQ stride+40(FP), R10
	MOVQ blocks+48(FP), R11
	MOVQ halfBytes+56(FP), R12
	VPBROADCASTD lsbOne<>+0(SB), Z21
	VPBROADCASTD rnd<>+0(SB), Z22

halvesHead:
	XORQ AX, AX
	MOVQ R11, BX
	LEAQ (SI)(R12*1), R13
	LEAQ (DI)(R12*1), R14

halvesBlock:
	VPMOVZXWD (SI)(AX*1), Z0
	VPMOVZXWD (R13)(AX*1), Z1
	VMOVUPS   (R8)(AX*2), Z10
	VMOVUPS   (R9)(AX*2), Z2
	VPSLLD    $16, Z0, Z3
	VPSLLD    $16, Z1, Z4
	VMULPS    Z10, Z3, Z5
	VMULPS    Z2, Z4, Z6
	VSUBPS    Z6, Z5, Z5
	VMULPS    Z2, Z3, Z7
	VMULPS    Z10, Z4, Z8
	VADDPS    Z8, Z7, Z7
	VPSRLD    $16, Z5, Z9
	VPANDD    Z21, Z9, Z9
	VPADDD    Z22, Z5, Z5
	VPADDD    Z9, Z5, Z5
	VPSRLD    $16, Z7, Z9
	VPANDD    Z21, Z9, Z9
	VPADDD    Z22, Z7, Z7
	VPADDD    Z9, Z7, Z7
	VPSRLD    $16, Z5, Z5
	VPSRLD    $16, Z7, Z7
	VPMOVDW   Z5, (DI)(AX*1)
	VPMOVDW   Z7, (R14)(AX*1)
	ADDQ      $32, AX
	DECQ      BX
	JNZ       halvesBlock

	ADDQ R10, SI
	ADDQ R10, DI
	DECQ CX
	JNZ  halvesHead
	VZEROUPPER
	RET
