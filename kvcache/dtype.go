package kvcache

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// DType is the element type of a KV tensor. Multi-byte elements are
// little-endian in every buffer and blob.
type DType uint8

// The KV dtypes. Values are part of the blob format: never renumber.
const (
	F32 DType = 1
	F16 DType = 2 // IEEE 754 binary16
	// BF16 is bfloat16: the top half of a float32.
	BF16 DType = 3
	// FP8E4M3 is OCP FP8 E4M3 ("e4m3fn": no infinities, one NaN pattern per
	// sign, max 448) holding value/scale, with one float32 scale per layer
	// for K and one for V (vLLM's static KV scales).
	FP8E4M3 DType = 4
)

// Valid reports whether d is one of the dtypes above.
func (d DType) Valid() bool { return d >= F32 && d <= FP8E4M3 }

// Size is the size of one element in bytes (0 for an invalid dtype).
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case FP8E4M3:
		return 1
	}
	return 0
}

// String returns the canonical name: f32, f16, bf16 or fp8-e4m3.
func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	case FP8E4M3:
		return "fp8-e4m3"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// ParseDType accepts the canonical names and the spellings of Hugging Face
// (torch_dtype), vLLM (kv_cache_dtype) and llama.cpp.
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "f32", "fp32", "float32", "float":
		return F32, nil
	case "f16", "fp16", "float16", "half":
		return F16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "fp8-e4m3", "fp8_e4m3", "fp8", "e4m3", "float8_e4m3fn":
		return FP8E4M3, nil
	}
	return 0, fmt.Errorf("parse dtype %q: want f32, f16, bf16 or fp8-e4m3: %w", s, ErrUnsupported)
}

// F16FromFloat32 converts to IEEE binary16 with round-to-nearest-even.
// Overflow gives ±Inf, values below half the smallest subnormal give ±0, NaN
// stays NaN (quiet, top payload bits kept).
func F16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal result: value = q × 2^-24 with q = mant24 × 2^(exp-150+24).
		shift := uint(126 - exp)
		if shift > 24 {
			return sign
		}
		return sign | uint16(roundShiftRNE(mant|0x800000, shift))
	}
	// The rounding may carry into the exponent, up to 0x7c00 = Inf: correct.
	return sign | uint16(roundShiftRNE(uint32(e)<<23|mant, 23-10))
}

// roundShiftRNE returns m >> shift rounded to nearest, ties to even (shift ≥ 1):
// a subnormal's significand, or a normal's exponent and mantissa together
// (e<<23 | mant), so that a carry out of the mantissa bumps the exponent.
func roundShiftRNE(m uint32, shift uint) uint32 {
	q := m >> shift
	rem := m & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && q&1 == 1) {
		q++
	}
	return q
}

// F16ToFloat32 converts IEEE binary16 to float32 exactly.
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		v := float32(mant) * (1.0 / (1 << 24)) // exact: mant < 2^10
		return math.Float32frombits(sign | math.Float32bits(v))
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// BF16FromFloat32 converts to bfloat16 with round-to-nearest-even; overflow
// gives ±Inf and NaN stays a quiet NaN of the same sign.
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToFloat32 converts bfloat16 to float32 exactly.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// FP8E4M3Max is the largest finite FP8 E4M3 value.
const FP8E4M3Max = 448

// FP8E4M3FromFloat32 converts to OCP FP8 E4M3 with round-to-nearest-even,
// saturating: finite values beyond ±448 and ±Inf give ±448 (0x7e/0xfe), as
// vLLM's KV quantization clamps; NaN gives 0x7f/0xff.
func FP8E4M3FromFloat32(f float32) uint8 {
	b := math.Float32bits(f)
	sign := uint8(b>>24) & 0x80
	a := b & 0x7fffffff
	if a > 0x7f800000 {
		return sign | 0x7f
	}
	if a >= 0x43e00000 { // 448
		return sign | 0x7e
	}
	exp := int(a >> 23)
	mant := a & 0x7fffff
	e := exp - 127 + 7
	if e <= 0 {
		// Subnormal result: value = q × 2^-9.
		shift := uint(141 - exp)
		if shift > 24 {
			return sign
		}
		return sign | uint8(roundShiftRNE(mant|0x800000, shift))
	}
	return sign | uint8(min(roundShiftRNE(uint32(e)<<23|mant, 23-3), 0x7e))
}

