package kvcache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
)

func TestInvFreqLlama3Regions(t *testing.T) {
	s, _ := Preset("llama-3.1-8b")
	base, _ := Preset("llama-3-8b") // same theta, no scaling
	got, plain := s.InvFreq(), base.InvFreq()
	if len(got) != 64 {
		t.Fatalf("%d frequencies, want 64", len(got))
	}
	// theta 500000, d 128, original context 8192, low/high factors 1/4:
	// wavelength 2π·500000^(i/64) is below 2048 for i ≤ 28 (kept), above
	// 8192 for i ≥ 35 (divided by 8), and blended for 29..34.
	for i := range got {
		want := plain[i]
		switch {
		case i <= 28:
		case i >= 35:
			want = plain[i] / 8
		default:
			smooth := (8192/(2*math.Pi/plain[i]) - 1) / (4 - 1)
			want = (1-smooth)*plain[i]/8 + smooth*plain[i]
			if !(want < plain[i] && want > plain[i]/8) {
				t.Fatalf("blend at %d not between the bounds", i)
			}
		}
		if math.Abs(got[i]-want) > 1e-15*want {
			t.Errorf("inv_freq[%d] = %g, want %g", i, got[i], want)
		}
	}
	if plain[0] != 1 || math.Abs(plain[1]-math.Pow(500000, -2.0/128)) > 1e-18 {
		t.Fatalf("default frequencies wrong: %v", plain[:2])
	}
	lin := base
	lin.RoPE.Scaling = RoPEScaling{Type: ScalingLinear, Factor: 4}
	for i, f := range lin.InvFreq() {
		if math.Abs(f-plain[i]/4) > 1e-18 {
			t.Fatalf("linear inv_freq[%d] = %g, want %g", i, f, plain[i]/4)
		}
	}
}

// refRotate applies RoPE at position pos to float64 keys straight from the
// definition, for one head.
func refRotate(x []float64, inv []float64, style RotationStyle, pos float64) []float64 {
	y := append([]float64(nil), x...)
	half := len(inv)
	for i, f := range inv {
		i0, i1 := 2*i, 2*i+1
		if style == RotateHalf {
			i0, i1 = i, i+half
		}
		s, c := math.Sincos(pos * f)
		y[i0], y[i1] = x[i0]*c-x[i1]*s, x[i0]*s+x[i1]*c
	}
	return y
}

