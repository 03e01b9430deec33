package kvcache

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvloom/kvloom/internal/benchutil"
)

func f32bits(b uint32) float32 { return math.Float32frombits(b) }

func TestF16KnownVectors(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},                       // max finite
		{65519.99, 0x7bff},                    // just below the rounding midpoint to Inf
		{65520, 0x7c00},                       // midpoint rounds to even: Inf
		{1e6, 0x7c00},                         // overflow
		{float32(math.Inf(-1)), 0xfc00},       // -Inf
		{float32(math.Ldexp(1, -14)), 0x0400}, // min normal
		{float32(math.Ldexp(1, -24)), 0x0001}, // min subnormal
		{float32(math.Ldexp(1, -25)), 0x0000}, // half the min subnormal: tie to even 0
		{float32(math.Ldexp(3, -25)), 0x0002}, // 1.5 × min subnormal: tie to even 2
		{float32(math.Ldexp(1.5, -24)) + float32(math.Ldexp(1, -40)), 0x0002},
		{float32(math.Ldexp(1023, -24)), 0x03ff}, // max subnormal
		{float32(math.Ldexp(2047, -25)), 0x0400}, // rounds up into the normals
		{f32bits(0x3f801000), 0x3c00},            // 1 + 2^-11: tie, even stays
		{f32bits(0x3f803000), 0x3c02},            // 1 + 3×2^-11: tie, odd rounds up
		{f32bits(0x3f801001), 0x3c01},            // above the tie
		{float32(1.0 / 3), 0x3555},
		{3.140625, 0x4248},
		{float32(math.Ldexp(1, -30)), 0x0000},
		{f32bits(0x00000001), 0x0000}, // float32 subnormal
	}
	for _, tc := range tests {
		if got := F16FromFloat32(tc.in); got != tc.want {
			t.Errorf("F16FromFloat32(%g [%08x]) = %04x, want %04x", tc.in, math.Float32bits(tc.in), got, tc.want)
		}
	}
	nan := F16FromFloat32(float32(math.NaN()))
	if nan&0x7c00 != 0x7c00 || nan&0x3ff == 0 {
		t.Errorf("NaN -> %04x, not a NaN", nan)
	}
	// A signalling NaN whose payload sits only in low bits must stay NaN.
	if got := F16FromFloat32(f32bits(0x7f800001)); got&0x3ff == 0 || got&0x7c00 != 0x7c00 {
		t.Errorf("sNaN with low payload -> %04x, not a NaN", got)
	}
	back := []struct {
		in   uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, float32(math.Ldexp(1, -24))},
		{0x03ff, float32(math.Ldexp(1023, -24))}, {0x0400, float32(math.Ldexp(1, -14))},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))}, {0x3555, 0.333251953125},
	}
	for _, tc := range back {
		if got := F16ToFloat32(tc.in); got != tc.want {
			t.Errorf("F16ToFloat32(%04x) = %g, want %g", tc.in, got, tc.want)
		}
	}
	if got := F16ToFloat32(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("F16ToFloat32(7e00) = %g, want NaN", got)
	}
	if got := F16ToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("F16ToFloat32(8000) = %g, want -0", got)
	}
}

// Every f16 value converts to float32 and back unchanged.
func TestF16ExhaustiveRoundTrip(t *testing.T) {
	for h := range 1 << 16 {
		f := F16ToFloat32(uint16(h))
		got := F16FromFloat32(f)
		if math.IsNaN(float64(f)) {
			if got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %04x -> %04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%04x -> %g -> %04x", h, f, got)
		}
	}
}

// refF16 is an independent reference: round with float64 arithmetic.
func refF16(f float32) uint16 {
	x := float64(f)
	sign := uint16(0)
	if math.Signbit(x) {
		sign, x = 0x8000, -x
	}
	if x >= 65520 {
		return sign | 0x7c00
	}
	// Quantum of the f16 binade holding x.
	e := math.Floor(math.Log2(x))
	if x == 0 || e < -14 {
		e = -14
	}
	q := math.Ldexp(1, int(e)-10)
	m := x / q // exact in float64
	r := math.RoundToEven(m)
	v := r * q
	// Re-encode v.
	if v == 0 {
		return sign
	}
	if v < math.Ldexp(1, -14) {
		return sign | uint16(v/math.Ldexp(1, -24))
	}
	be := math.Floor(math.Log2(v))
	mant := v/math.Ldexp(1, int(be)) - 1
	return sign | uint16(int(be)+15)<<10 | uint16(math.Round(mant*1024))
}

