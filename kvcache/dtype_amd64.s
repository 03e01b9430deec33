//go:build !purego

#include "textflag.h"

// Bulk dtype conversions, 16 elements per step. Each kernel computes
// exactly what the scalar functions of dtype.go compute (the tests compare
// them over every 16-bit value and over random floats): widening is exact
// integer work plus multiplications by powers of two, narrowing rounds to
// nearest even with the same integer steps (or VCVTPS2PH, whose rounding
// and NaN handling match F16FromFloat32), and FP8 scales are applied with
// the same single float32 multiply or divide.
// Every kernel takes n, a non-zero multiple of 16.

// func f16ToF32AVX512(dst *float32, src *byte, n int)
// bits = (h&0x7fff)<<13 read as a float32 and multiplied by 2^112 gives
// every finite magnitude, subnormals included; exponent 31 (Inf/NaN) keeps
// its payload with the float32 exponent all ones; the sign goes on last.
TEXT ·f16ToF32AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7fff, AX
	VPBROADCASTD AX, Z20
	MOVL $0x77800000, AX // 2^112
	VPBROADCASTD AX, Z21
	MOVL $0x0f800000, AX // exponent 31 after the shift
	VPBROADCASTD AX, Z22
	MOVL $0x70000000, AX // completes the float32 exponent of Inf/NaN
	VPBROADCASTD AX, Z23