func ropeSpecs() []ModelSpec {
	base := ModelSpec{Name: "t", Arch: "llama", Layers: 1, AttnHeads: 4, KVHeads: 2, HeadDim: 16, HiddenSize: 64,
		IntermediateSize: 128, VocabSize: 10, MaxPositions: 1 << 17, WeightsID: "w", DType: F32}
	var out []ModelSpec
	for _, style := range []RotationStyle{RotateInterleaved, RotateHalf} {
		for _, sc := range []RoPEScaling{
			{},
			{Type: ScalingLinear, Factor: 4},
			{Type: ScalingLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192},
			{Type: ScalingFreqFactors, FreqFactors: []float64{1, 1, 2, 2, 4, 8}},
		} {
			for _, dim := range []int{0, 12} {
				s := base
				s.RoPE = RoPE{Theta: 500000, Style: style, Dim: dim, Scaling: sc}
				if sc.Type == ScalingFreqFactors && dim == 0 {
					s.RoPE.Scaling.FreqFactors = []float64{1, 1, 2, 2, 4, 8, 8, 8}
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// Rotating at p then by Δ equals rotating at p+Δ, for every style, scaling
// and dtype, within the dtype's precision.
func TestRotateComposes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	// tolerance relative to each head's norm: f32 1e-5; 16-bit types about
	// two roundings (bf16 2^-8, f16 2^-11) of every element; fp8 the same.
	tol := map[DType]float64{F32: 1e-5, BF16: 1.2e-2, F16: 2e-3, FP8E4M3: 0.2}
	specs := ropeSpecs()
	for _, style := range []RotationStyle{RotateInterleaved, RotateHalf} {
		big := specs[4] // llama3 scaling; head dim 128 takes the AVX-512 bf16 kernel where present
		big.HeadDim, big.RoPE.Style, big.RoPE.Dim = 128, style, 0
		specs = append(specs, big)
	}
	for _, spec := range specs {
		rot, err := NewRotator(&spec)
		if err != nil {
			t.Fatal(err)
		}
		inv := spec.InvFreq()
		for _, dt := range []DType{F32, BF16, F16, FP8E4M3} {
			name := fmt.Sprintf("%v/%v/hd%d/dim%d/%v", spec.RoPE.Style, spec.RoPE.Scaling.Type, spec.HeadDim, spec.RoPE.Dim, dt)
			t.Run(name, func(t *testing.T) {
				const tokens = 6
				shape := spec.Shape()
				shape.DType = dt
				n := tokens * spec.KVHeads * spec.HeadDim
				raw := make([]float32, n)
				for i := range raw {
					raw[i] = float32(r.NormFloat64())
				}
				for _, pd := range [][2]int{{0, 5}, {3, 1000}, {100000, -99990}, {17, 0}, {4096, 4096}, {65000, -65000}} {
					p, d := pd[0], pd[1]
					buf := make([]byte, n*dt.Size())
					if err := EncodeFloat32(buf, dt, raw, 1); err != nil {
						t.Fatal(err)
					}
					want := append([]byte(nil), buf...)
					if err := rot.Rotate(buf, dt, p, 1); err != nil {
						t.Fatal(err)
					}
					// Out-of-place application must equal in-place.
					moved := make([]byte, len(buf))
					if err := rot.Angles(d).Apply(moved, buf, dt, 1); err != nil {
						t.Fatal(err)
					}
					if err := rot.Rotate(buf, dt, d, 1); err != nil {
						t.Fatal(err)
					}
					if string(moved) != string(buf) {
						t.Fatalf("p=%d Δ=%d: out-of-place result differs from in-place", p, d)
					}
					if err := rot.Rotate(want, dt, p+d, 1); err != nil {
						t.Fatal(err)
					}
					got := make([]float32, n)
					exp := make([]float32, n)
					_ = DecodeFloat32(got, dt, buf, 1)
					_ = DecodeFloat32(exp, dt, want, 1)
					for h := 0; h < n; h += spec.HeadDim {
						var norm, diff float64
						x := make([]float64, spec.HeadDim)
						for i := range spec.HeadDim {
							norm += float64(exp[h+i]) * float64(exp[h+i])
							diff = max(diff, math.Abs(float64(got[h+i]-exp[h+i])))
							x[i] = float64(raw[h+i])
						}
						if diff > tol[dt]*math.Sqrt(norm) {
							t.Fatalf("p=%d Δ=%d head at %d: max diff %g, norm %g", p, d, h, diff, math.Sqrt(norm))
						}
						if dt == F32 {
							// And both equal the definition computed in float64.
							ref := refRotate(x[:spec.RotaryDim()], inv, spec.RoPE.Style, float64(p+d))
							for i := range ref {
								if math.Abs(ref[i]-float64(got[h+i])) > 1e-5*math.Sqrt(norm) {
									t.Fatalf("p=%d Δ=%d: element %d = %g, definition %g", p, d, i, got[h+i], ref[i])
								}
							}
							for i := spec.RotaryDim(); i < spec.HeadDim; i++ {
								if got[h+i] != raw[h+i] {
									t.Fatalf("unrotated dim %d changed", i)
								}
							}
						}
					}
				}
			})
		}
	}
}

type storiesReference struct {
	PromptTokens []int         `json:"prompt_tokens"`
	KVDim        int           `json:"kv_dim"`
	HeadSize     int           `json:"head_size"`
	KeyCache     [][][]float64 `json:"key_cache"`
	ValueCache   [][][]float64 `json:"value_cache"`
}

func loadStoriesReference(t testing.TB) storiesReference {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Stories260K(t), "reference_once_upon_a_time.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref storiesReference
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatalf("parse reference: %v", err)
	}
	if len(ref.KeyCache) != 5 || len(ref.KeyCache[0]) != len(ref.PromptTokens) || ref.KVDim != 32 {
		t.Fatalf("reference has an unexpected shape: %d layers, %d positions, kv_dim %d", len(ref.KeyCache), len(ref.KeyCache[0]), ref.KVDim)
	}
	return ref
}

// rawLayer0Keys computes layer 0's keys before RoPE straight from the
// checkpoint: k = wk[0] · (rmsnorm(embedding[token]) × rms_att[0]).
func rawLayer0Keys(t testing.TB, tokens []int) [][]float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseLlama2CHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	w := func(i int) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(b[28+4*i:]))) }
	dim, vocab, layers := h.Dim, h.VocabSize, h.Layers
	kvDim := h.KVHeads * dim / h.Heads
	embOff := 0
	rmsOff := vocab * dim
	wqOff := rmsOff + layers*dim
	wkOff := wqOff + layers*dim*dim
	out := make([][]float64, len(tokens))
	for p, tok := range tokens {
		x := make([]float64, dim)
		var ss float64
		for i := range x {
			x[i] = w(embOff + tok*dim + i)
			ss += x[i] * x[i]
		}
		norm := 1 / math.Sqrt(ss/float64(dim)+1e-5)
		for i := range x {
			x[i] *= norm * w(rmsOff+i)
		}
		k := make([]float64, kvDim)
		for r := range k {
			for j := range dim {
				k[r] += w(wkOff+r*dim+j) * x[j]
			}
		}
		out[p] = k
	}
	return out
}