// fp8Table maps every FP8 E4M3 byte to its float32 value.
var fp8Table = func() (t [256]float32) {
	for i := range t {
		exp := (i >> 3) & 0xf
		m := i & 7
		var v float32
		switch {
		case exp == 0xf && m == 7:
			v = float32(math.NaN())
		case exp == 0:
			v = float32(m) / 512
		default:
			v = float32(math.Ldexp(1+float64(m)/8, exp-7))
		}
		if i&0x80 != 0 {
			v = -v
		}
		t[i] = v
	}
	return t
}()

// FP8E4M3ToFloat32 converts FP8 E4M3 to float32 exactly.
func FP8E4M3ToFloat32(v uint8) float32 { return fp8Table[v] }

// DecodeFloat32 converts len(dst) elements of dtype dt from src to float32.
// scale multiplies FP8 values (ignored for other dtypes; 0 means 1). The
// results are exactly those of F16ToFloat32, BF16ToFloat32 and
// FP8E4M3ToFloat32(v)×scale, computed many elements at a time (AVX-512
// kernels on amd64, tight loops elsewhere).
func DecodeFloat32(dst []float32, dt DType, src []byte, scale float32) error {
	if len(src) != len(dst)*dt.Size() || !dt.Valid() {
		return fmt.Errorf("decode %d %s values from %d bytes: %w", len(dst), dt, len(src), ErrShape)
	}
	if dt == FP8E4M3 && scale == 0 {
		scale = 1
	}
	decodeF32s(dst, dt, src, scale)
	return nil
}

