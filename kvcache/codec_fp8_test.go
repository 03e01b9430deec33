package kvcache

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// codecLayer is one layer of test KV in float32, K then V rows.
type codecLayer struct {
	li LayerInfo
	f  []float32 // K rows then V rows, tokens × channels each
}

// codecRealKV returns the five layers of stories260K's real KV for "Once
// upon a time" (reference_once_upon_a_time.json), as f32.
func codecRealKV(t testing.TB) []codecLayer {
	t.Helper()
	ref := loadStoriesReference(t)
	sh := Shape{Layers: len(ref.KeyCache), KVHeads: ref.KVDim / ref.HeadSize, HeadDim: ref.HeadSize, DType: F32}
	var out []codecLayer
	for l := range ref.KeyCache {
		cl := codecLayer{li: LayerInfo{Index: l, Shape: sh, Tokens: len(ref.KeyCache[l])}}
		for _, rows := range [][][]float64{ref.KeyCache[l], ref.ValueCache[l]} {
			for _, r := range rows {
				for _, x := range r {
					cl.f = append(cl.f, float32(x))
				}
			}
		}
		out = append(out, cl)
	}
	return out
}

// codecSyntheticKV builds KV that looks like a real model's: each channel
// drifts slowly over the tokens around its own mean, channel magnitudes
// span three orders of magnitude, and one channel is an outlier.
func codecSyntheticKV(layers, tokens, kvHeads, headDim int, seed uint64) []codecLayer {
	r := rand.New(rand.NewPCG(seed, 99))
	ch := kvHeads * headDim
	sh := Shape{Layers: layers, KVHeads: kvHeads, HeadDim: headDim, DType: F32}
	var out []codecLayer
	for l := range layers {
		cl := codecLayer{li: LayerInfo{Index: l, Shape: sh, Tokens: tokens}, f: make([]float32, 2*tokens*ch)}
		for h := range 2 {
			for c := range ch {
				mag := math.Pow(10, r.Float64()*3-2)
				if c == 3 {
					mag *= 50
				}
				mean := r.NormFloat64() * mag
				x := mean
				for t := range tokens {
					x = mean + 0.8*(x-mean) + 0.3*mag*r.NormFloat64()
					cl.f[h*tokens*ch+t*ch+c] = float32(x)
				}
			}
		}
		out = append(out, cl)
	}
	return out
}

// codecAsDType encodes a float32 layer in dt (FP8 with absmax scales) and
// returns its LayerInfo and bytes, plus the values the dtype actually
// holds (what a codec must reproduce).
func codecAsDType(t testing.TB, cl codecLayer, dt DType) (LayerInfo, []byte, []float32) {
	t.Helper()
	li := cl.li
	li.Shape.DType = dt
	half := len(cl.f) / 2
	if dt == FP8E4M3 {
		mk := func(x []float32) float32 {
			var m float32
			for _, v := range x {
				m = max(m, float32(math.Abs(float64(v))))
			}
			return m / FP8E4M3Max
		}
		li.Scales = Scales{K: mk(cl.f[:half]), V: mk(cl.f[half:])}
	}
	b := make([]byte, li.Bytes())
	hb := len(b) / 2
	if err := EncodeFloat32(b[:hb], dt, cl.f[:half], li.Scales.K); err != nil {
		t.Fatal(err)
	}
	if err := EncodeFloat32(b[hb:], dt, cl.f[half:], li.Scales.V); err != nil {
		t.Fatal(err)
	}
	held := make([]float32, len(cl.f))
	if err := DecodeFloat32(held[:half], dt, b[:hb], li.Scales.K); err != nil {
		t.Fatal(err)
	}
	if err := DecodeFloat32(held[half:], dt, b[hb:], li.Scales.V); err != nil {
		t.Fatal(err)
	}
	return li, b, held
}

// codecDecodeF32 decodes a codec's output bytes back to float32.
func codecDecodeF32(t testing.TB, li LayerInfo, b []byte) []float32 {
	t.Helper()
	f := make([]float32, li.Bytes()/li.Shape.DType.Size())
	half := len(f) / 2
	hb := len(b) / 2
	if err := DecodeFloat32(f[:half], li.Shape.DType, b[:hb], li.Scales.K); err != nil {
		t.Fatal(err)
	}
	if err := DecodeFloat32(f[half:], li.Shape.DType, b[hb:], li.Scales.V); err != nil {
		t.Fatal(err)
	}
	return f
}