f16loop:
	VPMOVZXWD (SI), Z0
	VPANDD    Z20, Z0, Z1
	VPSLLD    $13, Z1, Z1
	VMULPS    Z21, Z1, Z2
	VPCMPUD   $5, Z22, Z1, K1
	VPORD     Z23, Z1, K1, Z2
	VPSRLD    $15, Z0, Z3
	VPSLLD    $31, Z3, Z3
	VPORD     Z3, Z2, Z2
	VMOVUPS   Z2, (DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JNZ       f16loop
	VZEROUPPER
	RET

// func bf16ToF32AVX512(dst *float32, src *byte, n int)
TEXT ·bf16ToF32AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

bf16loop:
	VPMOVZXWD (SI), Z0
	VPSLLD    $16, Z0, Z0
	VMOVUPS   Z0, (DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JNZ       bf16loop
	VZEROUPPER
	RET

// func f32ToF16AVX512(dst *byte, src *float32, n int)
// VCVTPS2PH with immediate rounding control 0 rounds to nearest even,
// overflows to ±Inf, flushes below half the smallest subnormal to ±0 and
// turns a NaN into sign|0x7e00|mant>>13, as F16FromFloat32 does.
TEXT ·f32ToF16AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

tof16loop:
	VMOVUPS   (SI), Z0
	VCVTPS2PH $0, Z0, (DI)
	ADDQ      $64, SI
	ADDQ      $32, DI
	SUBQ      $16, CX
	JNZ       tof16loop
	VZEROUPPER
	RET

// func f32ToBF16AVX512(dst *byte, src *float32, n int)
// BF16FromFloat32: b + 0x7fff + lsb, top half; NaN: (b>>16)|0x40.
TEXT ·f32ToBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $1, AX
	VPBROADCASTD AX, Z20
	MOVL $0x7fff, AX
	VPBROADCASTD AX, Z21
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z22
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z23
	MOVL $0x40, AX
	VPBROADCASTD AX, Z24

tobf16loop:
	VMOVDQU32 (SI), Z0
	VPSRLD    $16, Z0, Z1
	VPANDD    Z20, Z1, Z2
	VPADDD    Z21, Z0, Z3
	VPADDD    Z2, Z3, Z3
	VPSRLD    $16, Z3, Z3
	VPANDD    Z22, Z0, Z4
	VPCMPUD   $6, Z23, Z4, K1
	VPORD     Z24, Z1, K1, Z3
	VPMOVDW   Z3, (DI)
	ADDQ      $64, SI
	ADDQ      $32, DI
	SUBQ      $16, CX
	JNZ       tobf16loop
	VZEROUPPER
	RET

// func fp8ToF32AVX512(dst *float32, src *byte, scales *float32, period, n int) (nan bool)
// dst[i] = value(src[i]) × scale: the E4M3 byte moved into binary16
// position ((b&0x7f)<<7, sign <<8) converts exactly to value/256, ×256 is
// exact, and the NaN codes (b&0x7f == 0x7f) become the quiet NaN of the
// table in FP8E4M3ToFloat32 before the scale multiplies, in the same
// operand order as the scalar code. period is 0 (one scale, scales[0])
// or a multiple of 16: element i takes scales[i%period]. nan reports a
// NaN code.
TEXT ·fp8ToF32AVX512(SB), NOSPLIT, $0-41
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ period+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ R8, R10
	MOVQ R9, R11
	MOVL $0x7f, AX
	VPBROADCASTD AX, Z20
	MOVL $0x80, AX
	VPBROADCASTD AX, Z21
	MOVL $0x43800000, AX // 256
	VPBROADCASTD AX, Z22
	MOVL $0x7fc00000, AX
	VPBROADCASTD AX, Z23
	VBROADCASTSS (R8), Z7
	KXORW K2, K2, K2

fp8loop:
	TESTQ   R9, R9
	JZ      fp8scaled
	VMOVUPS (R8), Z7
	ADDQ    $64, R8
	SUBQ    $16, R11
	JNZ     fp8scaled
	MOVQ    R10, R8
	MOVQ    R9, R11

fp8scaled:
	VPMOVZXBD (SI), Z0
	VPANDD    Z20, Z0, Z1
	VPSLLD    $7, Z1, Z2
	VPANDD    Z21, Z0, Z3
	VPSLLD    $8, Z3, Z3
	VPORD     Z3, Z2, Z2
	VPMOVDW   Z2, Y4
	VCVTPH2PS Y4, Z4
	VMULPS    Z22, Z4, Z4
	VPCMPEQD  Z20, Z1, K1
	KORW      K1, K2, K2
	VPSLLD    $16, Z3, Z5
	VPORD     Z23, Z5, K1, Z4
	VMULPS    Z7, Z4, Z4
	VMOVUPS   Z4, (DI)
	ADDQ      $16, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JNZ       fp8loop
	KMOVW     K2, AX
	TESTL     AX, AX
	SETNE     nan+40(FP)
	VZEROUPPER
	RET

// func f32ToFP8AVX512(dst *byte, src *float32, scales *float32, period, n int)
// dst[i] = FP8E4M3FromFloat32(src[i] / scale), or 0 where the scale is ±0
// (the per-channel codec's empty channels; EncodeFloat32 never passes 0).
// Normal results round with integer steps (a + 0x7ffff + lsb) >> 20;
// results below 2^-6 round by adding 2^14, whose float32 ulp is 2^-9, the
// E4M3 subnormal step; magnitudes from 448 on (Inf too) saturate to 0x7e
// and NaN gives 0x7f, with the sign on top. period is as for
// fp8ToF32AVX512.
TEXT ·f32ToFP8AVX512(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ period+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ R8, R10
	MOVQ R9, R11
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z20
	MOVL $0x80, AX
	VPBROADCASTD AX, Z21
	MOVL $1, AX
	VPBROADCASTD AX, Z22
	MOVL $0x7ffff, AX
	VPBROADCASTD AX, Z23
	MOVL $960, AX // (127-7)<<3
	VPBROADCASTD AX, Z24
	MOVL $0x46800000, AX // 2^14
	VPBROADCASTD AX, Z25
	MOVL $0x3c800000, AX // 2^-6, the smallest normal
	VPBROADCASTD AX, Z26
	MOVL $0x43e00000, AX // 448
	VPBROADCASTD AX, Z27
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z28
	MOVL $0x7e, AX
	VPBROADCASTD AX, Z29
	MOVL $0x7f, AX
	VPBROADCASTD AX, Z30
	VPXORD Z31, Z31, Z31
	VBROADCASTSS (R8), Z7

tofp8loop:
	TESTQ   R9, R9
	JZ      tofp8scaled
	VMOVUPS (R8), Z7
	ADDQ    $64, R8
	SUBQ    $16, R11
	JNZ     tofp8scaled
	MOVQ    R10, R8
	MOVQ    R9, R11

tofp8scaled:
	VMOVUPS   (SI), Z0
	VDIVPS    Z7, Z0, Z0
	VPANDD    Z20, Z0, Z1
	VPSRLD    $24, Z0, Z2
	VPANDD    Z21, Z2, Z2
	VPSRLD    $20, Z1, Z3
	VPANDD    Z22, Z3, Z3
	VPADDD    Z23, Z1, Z4
	VPADDD    Z3, Z4, Z4
	VPSRLD    $20, Z4, Z4
	VPSUBD    Z24, Z4, Z4
	VADDPS    Z25, Z1, Z5
	VPSUBD    Z25, Z5, Z5
	VPCMPUD   $1, Z26, Z1, K1
	VMOVDQA32 Z5, K1, Z4
	VPCMPUD   $5, Z27, Z1, K2
	VMOVDQA32 Z29, K2, Z4
	VPCMPUD   $6, Z28, Z1, K3
	VMOVDQA32 Z30, K3, Z4
	VPORD     Z2, Z4, Z4
	VCMPPS    $0, Z31, Z7, K4
	VMOVDQA32 Z31, K4, Z4
	VPMOVDB   Z4, (DI)
	ADDQ      $64, SI
	ADDQ      $16, DI
	SUBQ      $16, CX
	JNZ       tofp8loop
	VZEROUPPER
	RET

// func absMaxBitsAVX512(m *uint32, src *float32, n int)
// m[i] = max(m[i], bits(src[i])&0x7fffffff): for magnitudes the unsigned
// order of the bits is the order of the values, and anything above
// 0x7f7fffff is Inf or NaN.
TEXT ·absMaxBitsAVX512(SB), NOSPLIT, $0-24
	MOVQ m+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z20

absmaxloop:
	VPANDD    (SI), Z20, Z0
	VPMAXUD   (DI), Z0, Z0
	VMOVDQU32 Z0, (DI)
	ADDQ      $64, SI
	ADDQ      $64, DI
	SUBQ      $16, CX
	JNZ       absmaxloop
	VZEROUPPER
	RET

// func cgDequantAVX512(dst *float32, syms *byte, base, scales *float32, ch, rows int, maxSym byte) (bad bool)
// CacheGen's dequantization of rows rows of ch channels (ch a non-zero
// multiple of 16): q = zigzag⁻¹(sym), dst = base + float32(q)·scale with
// the product and the sum rounded separately, as cgDequantRows does, base
// and scales being one row each; bad reports a symbol above maxSym.
TEXT ·cgDequantAVX512(SB), NOSPLIT, $0-57
	MOVQ dst+0(FP), DI
	MOVQ syms+8(FP), SI
	MOVQ base+16(FP), R10
	MOVQ scales+24(FP), R11
	MOVQ ch+32(FP), R12
	MOVQ rows+40(FP), DX
	MOVBLZX maxSym+48(FP), AX
	VPBROADCASTD AX, Z20
	MOVL $1, AX
	VPBROADCASTD AX, Z21
	VPXORD Z22, Z22, Z22
	KXORW K2, K2, K2

dequantrow:
	MOVQ R10, R8
	MOVQ R11, R9
	MOVQ R12, CX

dequantloop:
	VPMOVZXBD (SI), Z0
	VPCMPUD   $6, Z20, Z0, K1
	KORW      K1, K2, K2
	VPSRLD    $1, Z0, Z1
	VPANDD    Z21, Z0, Z2
	VPSUBD    Z2, Z22, Z2
	VPXORD    Z2, Z1, Z1
	VCVTDQ2PS Z1, Z1
	VMULPS    (R9), Z1, Z1
	VADDPS    (R8), Z1, Z1
	VMOVUPS   Z1, (DI)
	ADDQ      $16, SI
	ADDQ      $64, DI
	ADDQ      $64, R8
	ADDQ      $64, R9
	SUBQ      $16, CX
	JNZ       dequantloop
	DECQ      DX
	JNZ       dequantrow
	KMOVW     K2, AX
	TESTL     AX, AX
	SETNE     bad+56(FP)
	VZEROUPPER
	RET

// func cgUnpackAVX512(syms, packed *byte, n int)
// Spreads n/2 bytes of packed symbol pairs (low nibble first) over n
// bytes, n a non-zero multiple of 64.
TEXT ·cgUnpackAVX512(SB), NOSPLIT, $0-24
	MOVQ syms+0(FP), DI
	MOVQ packed+8(FP), SI
	MOVQ n+16(FP), CX
	MOVL $0x000f000f, AX // per 16-bit lane
	VPBROADCASTD AX, Z20

unpackloop:
	VPMOVZXBW (SI), Z0
	VPANDD    Z20, Z0, Z1
	VPSRLW    $4, Z0, Z2
	VPSLLW    $8, Z2, Z2
	VPORD     Z2, Z1, Z1
	VMOVDQU64 Z1, (DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	SUBQ      $64, CX
	JNZ       unpackloop
	VZEROUPPER
	RET

// func cgQuantAVX512(syms *byte, vals, scales, dec *float32, n int, qmax float32)
// CacheGen's quantization: x = clamp(val/scale, ±qmax), q = x rounded
// half away from zero (math.Round: the truncation t, plus ±1 where
// |x − t| ≥ 0.5, x − t being exact), 0 where the scale is ±0; syms =
// zigzag(q); dec (when not nil) = float32(q)·scale.
TEXT ·cgQuantAVX512(SB), NOSPLIT, $0-44
	MOVQ syms+0(FP), DI
	MOVQ vals+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ dec+24(FP), R9
	MOVQ n+32(FP), CX
	VBROADCASTSS qmax+40(FP), Z20
	MOVL $0x80000000, AX
	VPBROADCASTD AX, Z21
	VPXORD Z20, Z21, Z23 // -qmax
	VPXORD Z22, Z22, Z22
	MOVL $0x3f000000, AX // 0.5
	VPBROADCASTD AX, Z24
	MOVL $0x3f800000, AX // 1
	VPBROADCASTD AX, Z25
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z26

quantloop:
	VMOVUPS     (R8), Z7
	VMOVUPS     (SI), Z0
	VDIVPS      Z7, Z0, Z0
	VMAXPS      Z23, Z0, Z0
	VMINPS      Z20, Z0, Z0
	VRNDSCALEPS $11, Z0, Z1 // truncate, no precision exception
	VSUBPS      Z1, Z0, Z2
	VANDPS      Z26, Z2, Z2
	VCMPPS      $0x1d, Z24, Z2, K2 // |x − t| ≥ 0.5
	VPANDND     Z0, Z26, Z3        // the sign of x
	VORPS       Z25, Z3, Z3        // ±1
	VADDPS      Z3, Z1, K2, Z1
	VCVTPS2DQ   Z1, Z1
	VCMPPS    $0, Z22, Z7, K1
	VMOVDQA32 Z22, K1, Z1
	VPSLLD    $1, Z1, Z2
	VPSRAD    $31, Z1, Z3
	VPXORD    Z3, Z2, Z2
	VPMOVDB   Z2, (DI)
	TESTQ     R9, R9
	JZ        quantnext
	VCVTDQ2PS Z1, Z1
	VMULPS    Z7, Z1, Z1
	VMOVUPS   Z1, (R9)
	ADDQ      $64, R9

quantnext:
	ADDQ $16, DI
	ADDQ $64, SI
	ADDQ $64, R8
	SUBQ $16, CX
	JNZ  quantloop
	VZEROUPPER
	RET

// func fp8ToHalfAVX512(dst *byte, src *byte, scales *float32, period, n int, f16 bool) (nan bool)
// fp8ToF32AVX512 followed by f32ToF16AVX512 (f16) or f32ToBF16AVX512 in
// registers: the FP8 codec's decode into a 16-bit layer without a float32
// round trip through memory.
TEXT ·fp8ToHalfAVX512(SB), NOSPLIT, $0-49
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ scales+16(FP), R8
	MOVQ period+24(FP), R9
	MOVQ n+32(FP), CX
	MOVBLZX f16+40(FP), DX
	MOVQ R8, R10
	MOVQ R9, R11
	MOVL $0x7f, AX
	VPBROADCASTD AX, Z20
	MOVL $0x80, AX
	VPBROADCASTD AX, Z21
	MOVL $0x43800000, AX // 256
	VPBROADCASTD AX, Z22
	MOVL $0x7fc00000, AX
	VPBROADCASTD AX, Z23
	MOVL $1, AX
	VPBROADCASTD AX, Z24
	MOVL $0x7fff, AX
	VPBROADCASTD AX, Z25
	MOVL $0x7fffffff, AX
	VPBROADCASTD AX, Z26
	MOVL $0x7f800000, AX
	VPBROADCASTD AX, Z27
	MOVL $0x40, AX
	VPBROADCASTD AX, Z28
	VBROADCASTSS (R8), Z7
	KXORW K2, K2, K2

halfloop:
	TESTQ   R9, R9
	JZ      halfscaled
	VMOVUPS (R8), Z7
	ADDQ    $64, R8
	SUBQ    $16, R11
	JNZ     halfscaled
	MOVQ    R10, R8
	MOVQ    R9, R11

halfscaled:
	VPMOVZXBD (SI), Z0
	VPANDD    Z20, Z0, Z1
	VPSLLD    $7, Z1, Z2
	VPANDD    Z21, Z0, Z3
	VPSLLD    $8, Z3, Z3
	VPORD     Z3, Z2, Z2
	VPMOVDW   Z2, Y4
	VCVTPH2PS Y4, Z4
	VMULPS    Z22, Z4, Z4
	VPCMPEQD  Z20, Z1, K1
	KORW      K1, K2, K2
	VPSLLD    $16, Z3, Z5
	VPORD     Z23, Z5, K1, Z4
	VMULPS    Z7, Z4, Z4
	TESTQ     DX, DX
	JZ        halfbf16
	VCVTPS2PH $0, Z4, (DI)
	JMP       halfnext

halfbf16:
	VPSRLD  $16, Z4, Z1
	VPANDD  Z24, Z1, Z2
	VPADDD  Z25, Z4, Z3
	VPADDD  Z2, Z3, Z3
	VPSRLD  $16, Z3, Z3
	VPANDD  Z26, Z4, Z5
	VPCMPUD $6, Z27, Z5, K3
	VPORD   Z28, Z1, K3, Z3
	VPMOVDW Z3, (DI)

halfnext:
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $16, CX
	JNZ  halfloop
	KMOVW K2, AX
	TESTL AX, AX
	SETNE nan+48(FP)
	VZEROUPPER
	RET
