//go:build !purego

package kvcache

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// haveRopeAVX512 says the AVX-512 bf16 rotation kernels can run.
var haveRopeAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

// ropeBF16Pairs rotates GPT-J pairs of bf16 keys, 16 pairs per step:
// heads heads of stride bytes each, blocks×16 rotated pairs per head.
//
//go:noescape
func ropeBF16Pairs(dst, src, cos, sin unsafe.Pointer, heads, stride, blocks int)

// ropeBF16Halves rotates NeoX halves of bf16 keys: element i with element
// i+half, where half = blocks×16 and halfBytes = 2×half.
//
//go:noescape
func ropeBF16Halves(dst, src, cos, sin unsafe.Pointer, heads, stride, blocks, halfBytes int)

// applyBF16Kernel runs the kernel when the CPU and the shape allow it and
// reports whether it did; it leaves dims past the rotary dim to the caller.
func (a *Angles) applyBF16Kernel(dst, src []byte, heads int) bool {
	r := a.r
	half := r.rotDim / 2
	if !haveRopeAVX512 || half%16 != 0 || heads == 0 || len(dst) < heads*2*r.headDim || len(src) < heads*2*r.headDim || len(a.cos) < half {
		return false
	}
	d, s := unsafe.Pointer(unsafe.SliceData(dst)), unsafe.Pointer(unsafe.SliceData(src))
	c, sn := unsafe.Pointer(unsafe.SliceData(a.cos)), unsafe.Pointer(unsafe.SliceData(a.sin))
	if r.style == RotateInterleaved {
		ropeBF16Pairs(d, s, c, sn, heads, 2*r.headDim, half/16)
	} else {
		ropeBF16Halves(d, s, c, sn, heads, 2*r.headDim, half/16, 2*half)
	}
	return true
}
