package kvcache

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// InvFreq returns RoPE's inverse frequencies, one per rotated pair i in
// [0, RotaryDim/2): theta^(-2i/d), then scaled as the Hugging Face
// implementations do (_compute_default_rope_parameters,
// _compute_linear_scaling_rope_parameters, _compute_llama3_parameters), in
// float64.
func (s ModelSpec) InvFreq() []float64 {
	d := s.RotaryDim()
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(s.RoPE.Theta, float64(2*i)/float64(d))
	}
	sc := &s.RoPE.Scaling
	switch sc.Type {
	case ScalingLinear:
		for i := range inv {
			inv[i] /= sc.Factor
		}
	case ScalingFreqFactors:
		for i := range inv {
			inv[i] /= sc.FreqFactors[i]
		}
	case ScalingLlama3:
		old := float64(sc.OriginalMaxPositions)
		lowWavelen := old / sc.LowFreqFactor
		highWavelen := old / sc.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / f
			switch {
			case wavelen < highWavelen: // high frequency: unchanged
			case wavelen > lowWavelen: // low frequency: interpolated
				inv[i] = f / sc.Factor
			default:
				smooth := (old/wavelen - sc.LowFreqFactor) / (sc.HighFreqFactor - sc.LowFreqFactor)
				inv[i] = (1-smooth)*f/sc.Factor + smooth*f
			}
		}
	}
	return inv
}

// Rotator applies RoPE rotations to key rows of one model. It is immutable
// and safe for concurrent use.
type Rotator struct {
	style   RotationStyle
	kvHeads int
	headDim int
	rotDim  int
	invFreq []float64
}

// NewRotator builds the rotator of a validated spec.
func NewRotator(spec *ModelSpec) (*Rotator, error) {
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("new rotator: %w", err)
	}
	return &Rotator{style: spec.RoPE.Style, kvHeads: spec.KVHeads, headDim: spec.HeadDim, rotDim: spec.RotaryDim(), invFreq: spec.InvFreq()}, nil
}

// Angles holds cos and sin of one position shift for every rotated pair,
// so the transcendental functions run once per segment, not per element.
type Angles struct {
	r     *Rotator
	delta int
	cos   []float32
	sin   []float32
}

// Angles precomputes the rotation by delta positions (negative rotates
// back). A key rotated at position p and then by delta equals, within
// rounding, the same key rotated at p+delta, because every scaling mode
// here makes the angle linear in the position.
func (r *Rotator) Angles(delta int) *Angles {
	a := &Angles{r: r, delta: delta, cos: make([]float32, len(r.invFreq)), sin: make([]float32, len(r.invFreq))}
	for i, f := range r.invFreq {
		s, c := math.Sincos(float64(delta) * f)
		a.cos[i], a.sin[i] = float32(c), float32(s)
	}
	return a
}

// Delta is the position shift the angles rotate by.
func (a *Angles) Delta() int { return a.delta }

// Rotate rotates key rows ([n][KVHeads][HeadDim] of dtype dt) by delta
// positions, in place. scale is the FP8 scale (ignored for other dtypes).
func (r *Rotator) Rotate(rows []byte, dt DType, delta int, scale float32) error {
	return r.Angles(delta).Apply(rows, rows, dt, scale)
}

// Apply writes src's key rows rotated by a's shift to dst (dst may be src;
// otherwise they must not overlap). Both hold whole rows of dtype dt.
func (a *Angles) Apply(dst, src []byte, dt DType, scale float32) error {
	r := a.r
	rowBytes := r.kvHeads * r.headDim * dt.Size()
	if !dt.Valid() || len(dst) != len(src) || len(src)%rowBytes != 0 {
		return fmt.Errorf("rotate %d bytes into %d as %v rows of %d bytes: %w", len(src), len(dst), dt, rowBytes, ErrShape)
	}
	if a.delta == 0 {
		copy(dst, src)
		return nil
	}
	heads := len(src) / (r.headDim * dt.Size())
	switch dt {
	case BF16:
		a.applyBF16(dst, src, heads)
	case F32:
		a.applyF32(dst, src, heads)
	default:
		a.applyGeneric(dst, src, heads, dt, scale)
	}
	return nil
}