// The real post-RoPE keys of stories260K: rotating them back to position 0
// recovers the raw keys computed from the weights (layer 0), and rotating
// them forward again reproduces the reference (every layer).
func TestRotateStories260KReferenceKeys(t *testing.T) {
	ref := loadStoriesReference(t)
	spec, _ := Preset("stories260K")
	rot, err := NewRotator(&spec)
	if err != nil {
		t.Fatal(err)
	}
	raw0 := rawLayer0Keys(t, ref.PromptTokens)
	for l, layer := range ref.KeyCache {
		for p, key := range layer {
			row := make([]float32, len(key))
			for i, v := range key {
				row[i] = float32(v)
			}
			buf := make([]byte, 4*len(row))
			_ = EncodeFloat32(buf, F32, row, 1)
			if err := rot.Rotate(buf, F32, -p, 1); err != nil {
				t.Fatal(err)
			}
			back := make([]float32, len(row))
			_ = DecodeFloat32(back, F32, buf, 1)
			if l == 0 {
				for i := range back {
					if d := math.Abs(float64(back[i]) - raw0[p][i]); d > 1e-5*max(1, math.Abs(raw0[p][i])) {
						t.Fatalf("layer 0 pos %d elem %d: rotated back %g, raw key from weights %g", p, i, back[i], raw0[p][i])
					}
				}
			}
			if err := rot.Rotate(buf, F32, p, 1); err != nil {
				t.Fatal(err)
			}
			_ = DecodeFloat32(back, F32, buf, 1)
			for i := range back {
				if d := math.Abs(float64(back[i]) - key[i]); d > 1e-5*max(1, math.Abs(key[i])) {
					t.Fatalf("layer %d pos %d elem %d: round trip %g, reference %g", l, p, i, back[i], key[i])
				}
			}
		}
	}
	// Rotating with the wrong style must not reproduce layer 0: the test can fail.
	wrong := spec
	wrong.RoPE.Style = RotateHalf
	wr, _ := NewRotator(&wrong)
	row := make([]float32, 32)
	for i := range row {
		row[i] = float32(raw0[4][i])
	}
	buf := make([]byte, 128)
	_ = EncodeFloat32(buf, F32, row, 1)
	_ = wr.Rotate(buf, F32, 4, 1)
	_ = DecodeFloat32(row, F32, buf, 1)
	var worst float64
	for i := range row {
		worst = max(worst, math.Abs(float64(row[i])-ref.KeyCache[0][4][i]))
	}
	if worst < 1e-3 {
		t.Fatalf("NeoX-style rotation reproduced GPT-J-style keys (max diff %g): the reference check is blind", worst)
	}
}