// decodeF32s is DecodeFloat32 once the sizes are known to match; an FP8
// scale of 0 is used as is.
func decodeF32s(dst []float32, dt DType, src []byte, scale float32) {
	switch dt {
	case F32:
		copyF32(dst, src)
	case F16:
		i := f16ToF32Kernel(dst, src)
		src = src[:2*len(dst)]
		for ; i < len(dst); i++ {
			dst[i] = f16ToF32Fast(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		i := bf16ToF32Kernel(dst, src)
		src = src[:2*len(dst)]
		for ; i < len(dst); i++ {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case FP8E4M3:
		s := [1]float32{scale}
		i, _ := fp8ToF32Kernel(dst, src, s[:])
		src = src[:len(dst)]
		for ; i < len(dst); i++ {
			dst[i] = fp8Table[src[i]] * scale
		}
	}
}

// f16ToF32Fast is F16ToFloat32 without branches on the common path: the
// magnitude bits shifted into float32 position and scaled by 2^112 give
// normals and subnormals alike (the product is exact); only Inf and NaN
// need their exponent completed.
func f16ToF32Fast(h uint16) float32 {
	m := uint32(h&0x7fff) << 13
	b := math.Float32bits(math.Float32frombits(m) * 0x1p112)
	if m >= 0x0f800000 {
		b = m | 0x7f800000
	}
	return math.Float32frombits(b | uint32(h&0x8000)<<16)
}

// EncodeFloat32 converts src to dtype dt into dst (len(src)×dt.Size()
// bytes). FP8 stores value/scale (0 means 1). The results are exactly
// those of F16FromFloat32, BF16FromFloat32 and FP8E4M3FromFloat32(v/scale),
// computed many elements at a time.
func EncodeFloat32(dst []byte, dt DType, src []float32, scale float32) error {
	if len(dst) != len(src)*dt.Size() || !dt.Valid() {
		return fmt.Errorf("encode %d values as %s into %d bytes: %w", len(src), dt, len(dst), ErrShape)
	}
	if dt == FP8E4M3 && scale == 0 {
		scale = 1
	}
	s := [1]float32{scale}
	encodeF32s(dst, dt, src, s[:])
	return nil
}

// encodeF32s is EncodeFloat32 once the sizes are known to match. FP8 takes
// one scale (len(scales) == 1) or rows of per-channel scales (element i
// takes scales[i%len(scales)]; len(scales) divides len(src)), and stores 0
// where a scale is ±0 (EncodeFloat32 never passes 0).
func encodeF32s(dst []byte, dt DType, src []float32, scales []float32) {
	switch dt {
	case F32:
		copyF32Bytes(dst, src)
	case F16:
		i := f32ToF16Kernel(dst, src)
		dst = dst[:2*len(src)]
		for ; i < len(src); i++ {
			binary.LittleEndian.PutUint16(dst[2*i:], f16FromF32Fast(src[i]))
		}
	case BF16:
		i := f32ToBF16Kernel(dst, src)
		dst = dst[:2*len(src)]
		for ; i < len(src); i++ {
			binary.LittleEndian.PutUint16(dst[2*i:], BF16FromFloat32(src[i]))
		}
	case FP8E4M3:
		i := f32ToFP8Kernel(dst, src, scales)
		dst = dst[:len(src)]
		if len(scales) == 1 {
			s := scales[0]
			for ; i < len(src); i++ {
				// not v*(1/scale): that can move a rounding tie
				dst[i] = fp8FromF32Fast(src[i], s)
			}
			return
		}
		for c := i % len(scales); i < len(src); i++ {
			dst[i] = fp8FromF32Fast(src[i], scales[c])
			if c++; c == len(scales) {
				c = 0
			}
		}
	}
}

// f16FromF32Fast is F16FromFloat32 with one predictable branch for finite
// values in range: normals round by adding 0xfff plus the kept lsb,
// subnormal results by a float32 addition of 0.5, whose ulp (2^-24) is
// the binary16 subnormal step.
func f16FromF32Fast(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a >= 0x47800000: // 2^16 and up (65520 and up round to Inf below)
		if a > 0x7f800000 {
			return sign | 0x7e00 | uint16((a&0x7fffff)>>13)
		}
		return sign | 0x7c00
	case a < 0x38800000: // below 2^-14, the smallest normal
		return sign | uint16(math.Float32bits(math.Float32frombits(a)+0.5)-0x3f000000)
	}
	return sign | uint16((a+0xc8000fff+(a>>13)&1)>>13) // rebias 127 → 15, round
}

// fp8FromF32Fast is FP8E4M3FromFloat32(v/s), or 0 when s is ±0, with the
// rounding of f16FromF32Fast: results below 2^-6 round by a float32
// addition of 2^14, whose ulp (2^-9) is the E4M3 subnormal step.
func fp8FromF32Fast(v, s float32) uint8 {
	if s == 0 {
		return 0
	}
	b := math.Float32bits(v / s)
	sign := uint8(b>>24) & 0x80
	a := b & 0x7fffffff
	switch {
	case a >= 0x43e00000: // 448 and up, Inf, NaN
		if a > 0x7f800000 {
			return sign | 0x7f
		}
		return sign | 0x7e
	case a < 0x3c800000: // below 2^-6, the smallest normal
		return sign | uint8(math.Float32bits(math.Float32frombits(a)+0x1p14)-0x46800000)
	}
	return sign | uint8((a+0x7ffff+(a>>20)&1)>>20-960) // rebias 127 → 7, round
}

// absMaxBits sets m[i] to max(m[i], the bits of |src[i]|): for magnitudes
// the order of the bits is the order of the values, and bits above
// 0x7f7fffff are Inf or NaN.
func absMaxBits(m []uint32, src []float32) {
	i := absMaxBitsKernel(m, src)
	m = m[:len(src)]
	for ; i < len(src); i++ {
		m[i] = max(m[i], math.Float32bits(src[i])&0x7fffffff)
	}
}

// AppendFloat32 encodes src as dtype dt and appends it to dst.
func AppendFloat32(dst []byte, dt DType, src []float32, scale float32) ([]byte, error) {
	n := len(dst)
	dst = append(dst, make([]byte, len(src)*dt.Size())...)
	if err := EncodeFloat32(dst[n:], dt, src, scale); err != nil {
		return dst[:n], err
	}
	return dst, nil
}

// MarshalText writes the canonical name.
func (d DType) MarshalText() ([]byte, error) {
	if !d.Valid() {
		return nil, fmt.Errorf("dtype %d: %w", uint8(d), ErrUnsupported)
	}
	return []byte(d.String()), nil
}

// UnmarshalText reads any name ParseDType accepts.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}