// codecDTypeSlack is the error the output dtype's own rounding may add.
func codecDTypeSlack(dt DType, x float32, scale float32) float64 {
	a := math.Abs(float64(x))
	switch dt {
	case F16:
		return a*math.Pow(2, -11) + math.Pow(2, -25)
	case BF16:
		return a * math.Pow(2, -8)
	case FP8E4M3:
		return a*math.Pow(2, -4) + float64(scale)*math.Pow(2, -10)
	}
	return 0
}

// codecChannelAbsMax is each channel's largest |value| in one half.
func codecChannelAbsMax(f []float32, ch int) []float64 {
	m := make([]float64, ch)
	for i, v := range f {
		m[i%ch] = math.Max(m[i%ch], math.Abs(float64(v)))
	}
	return m
}

func TestFP8RoundTrip(t *testing.T) {
	layers := append(codecRealKV(t), codecSyntheticKV(3, 37, 2, 16, 1)...)
	for _, dt := range []DType{F32, F16, BF16, FP8E4M3} {
		for _, cl := range layers {
			li, in, held := codecAsDType(t, cl, dt)
			enc, err := FP8{}.EncodeLayer([]byte("prefix"), li, in)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(enc, []byte("prefix")) {
				t.Fatal("EncodeLayer did not append to dst")
			}
			enc = enc[len("prefix"):]
			ch := li.Shape.KVHeads * li.Shape.HeadDim
			if len(enc) != fp8Size(li.Tokens, ch) {
				t.Fatalf("encoded %d bytes, want %d", len(enc), fp8Size(li.Tokens, ch))
			}
			again, _ := FP8{}.EncodeLayer(nil, li, in)
			if !bytes.Equal(again, enc) {
				t.Fatal("encoding is not deterministic")
			}
			out, err := FP8{}.DecodeLayer(nil, li, enc)
			if err != nil {
				t.Fatal(err)
			}
			got := codecDecodeF32(t, li, out)
			half := len(held) / 2
			for h := range 2 {
				part := held[h*half : (h+1)*half]
				am := codecChannelAbsMax(part, ch)
				dsc := [2]float32{li.Scales.K, li.Scales.V}[h]
				for i, want := range part {
					// E4M3: 3 mantissa bits (relative 2⁻⁴), subnormal step 2⁻⁹ of absmax/448
					bound := math.Abs(float64(want))*math.Pow(2, -4) + am[i%ch]/FP8E4M3Max*math.Pow(2, -9) + codecDTypeSlack(dt, want, dsc)
					if d := math.Abs(float64(got[h*half+i] - want)); d > bound*1.0001 {
						t.Fatalf("%s layer %d %s[%d] = %v, want %v ± %g", dt, li.Index, kvName(h), i, got[h*half+i], want, bound)
					}
				}
			}
		}
	}
}

func TestFP8DecodeErrors(t *testing.T) {
	cl := codecSyntheticKV(2, 6, 1, 4, 2)[1]
	li, in, _ := codecAsDType(t, cl, F16)
	enc, err := FP8{}.EncodeLayer(nil, li, in)
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(enc)) }
	nanScale := mut(func(b []byte) []byte { b[1], b[2], b[3], b[4] = 0, 0, 0xC0, 0x7F; return b })
	negScale := mut(func(b []byte) []byte { b[4] = 0xBF; return b })
	nanCode := mut(func(b []byte) []byte { b[1+4*4] = 0x7F; return b })
	for name, b := range map[string][]byte{
		"empty": {}, "truncated": enc[:len(enc)-1], "trailing": append(bytes.Clone(enc), 0),
		"version": mut(func(b []byte) []byte { b[0] = 9; return b }), "nan scale": nanScale,
		"negative scale": negScale, "nan code": nanCode,
	} {
		out, err := FP8{}.DecodeLayer(nil, li, b)
		if !errors.Is(err, ErrMalformed) || out != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := (FP8{}).EncodeLayer(nil, li, in[:3]); !errors.Is(err, ErrShape) {
		t.Errorf("short input: %v", err)
	}
	bad := li
	bad.Index = 2
	if _, err := (FP8{}).DecodeLayer(nil, bad, enc); !errors.Is(err, ErrShape) {
		t.Errorf("layer index past the shape: %v", err)
	}
	inf := codecLayer{li: cl.li, f: append([]float32(nil), cl.f...)}
	inf.f[5] = float32(math.Inf(1))
	li2, in2, _ := codecAsDType(t, inf, F32)
	if _, err := (FP8{}).EncodeLayer(nil, li2, in2); !errors.Is(err, ErrUnsupported) {
		t.Errorf("infinite value: %v", err)
	}
}

