//go:build !amd64 || purego

package kvcache

import (
	"encoding/binary"
	"math"
)

// Without the kernels of dtype_amd64.s every conversion runs in Go.

func f16ToF32Kernel([]float32, []byte) int                    { return 0 }
func bf16ToF32Kernel([]float32, []byte) int                   { return 0 }
func f32ToF16Kernel([]byte, []float32) int                    { return 0 }
func f32ToBF16Kernel([]byte, []float32) int                   { return 0 }
func fp8ToF32Kernel([]float32, []byte, []float32) (int, bool) { return 0, false }
func f32ToFP8Kernel([]byte, []float32, []float32) int         { return 0 }
func absMaxBitsKernel([]uint32, []float32) int                { return 0 }

func copyF32(dst []float32, src []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func copyF32Bytes(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func cgDequantKernel([]float32, []byte, []float32, []float32, byte) (int, bool) { return 0, false }

func cgUnpackKernel([]byte, []byte) int { return 0 }

const haveDTypeAVX512 = false

func cgQuantKernel([]byte, []float32, []float32, float32, []float32) int { return 0 }

func fp8ToHalfKernel([]byte, DType, []byte, []float32) (int, bool) { return 0, false }