// applyBF16 is the hot path (bf16 is what serving engines cache): each pair
// is widened to float32, rotated, and rounded back to nearest even.
func (a *Angles) applyBF16(dst, src []byte, heads int) {
	r := a.r
	if a.applyBF16Kernel(dst, src, heads) {
		if r.rotDim < r.headDim {
			hb := 2 * r.headDim
			for h := range heads {
				copy(dst[h*hb+2*r.rotDim:(h+1)*hb], src[h*hb+2*r.rotDim:(h+1)*hb])
			}
		}
		return
	}
	if nativeLE && aligned(src, 4) && aligned(dst, 4) {
		if r.style == RotateInterleaved {
			a.applyBF16PairsFast(dst, src, heads)
		} else {
			a.applyBF16HalvesFast(dst, src, heads)
		}
		return
	}
	hb := 2 * r.headDim
	half := r.rotDim / 2
	cos, sin := a.cos[:half], a.sin[:half]
	for h := range heads {
		s := src[h*hb : (h+1)*hb : (h+1)*hb]
		d := dst[h*hb : (h+1)*hb : (h+1)*hb]
		for i := range half {
			i0, i1 := 4*i, 4*i+2
			if r.style == RotateHalf {
				i0, i1 = 2*i, 2*(i+half)
			}
			x0 := BF16ToFloat32(binary.LittleEndian.Uint16(s[i0:]))
			x1 := BF16ToFloat32(binary.LittleEndian.Uint16(s[i1:]))
			c, sn := cos[i], sin[i]
			binary.LittleEndian.PutUint16(d[i0:], uint16(bf16Round(float32(x0*c)-float32(x1*sn))>>16))
			binary.LittleEndian.PutUint16(d[i1:], uint16(bf16Round(float32(x0*sn)+float32(x1*c))>>16))
		}
		if r.rotDim < r.headDim {
			copy(d[2*r.rotDim:], s[2*r.rotDim:])
		}
	}
}

// nativeLE: the fast paths reinterpret little-endian bytes as machine words.
var nativeLE = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

func aligned(b []byte, n uintptr) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%n == 0
}

// bf16RoundFast rounds a float32 that was computed from bf16 inputs to
// bfloat16 (nearest, ties to even) without the NaN test of bf16Round: every
// NaN such arithmetic yields carries an input's payload (whose low 16 bits
// are zero) or the default NaN (low bits zero too), so adding at most
// 0x8000 cannot carry out of the low half and the NaN stays a NaN.
// TestRotateBF16FastPathNaNInf checks it.
func bf16RoundFast(f float32) uint32 {
	b := math.Float32bits(f)
	return b + 0x7fff + (b>>16)&1
}

// applyBF16PairsFast: GPT-J pairs are adjacent, so one uint32 holds a pair.
func (a *Angles) applyBF16PairsFast(dst, src []byte, heads int) {
	r := a.r
	s32 := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(src))), len(src)/4)
	d32 := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)/4)
	stride := r.headDim / 2
	half := r.rotDim / 2
	for h := 0; h < heads; h++ {
		s := s32[h*stride : h*stride+half : h*stride+half]
		d := d32[h*stride : h*stride+half : h*stride+half]
		d = d[:len(s)]
		cos, sin := a.cos[:len(s)], a.sin[:len(s)]
		for i, u := range s {
			x0 := math.Float32frombits(u << 16)
			x1 := math.Float32frombits(u & 0xffff0000)
			c, sn := cos[i], sin[i]
			y0 := bf16RoundFast(float32(x0*c) - float32(x1*sn))
			y1 := bf16RoundFast(float32(x0*sn) + float32(x1*c))
			d[i] = y0>>16 | y1&0xffff0000
		}
		if half < stride {
			copy(d32[h*stride+half:(h+1)*stride], s32[h*stride+half:(h+1)*stride])
		}
	}
}