// codecFuzzInfo derives a small LayerInfo from fuzzer-chosen bytes.
func codecFuzzInfo(tokens, heads, dim, dt, layer uint8) LayerInfo {
	sh := Shape{Layers: 3, KVHeads: int(heads%4) + 1, HeadDim: int(dim%16) + 1, DType: DType(dt%4) + 1}
	li := LayerInfo{Index: int(layer % 3), Shape: sh, Tokens: int(tokens % 40)}
	if sh.DType == FP8E4M3 {
		li.Scales = Scales{K: 0.5, V: 2}
	}
	return li
}

// codecFuzzCheck is the decoders' fuzz property: an error returns nothing
// and wraps ErrMalformed; a success returns exactly the layer's bytes, all
// finite, which re-encode and decode again.
func codecFuzzCheck(t *testing.T, c Codec, li LayerInfo, enc []byte) {
	out, err := c.DecodeLayer(nil, li, enc)
	if err != nil {
		if out != nil || !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v with %d bytes out", err, len(out))
		}
		return
	}
	if len(out) != li.Bytes() {
		t.Fatalf("decoded %d bytes, want %d", len(out), li.Bytes())
	}
	f := codecDecodeF32(t, li, out)
	for i, v := range f {
		if math.IsNaN(float64(v)) {
			t.Fatalf("value %d is NaN", i)
		}
	}
	enc2, err := c.EncodeLayer(nil, li, out)
	if err != nil {
		if errors.Is(err, ErrUnsupported) { // a decoded value overflowed the dtype to ±Inf
			return
		}
		t.Fatal(err)
	}
	if _, err := c.DecodeLayer(nil, li, enc2); err != nil {
		t.Fatalf("re-encoded layer does not decode: %v", err)
	}
}

// FuzzFP8Decode's seeds are under testdata/fuzz (TestCodecFuzzSeeds).
func FuzzFP8Decode(f *testing.F) {
	f.Fuzz(func(t *testing.T, enc []byte, tokens, heads, dim, dt, layer uint8) {
		codecFuzzCheck(t, FP8{}, codecFuzzInfo(tokens, heads, dim, dt, layer), enc)
	})
}

// TestCodecsFP8LayerZeroScales: an fp8-e4m3 layer whose K/V scales are 0
// (meaning 1, as DecodeFloat32 reads them) round-trips through the codecs
// like one with scales of 1.
func TestCodecsFP8LayerZeroScales(t *testing.T) {
	cl := codecSyntheticKV(2, 21, 2, 8, 12)[1]
	for i, v := range cl.f {
		cl.f[i] = max(min(v*10, 400), -400)
	}
	li, in, _ := codecAsDType(t, cl, FP8E4M3)
	zero, one := li, li
	zero.Scales, one.Scales = Scales{}, Scales{K: 1, V: 1}
	if err := EncodeFloat32(in, FP8E4M3, cl.f, 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Codec{FP8{}, mustCacheGen(t, 1)} {
		var outs [2][]byte
		for i, l := range []LayerInfo{zero, one} {
			enc, err := c.EncodeLayer(nil, l, in)
			if err != nil {
				t.Fatal(err)
			}
			if outs[i], err = c.DecodeLayer(nil, l, enc); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(outs[0], outs[1]) {
			t.Errorf("%s: zero scales decode differently from scales of 1", c.Name())
		}
		if bytes.Count(outs[0], []byte{0}) > len(outs[0])/4 {
			t.Errorf("%s: zero scales decode to mostly zeros", c.Name())
		}
	}
}