func TestRotateErrors(t *testing.T) {
	spec, _ := Preset("stories260K")
	rot, _ := NewRotator(&spec)
	if err := rot.Rotate(make([]byte, 100), F32, 1, 1); err == nil {
		t.Fatal("partial row accepted")
	}
	if err := rot.Angles(1).Apply(make([]byte, 128), make([]byte, 256), F32, 1); err == nil {
		t.Fatal("mismatched lengths accepted")
	}
	bad := spec
	bad.RoPE.Theta = 0
	if _, err := NewRotator(&bad); err == nil {
		t.Fatal("invalid spec accepted")
	}
}

// The bf16 fast paths (aligned buffers) give the same bits as the portable
// path (forced by misaligned buffers), NaN and Inf included.
func TestRotateBF16FastPathNaNInf(t *testing.T) {
	specials := []uint16{0x7fc0, 0xffc0, 0x7f81, 0xff81, 0x7fff, 0xffff, 0x7f80, 0xff80, 0x7f7f, 0xff7f, 0x0001, 0x8001, 0x0000, 0x8000, 0x3f80}
	r := rand.New(rand.NewPCG(9, 10))
	specs := ropeSpecs()
	for _, hd := range []int{32, 128} { // shapes the AVX-512 kernel takes (rotated pairs a multiple of 16)
		for _, style := range []RotationStyle{RotateInterleaved, RotateHalf} {
			for _, dim := range []int{0, hd / 2} {
				sp := specs[0]
				sp.HeadDim, sp.RoPE.Style, sp.RoPE.Dim = hd, style, dim
				sp.RoPE.Scaling = RoPEScaling{Type: ScalingLlama3, Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositions: 8192}
				specs = append(specs, sp)
			}
		}
	}
	kernelUsed := false
	for _, spec := range specs {
		spec.DType = BF16
		rot, err := NewRotator(&spec)
		if err != nil {
			t.Fatal(err)
		}
		n := 7 * spec.KVHeads * spec.HeadDim * 2
		fast := make([]byte, n+8)[8:]
		slow := make([]byte, n+2)[2:]
		if !aligned(fast, 4) || aligned(slow, 4) {
			t.Fatal("test buffers do not select the intended paths")
		}
		src := make([]byte, n)
		for i := 0; i < n; i += 2 {
			v := uint16(r.Uint32())
			if r.IntN(8) == 0 {
				v = specials[r.IntN(len(specials))]
			}
			binary.LittleEndian.PutUint16(src[i:], v)
		}
		for _, d := range []int{1, -3, 1000, 123456} {
			a := rot.Angles(d)
			_ = a.Apply(fast, src, BF16, 1)
			_ = a.Apply(slow, src, BF16, 1)
			heads := n / (2 * spec.HeadDim)
			if a.applyBF16Kernel(make([]byte, n), src, heads) {
				kernelUsed = true
			}
			// The pure-Go word paths, called directly, agree too.
			goFast := make([]byte, n)
			if spec.RoPE.Style == RotateInterleaved {
				a.applyBF16PairsFast(goFast, src, heads)
			} else {
				a.applyBF16HalvesFast(goFast, src, heads)
			}
			if !bytes.Equal(goFast, slow) {
				t.Fatalf("%v hd %d dim %d Δ=%d: pure-Go word path differs from the portable path", spec.RoPE.Style, spec.HeadDim, spec.RoPE.Dim, d)
			}
			for i := 0; i < n; i += 2 {
				f, s := binary.LittleEndian.Uint16(fast[i:]), binary.LittleEndian.Uint16(slow[i:])
				if f != s {
					t.Fatalf("%v/%v Δ=%d element %d: fast %04x, portable %04x", spec.RoPE.Style, spec.RoPE.Scaling.Type, d, i/2, f, s)
				}
			}
			// In place equals out of place.
			inPlace := append(make([]byte, 0, n+8), src...)
			_ = a.Apply(inPlace, inPlace, BF16, 1)
			if !bytes.Equal(inPlace, fast) {
				t.Fatal("in-place fast rotation differs")
			}
		}
	}
	if haveRopeAVX512 && !kernelUsed {
		t.Fatal("the AVX-512 kernel is available but no case exercised it")
	}
	t.Logf("AVX-512 kernel available: %v", haveRopeAVX512)
}