// applyBF16HalvesFast: NeoX pairs element i with i+rotDim/2.
func (a *Angles) applyBF16HalvesFast(dst, src []byte, heads int) {
	r := a.r
	s16 := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(src))), len(src)/2)
	d16 := unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(dst))), len(dst)/2)
	hd := r.headDim
	half := r.rotDim / 2
	for h := 0; h < heads; h++ {
		o := h * hd
		lo := s16[o : o+half : o+half]
		hi := s16[o+half : o+2*half : o+2*half]
		dlo := d16[o : o+half : o+half]
		dhi := d16[o+half : o+2*half : o+2*half]
		hi, dlo, dhi = hi[:len(lo)], dlo[:len(lo)], dhi[:len(lo)]
		cos, sin := a.cos[:len(lo)], a.sin[:len(lo)]
		for i, v := range lo {
			x0 := math.Float32frombits(uint32(v) << 16)
			x1 := math.Float32frombits(uint32(hi[i]) << 16)
			c, sn := cos[i], sin[i]
			dlo[i] = uint16(bf16RoundFast(float32(x0*c)-float32(x1*sn)) >> 16)
			dhi[i] = uint16(bf16RoundFast(float32(x0*sn)+float32(x1*c)) >> 16)
		}
		if 2*half < hd {
			copy(d16[o+2*half:o+hd], s16[o+2*half:o+hd])
		}
	}
}

// bf16Round returns the float32 bits of f rounded to bfloat16 precision
// (round to nearest even; NaN kept quiet), in the top half.
func bf16Round(f float32) uint32 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return b | 0x400000
	}
	return b + 0x7fff + (b>>16)&1
}

func (a *Angles) applyF32(dst, src []byte, heads int) {
	r := a.r
	hb := 4 * r.headDim
	half := r.rotDim / 2
	cos, sin := a.cos[:half], a.sin[:half]
	for h := range heads {
		s := src[h*hb : (h+1)*hb : (h+1)*hb]
		d := dst[h*hb : (h+1)*hb : (h+1)*hb]
		for i := range half {
			i0, i1 := 8*i, 8*i+4
			if r.style == RotateHalf {
				i0, i1 = 4*i, 4*(i+half)
			}
			x0 := math.Float32frombits(binary.LittleEndian.Uint32(s[i0:]))
			x1 := math.Float32frombits(binary.LittleEndian.Uint32(s[i1:]))
			c, sn := cos[i], sin[i]
			binary.LittleEndian.PutUint32(d[i0:], math.Float32bits(float32(x0*c)-float32(x1*sn)))
			binary.LittleEndian.PutUint32(d[i1:], math.Float32bits(float32(x0*sn)+float32(x1*c)))
		}
		if r.rotDim < r.headDim {
			copy(d[4*r.rotDim:], s[4*r.rotDim:])
		}
	}
}

// applyGeneric handles f16 and fp8 through float32, one head at a time.
func (a *Angles) applyGeneric(dst, src []byte, heads int, dt DType, scale float32) {
	r := a.r
	es := dt.Size()
	hb := es * r.headDim
	buf := make([]float32, r.headDim)
	for h := range heads {
		s := src[h*hb : (h+1)*hb]
		d := dst[h*hb : (h+1)*hb]
		_ = DecodeFloat32(buf, dt, s, scale) // sizes checked by Apply
		rotateFloat32(a, buf)
		_ = EncodeFloat32(d[:es*r.rotDim], dt, buf[:r.rotDim], scale)
		if r.rotDim < r.headDim {
			copy(d[es*r.rotDim:], s[es*r.rotDim:])
		}
	}
}

// rotateFloat32 rotates key rows held as float32 values.
func rotateFloat32(a *Angles, f []float32) {
	r := a.r
	half := r.rotDim / 2
	for h := 0; h+r.headDim <= len(f); h += r.headDim {
		head := f[h : h+r.headDim]
		for i := range half {
			i0, i1 := 2*i, 2*i+1
			if r.style == RotateHalf {
				i0, i1 = i, i+half
			}
			x0, x1 := head[i0], head[i1]
			c, s := a.cos[i], a.sin[i]
			head[i0], head[i1] = float32(x0*c)-float32(x1*s), float32(x0*s)+float32(x1*c)
		}
	}
}