func TestF16MatchesReferenceOnRandomFloats(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		f := f32bits(r.Uint32())
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		// Concentrate on the f16 range.
		f = float32(math.Ldexp(float64(f32bits(0x3f800000|r.Uint32()&0x7fffff)), r.IntN(44)-28))
		if r.IntN(2) == 0 {
			f = -f
		}
		if got, want := F16FromFloat32(f), refF16(f); got != want {
			t.Fatalf("F16FromFloat32(%g [%08x]) = %04x, reference %04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestBF16KnownVectors(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80},
		{-2, 0xc000},
		{float32(math.Pi), 0x4049},    // 0x40490fdb: below the tie
		{float32(1.0 / 3), 0x3eab},    // 0x3eaaaaab: above the tie
		{f32bits(0x3f808000), 0x3f80}, // tie, even stays
		{f32bits(0x3f818000), 0x3f82}, // tie, odd rounds up
		{f32bits(0x7f7fffff), 0x7f80}, // max float32 rounds to Inf
		{f32bits(0x7f7f0000), 0x7f7f}, // max bf16
		{float32(math.Inf(1)), 0x7f80},
		{float32(math.Inf(-1)), 0xff80},
		{f32bits(0x00010000), 0x0001}, // subnormals keep their top bits
		{f32bits(0x80000000), 0x8000},
	}
	for _, tc := range tests {
		if got := BF16FromFloat32(tc.in); got != tc.want {
			t.Errorf("BF16FromFloat32(%g [%08x]) = %04x, want %04x", tc.in, math.Float32bits(tc.in), got, tc.want)
		}
	}
	for _, nan := range []uint32{0x7fc00000, 0x7f800001, 0xffffffff, 0x7fffffff} {
		got := BF16FromFloat32(f32bits(nan))
		if got&0x7f80 != 0x7f80 || got&0x7f == 0 || got>>15 != uint16(nan>>31) {
			t.Errorf("NaN %08x -> %04x, not a NaN of the same sign", nan, got)
		}
	}
	for h := range 1 << 16 {
		f := BF16ToFloat32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := BF16FromFloat32(f); got != uint16(h) {
			t.Fatalf("%04x -> %g -> %04x", h, f, got)
		}
	}
}

func TestFP8E4M3KnownVectors(t *testing.T) {
	tests := []struct {
		in   float32
		want uint8
	}{
		{0, 0x00},
		{float32(math.Copysign(0, -1)), 0x80},
		{1, 0x38},
		{-2, 0xc0},
		{0.5, 0x30},
		{240, 0x77},
		{448, 0x7e}, // max finite
		{-448, 0xfe},
		{464, 0x7e}, // saturates (would round to NaN pattern without saturation)
		{1e9, 0x7e},
		{float32(math.Inf(1)), 0x7e},
		{float32(math.Inf(-1)), 0xfe},
		{float32(math.Ldexp(1, -6)), 0x08},  // min normal
		{float32(math.Ldexp(1, -9)), 0x01},  // min subnormal
		{float32(math.Ldexp(7, -9)), 0x07},  // max subnormal
		{float32(math.Ldexp(1, -10)), 0x00}, // half the min subnormal: tie to even 0
		{float32(math.Ldexp(3, -10)), 0x02}, // 1.5 × min subnormal: tie to even 2
		{1.0625, 0x38},                      // 1 + 1/16: tie, even stays
		{1.1875, 0x3a},                      // 1 + 3/16: tie, odd rounds up
		{1.07, 0x39},
		{432, 0x7e}, // between 416 and 448: tie rounds to even 448
		{420, 0x7d},
		{float32(math.Ldexp(15, -10)), 0x08}, // 7.5 × 2^-9 rounds to even 8 = min normal
	}
	for _, tc := range tests {
		if got := FP8E4M3FromFloat32(tc.in); got != tc.want {
			t.Errorf("FP8E4M3FromFloat32(%g) = %02x, want %02x", tc.in, got, tc.want)
		}
	}
	if got := FP8E4M3FromFloat32(float32(math.NaN())); got&0x7f != 0x7f {
		t.Errorf("NaN -> %02x", got)
	}
	if got := FP8E4M3FromFloat32(f32bits(0xffc00000)); got != 0xff {
		t.Errorf("-NaN -> %02x, want ff", got)
	}
	back := map[uint8]float32{0x38: 1, 0x7e: 448, 0xfe: -448, 0x01: float32(math.Ldexp(1, -9)), 0x08: float32(math.Ldexp(1, -6)), 0x77: 240, 0x00: 0}
	for in, want := range back {
		if got := FP8E4M3ToFloat32(in); got != want {
			t.Errorf("FP8E4M3ToFloat32(%02x) = %g, want %g", in, got, want)
		}
	}
	for v := range 256 {
		f := FP8E4M3ToFloat32(uint8(v))
		if v&0x7f == 0x7f {
			if !math.IsNaN(float64(f)) {
				t.Errorf("%02x decodes to %g, want NaN", v, f)
			}
			continue
		}
		if got := FP8E4M3FromFloat32(f); got != uint8(v) {
			t.Errorf("%02x -> %g -> %02x", v, f, got)
		}
	}
}

// Rounding to nearest: the encoded value is never farther than any other
// representable value.
func TestFP8E4M3Nearest(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 50000 {
		f := float32(r.NormFloat64() * math.Ldexp(1, r.IntN(20)-10))
		if math.Abs(float64(f)) > FP8E4M3Max {
			continue
		}
		got := float64(FP8E4M3ToFloat32(FP8E4M3FromFloat32(f)))
		err := math.Abs(got - float64(f))
		for v := range 256 {
			c := float64(FP8E4M3ToFloat32(uint8(v)))
			if !math.IsNaN(c) && math.Abs(c-float64(f)) < err {
				t.Fatalf("%g encodes to %g, but %g is nearer", f, got, c)
			}
		}
	}
}

func TestBulkConversions(t *testing.T) {
	src := []float32{1, -2, 0.5, 3.140625, 100, -0.001}
	for _, dt := range []DType{F32, F16, BF16, FP8E4M3} {
		buf := make([]byte, len(src)*dt.Size())
		scale := float32(0)
		if dt == FP8E4M3 {
			scale = 0.5
		}
		if err := EncodeFloat32(buf, dt, src, scale); err != nil {
			t.Fatal(err)
		}
		out := make([]float32, len(src))
		if err := DecodeFloat32(out, dt, buf, scale); err != nil {
			t.Fatal(err)
		}
		tol := map[DType]float64{F32: 0, F16: 1e-3, BF16: 8e-3, FP8E4M3: 0.07}[dt]
		for i := range src {
			if d := math.Abs(float64(out[i]-src[i])) / max(math.Abs(float64(src[i])), 1e-2); d > tol {
				t.Errorf("%v: %g -> %g (rel err %g > %g)", dt, src[i], out[i], d, tol)
			}
		}
		if err := DecodeFloat32(out[:1], dt, buf, scale); !errors.Is(err, ErrShape) {
			t.Errorf("%v: short dst err = %v, want ErrShape", dt, err)
		}
	}
	b, err := AppendFloat32([]byte{9}, BF16, []float32{1}, 0)
	if err != nil || len(b) != 3 || b[0] != 9 || b[1] != 0x80 || b[2] != 0x3f {
		t.Fatalf("AppendFloat32 = %x, %v", b, err)
	}
	for _, s := range []string{"bfloat16", "float16", "fp8", "f32"} {
		if _, err := ParseDType(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseDType("int4"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ParseDType(int4) err = %v", err)
	}
}

// bulkTestFloats are float32 inputs for the bulk encoders: every binary16
// value and the midpoints and their neighbours around it (where rounding
// decides), FP8 boundaries, specials, NaNs with payloads in every part,
// float32 subnormals, a stride through all 2^32 bit patterns and random
// floats of every magnitude.
func bulkTestFloats() []float32 {
	var out []float32
	add := func(b uint32) { out = append(out, f32bits(b), f32bits(b|0x80000000)) }
	for h := range 1 << 15 {
		b := math.Float32bits(F16ToFloat32(uint16(h)))
		for d := uint32(0); d < 3; d++ {
			add(b + d)
			add(b - d)
			add(b + 0x1000 + d) // the midpoint to the next binary16 value (normals)
			add(b + 0x1000 - d)
		}
	}
	for v := range 256 {
		b := math.Float32bits(FP8E4M3ToFloat32(uint8(v)))
		for d := uint32(0); d < 3; d++ {
			add(b + 0x80000 + d)
			add(b + 0x80000 - d)
		}
	}
	for _, b := range []uint32{0, 1, 0x7fffff, 0x800000, 0x7f7fffff, 0x7f800000, 0x7f800001, 0x7fc00000, 0x7fffffff,
		0x7fa00000, 0x7f802000, 0x7f801fff, 0x477fe000, 0x477ff000, 0x477fefff, 0x47800000, 0x43e00000, 0x43dfffff, 0x43d00000} {
		add(b)
	}
	stride, random := uint64(4093), 100000
	if testing.Short() {
		stride, random = 65521, 10000
	}
	for b := uint64(0); b < 1<<32; b += stride {
		out = append(out, f32bits(uint32(b)))
	}
	r := rand.New(rand.NewPCG(7, 8))
	for range random {
		out = append(out, f32bits(r.Uint32()))
	}
	return out
}

// TestBulkConversionsMatchScalar: DecodeFloat32 and EncodeFloat32 give
// exactly the scalar functions' bits for every input, on the kernels (when
// the CPU has them) and on the Go loops that finish each call, at lengths
// that leave tails of every size.
func TestBulkConversionsMatchScalar(t *testing.T) {
	in := bulkTestFloats()
	scales := []float32{1, 0.5, 3.0517578e-05, 1e-30, 7e37, -2, float32(math.Inf(1)), float32(math.NaN()), f32bits(1)}
	for _, n := range []int{len(in), 15, 17, 31, 1} {
		src := in[len(in)-n:]
		for _, dt := range []DType{F32, F16, BF16, FP8E4M3} {
			for _, scale := range scales {
				if dt != FP8E4M3 && scale != 1 {
					continue
				}
				buf := make([]byte, n*dt.Size())
				if err := EncodeFloat32(buf, dt, src, scale); err != nil {
					t.Fatal(err)
				}
				for i, v := range src {
					var got, want uint32
					switch dt {
					case F32:
						got, want = binary.LittleEndian.Uint32(buf[4*i:]), math.Float32bits(v)
					case F16:
						got, want = uint32(binary.LittleEndian.Uint16(buf[2*i:])), uint32(F16FromFloat32(v))
					case BF16:
						got, want = uint32(binary.LittleEndian.Uint16(buf[2*i:])), uint32(BF16FromFloat32(v))
					case FP8E4M3:
						got, want = uint32(buf[i]), uint32(FP8E4M3FromFloat32(v/scale))
					}
					if got != want {
						t.Fatalf("EncodeFloat32 %s scale %g, element %d of %d: %08x -> %x, scalar %x", dt, scale, i, n, math.Float32bits(v), got, want)
					}
				}
			}
		}
	}
	// decoding: every 16-bit and 8-bit pattern, several scales
	all16 := make([]byte, 2<<16)
	for h := range 1 << 16 {
		binary.LittleEndian.PutUint16(all16[2*h:], uint16(h))
	}
	for _, n := range []int{1 << 16, 17, 1} {
		got := make([]float32, n)
		for _, dt := range []DType{F16, BF16} {
			if err := DecodeFloat32(got, dt, all16[2*((1<<16)-n):], 0); err != nil {
				t.Fatal(err)
			}
			for i, g := range got {
				h := uint16((1 << 16) - n + i)
				want := F16ToFloat32(h)
				if dt == BF16 {
					want = BF16ToFloat32(h)
				}
				if math.Float32bits(g) != math.Float32bits(want) {
					t.Fatalf("DecodeFloat32 %s %04x = %08x, scalar %08x", dt, h, math.Float32bits(g), math.Float32bits(want))
				}
			}
		}
	}
	all8 := make([]byte, 256*3+5)
	for i := range all8 {
		all8[i] = byte(i)
	}
	got := make([]float32, len(all8))
	for _, scale := range scales {
		if err := DecodeFloat32(got, FP8E4M3, all8, scale); err != nil {
			t.Fatal(err)
		}
		s := scale
		if s == 0 {
			s = 1
		}
		for i, g := range got {
			if want := FP8E4M3ToFloat32(all8[i]) * s; math.Float32bits(g) != math.Float32bits(want) {
				t.Fatalf("DecodeFloat32 fp8 %02x × %g = %08x, scalar %08x", all8[i], scale, math.Float32bits(g), math.Float32bits(want))
			}
		}
	}
}

// TestFastScalarsMatch: the branch-light scalars the Go loops use equal
// the reference scalars on every binary16 value and the test floats.
func TestFastScalarsMatch(t *testing.T) {
	for h := range 1 << 16 {
		if got, want := f16ToF32Fast(uint16(h)), F16ToFloat32(uint16(h)); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("f16ToF32Fast(%04x) = %08x, want %08x", h, math.Float32bits(got), math.Float32bits(want))
		}
	}
	for _, v := range bulkTestFloats() {
		if got, want := f16FromF32Fast(v), F16FromFloat32(v); got != want {
			t.Fatalf("f16FromF32Fast(%08x) = %04x, want %04x", math.Float32bits(v), got, want)
		}
		for _, s := range []float32{1, 0.25, 3} {
			if got, want := fp8FromF32Fast(v, s), FP8E4M3FromFloat32(v/s); got != want {
				t.Fatalf("fp8FromF32Fast(%08x, %g) = %02x, want %02x", math.Float32bits(v), s, got, want)
			}
		}
		if fp8FromF32Fast(v, 0) != 0 {
			t.Fatalf("fp8FromF32Fast(%g, 0) is not 0", v)
		}
	}
}

// TestAbsMaxBits checks the per-channel magnitude maximum the codecs use.
func TestAbsMaxBits(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 16, 37, 1024} {
		m := make([]uint32, n)
		want := make([]uint32, n)
		for range 5 {
			src := make([]float32, n)
			for i := range src {
				src[i] = f32bits(r.Uint32())
				want[i] = max(want[i], math.Float32bits(src[i])&0x7fffffff)
			}
			absMaxBits(m, src)
		}
		for i := range m {
			if m[i] != want[i] {
				t.Fatalf("n %d: m[%d] = %08x, want %08x", n, i, m[i], want[i])
			}
		}
	}
}

func benchConvert(b *testing.B, dt DType, decode bool) {
	const n = 1 << 20
	f := make([]float32, n)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range f {
		f[i] = float32(r.NormFloat64())
	}
	buf := make([]byte, n*dt.Size())
	if err := EncodeFloat32(buf, dt, f, 0.01); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if decode {
			err = DecodeFloat32(f, dt, buf, 0.01)
		} else {
			err = EncodeFloat32(buf, dt, f, 0.01)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	benchutil.ReportRatio(b, "x-vs-copy", float64(len(buf)), benchutil.CopyBaseline(len(buf)))
}

// BenchmarkDecodeFloat32 and BenchmarkEncodeFloat32 convert 1 Mi elements
// (SetBytes counts the narrow side) against copy() of the narrow bytes.
func BenchmarkDecodeFloat32(b *testing.B) {
	for _, dt := range []DType{F16, BF16, FP8E4M3} {
		b.Run(dt.String(), func(b *testing.B) { benchConvert(b, dt, true) })
	}
}

func BenchmarkEncodeFloat32(b *testing.B) {
	for _, dt := range []DType{F16, BF16, FP8E4M3} {
		b.Run(dt.String(), func(b *testing.B) { benchConvert(b, dt, false) })
	}
}

// TestFP8PeriodicScales: the FP8 conversions with rows of per-channel
// scales (the codecs' form; kernels when the period is a multiple of 16)
// equal the scalar functions, zero scales storing 0.
func TestFP8PeriodicScales(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, period := range []int{16, 32, 5, 48, 1} {
		for _, rows := range []int{1, 3, 7} {
			n := period * rows
			scales := make([]float32, period)
			for i := range scales {
				scales[i] = float32(r.ExpFloat64())
			}
			scales[period/2] = 0
			src := make([]float32, n)
			for i := range src {
				src[i] = float32(r.NormFloat64() * 300)
			}
			codes := make([]byte, n)
			encodeF32s(codes, FP8E4M3, src, scales)
			back := make([]float32, n)
			nan := fp8ScaleRows(back, codes, scales)
			for i, v := range src {
				s := scales[i%period]
				want := byte(0)
				if s != 0 {
					want = FP8E4M3FromFloat32(v / s)
				}
				if codes[i] != want {
					t.Fatalf("period %d rows %d: code[%d] = %02x, want %02x", period, rows, i, codes[i], want)
				}
				if w := FP8E4M3ToFloat32(codes[i]) * s; math.Float32bits(back[i]) != math.Float32bits(w) {
					t.Fatalf("period %d rows %d: value[%d] = %v, want %v", period, rows, i, back[i], w)
				}
			}
			if nan {
				t.Fatalf("period %d: NaN reported for codes without one", period)
			}
			codes[n-1] = 0xff
			if !fp8ScaleRows(back, codes, scales) {
				t.Fatalf("period %d rows %d: NaN code not reported", period, rows)
			}
		}
	}
}
