//go:build !purego

package kvcache

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveDTypeAVX512 says the AVX-512 conversion kernels of dtype_amd64.s can
// run (F16C's conversions are part of AVX512F's EVEX forms).
var haveDTypeAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

//go:noescape
func f16ToF32AVX512(dst *float32, src *byte, n int)

//go:noescape
func bf16ToF32AVX512(dst *float32, src *byte, n int)

//go:noescape
func f32ToF16AVX512(dst *byte, src *float32, n int)

//go:noescape
func f32ToBF16AVX512(dst *byte, src *float32, n int)

//go:noescape
func fp8ToF32AVX512(dst *float32, src *byte, scales *float32, period, n int) (nan bool)

//go:noescape
func f32ToFP8AVX512(dst *byte, src *float32, scales *float32, period, n int)

//go:noescape
func absMaxBitsAVX512(m *uint32, src *float32, n int)

// The kernels below convert the longest prefix they can (a multiple of 16
// elements) and return its length; the callers finish in Go. The callers
// have checked that the slices hold n elements.

func kernelLen(n int) int {
	if !haveDTypeAVX512 {
		return 0
	}
	return n &^ 15
}

func f16ToF32Kernel(dst []float32, src []byte) int {
	n := kernelLen(len(dst))
	if n > 0 {
		f16ToF32AVX512(&dst[0], &src[0], n)
	}
	return n
}

func bf16ToF32Kernel(dst []float32, src []byte) int {
	n := kernelLen(len(dst))
	if n > 0 {
		bf16ToF32AVX512(&dst[0], &src[0], n)
	}
	return n
}

func f32ToF16Kernel(dst []byte, src []float32) int {
	n := kernelLen(len(src))
	if n > 0 {
		f32ToF16AVX512(&dst[0], &src[0], n)
	}
	return n
}

func f32ToBF16Kernel(dst []byte, src []float32) int {
	n := kernelLen(len(src))
	if n > 0 {
		f32ToBF16AVX512(&dst[0], &src[0], n)
	}
	return n
}

// scalePeriod is the kernels' period for FP8 scales (see encodeF32s): 0
// for one scale, else len(scales), which must be a multiple of 16 (and
// divide n, as the callers ensure).
func scalePeriod(scales []float32) (int, bool) {
	if len(scales) == 1 {
		return 0, true
	}
	return len(scales), len(scales)%16 == 0
}

func fp8ToF32Kernel(dst []float32, src []byte, scales []float32) (int, bool) {
	n := kernelLen(len(dst))
	p, ok := scalePeriod(scales)
	if n == 0 || !ok {
		return 0, false
	}
	return n, fp8ToF32AVX512(&dst[0], &src[0], &scales[0], p, n)
}

func f32ToFP8Kernel(dst []byte, src []float32, scales []float32) int {
	n := kernelLen(len(src))
	p, ok := scalePeriod(scales)
	if n == 0 || !ok {
		return 0
	}
	f32ToFP8AVX512(&dst[0], &src[0], &scales[0], p, n)
	return n
}

func absMaxBitsKernel(m []uint32, src []float32) int {
	n := kernelLen(len(src))
	if n > 0 {
		absMaxBitsAVX512(&m[0], &src[0], n)
	}
	return n
}

// copyF32 copies little-endian float32 bytes: amd64 is little-endian, so
// the bytes are the values.
func copyF32(dst []float32, src []byte) {
	if len(dst) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*len(dst)), src)
	}
}

func copyF32Bytes(dst []byte, src []float32) {
	if len(src) > 0 {
		copy(dst, unsafe.Slice((*byte)(unsafe.Pointer(&src[0])), 4*len(src)))
	}
}

//go:noescape
func cgDequantAVX512(dst *float32, syms *byte, base, scales *float32, ch, rows int, maxSym byte) (bad bool)

// cgDequantKernel is cgDequantRows's kernel (codec_cachegen.go): all rows
// when the row length is a multiple of 16, else none.
func cgDequantKernel(dst []float32, syms []byte, base, scales []float32, maxSym byte) (int, bool) {
	ch := len(base)
	if !haveDTypeAVX512 || ch == 0 || ch%16 != 0 || len(dst) == 0 {
		return 0, false
	}
	return len(dst), cgDequantAVX512(&dst[0], &syms[0], &base[0], &scales[0], ch, len(dst)/ch, maxSym)
}

//go:noescape
func cgUnpackAVX512(syms, packed *byte, n int)

// cgUnpackKernel is cgUnpack's kernel (codec_cachegen.go): 64 symbols a
// step.
func cgUnpackKernel(syms, packed []byte) int {
	if !haveDTypeAVX512 {
		return 0
	}
	n := len(syms) &^ 63
	if n > 0 {
		cgUnpackAVX512(&syms[0], &packed[0], n)
	}
	return n
}

//go:noescape
func cgQuantAVX512(syms *byte, vals, scales, dec *float32, n int, qmax float32)

// cgQuantKernel is cgQuantRow's kernel (codec_cachegen.go).
func cgQuantKernel(syms []byte, vals, scales []float32, qmax float32, dec []float32) int {
	n := kernelLen(len(vals))
	if n > 0 {
		var d *float32
		if dec != nil {
			d = &dec[0]
		}
		cgQuantAVX512(&syms[0], &vals[0], &scales[0], d, n, qmax)
	}
	return n
}

//go:noescape
func fp8ToHalfAVX512(dst *byte, src *byte, scales *float32, period, n int, f16 bool) (nan bool)

// fp8ToHalfKernel decodes FP8 codes times scales (as fp8ToF32Kernel) into
// f16 or bf16 (dt) in one pass.
func fp8ToHalfKernel(dst []byte, dt DType, src []byte, scales []float32) (int, bool) {
	n := kernelLen(len(src))
	p, ok := scalePeriod(scales)
	if n == 0 || !ok || (dt != F16 && dt != BF16) {
		return 0, false
	}
	return n, fp8ToHalfAVX512(&dst[0], &src[0], &scales[0], p, n, dt == F16)
}
