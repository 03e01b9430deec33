package kvcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kvloom/kvloom/internal/benchutil"
)

var updateCodecSeeds = flag.Bool("update-codec-seeds", false, "rewrite the fp8/cachegen fuzz seed corpora under testdata/fuzz")

func mustCacheGen(t testing.TB, level int) *CacheGen {
	t.Helper()
	c, err := NewCacheGen(level)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cachegenBound is the largest reconstruction error the quantizer allows
// for a value of channel c: half a quantization step of the anchor (for an
// anchor) or of the delta (otherwise), with the bf16 scale rounded up by
// at most 2⁻⁷; deltas are at most twice the channel's absmax.
func cachegenBound(absmax float64, bits uint8, anchor bool) float64 {
	q := float64(cgQMax(bits))
	m := absmax
	if !anchor {
		m *= 2
	}
	return 0.5 * m / q * (1 + math.Pow(2, -7))
}

func TestCacheGenRoundTrip(t *testing.T) {
	layers := append(codecRealKV(t), codecSyntheticKV(6, 53, 2, 16, 4)...)
	for level := 1; level <= CacheGenMaxLevel; level++ {
		c := mustCacheGen(t, level)
		p := cachegenLevels[level]
		for _, dt := range []DType{F32, F16, BF16, FP8E4M3} {
			for _, cl := range layers {
				li, in, held := codecAsDType(t, cl, dt)
				enc, err := c.EncodeLayer([]byte{0xAA}, li, in)
				if err != nil {
					t.Fatal(err)
				}
				if enc[0] != 0xAA {
					t.Fatal("EncodeLayer did not append")
				}
				enc = enc[1:]
				if enc[1] != byte(level) {
					t.Fatalf("level byte %d", enc[1])
				}
				again, _ := c.EncodeLayer(nil, li, in)
				if !bytes.Equal(again, enc) {
					t.Fatal("encoding is not deterministic")
				}
				// another level's codec decodes it: the level is in the encoding
				out, err := mustCacheGen(t, 1+level%CacheGenMaxLevel).DecodeLayer(make([]byte, 3), li, enc)
				if err != nil {
					t.Fatalf("level %d %s layer %d: %v", level, dt, li.Index, err)
				}
				got := codecDecodeF32(t, li, out)
				ch := li.Shape.KVHeads * li.Shape.HeadDim
				g := cachegenLayerGroup(li.Index, li.Shape.Layers)
				half := len(held) / 2
				for h := range 2 {
					part := held[h*half : (h+1)*half]
					am := codecChannelAbsMax(part, ch)
					bits := [2]uint8{p.kBits[g], p.vBits[g]}[h]
					dsc := [2]float32{li.Scales.K, li.Scales.V}[h]
					for i, want := range part {
						anchor := (i/ch)%p.group == 0
						bound := cachegenBound(am[i%ch], p.anchorBits, anchor)
						if !anchor {
							// a delta is taken against the decoded anchor, whose
							// error cancels; |delta| <= absmax + |decoded anchor|
							bound = cachegenBound(am[i%ch]+cachegenBound(am[i%ch], p.anchorBits, true), bits, false)
						}
						bound += codecDTypeSlack(dt, want, dsc) + 1e-12
						if d := math.Abs(float64(got[h*half+i] - want)); d > bound {
							t.Fatalf("level %d %s layer %d %s[%d] = %v, want %v ± %g", level, dt, li.Index, kvName(h), i, got[h*half+i], want, bound)
						}
					}
				}
			}
		}
	}
}

// TestCacheGenLevels: higher levels are smaller and less exact, and the
// bit widths fall with the layer group, on KV that looks like a model's.
func TestCacheGenLevels(t *testing.T) {
	layers := codecSyntheticKV(6, 256, 4, 32, 5)
	prevSize, prevErr := math.MaxInt, 0.0
	for level := 1; level <= CacheGenMaxLevel; level++ {
		c := mustCacheGen(t, level)
		size, sqErr, sq := 0, 0.0, 0.0
		for _, cl := range layers {
			li, in, held := codecAsDType(t, cl, F16)
			enc, err := c.EncodeLayer(nil, li, in)
			if err != nil {
				t.Fatal(err)
			}
			size += len(enc)
			out, err := c.DecodeLayer(nil, li, enc)
			if err != nil {
				t.Fatal(err)
			}
			got := codecDecodeF32(t, li, out)
			for i, v := range held {
				d := float64(got[i] - v)
				sqErr += d * d
				sq += float64(v) * float64(v)
			}
		}
		rel := math.Sqrt(sqErr / sq)
		fp16 := 0
		for _, cl := range layers {
			fp16 += len(cl.f) * 2
		}
		t.Logf("cachegen:%d: %.2fx smaller than fp16, relative RMS error %.4f", level, float64(fp16)/float64(size), rel)
		if size >= prevSize || rel <= prevErr {
			t.Errorf("level %d: %d bytes (level below: %d), error %.4f (level below: %.4f)", level, size, prevSize, rel, prevErr)
		}
		if float64(fp16)/float64(size) < 2 {
			t.Errorf("level %d compresses fp16 only %.2fx", level, float64(fp16)/float64(size))
		}
		prevSize, prevErr = size, rel
	}
	for level := 1; level <= CacheGenMaxLevel; level++ {
		p := cachegenLevels[level]
		for g := 1; g < 3; g++ {
			if p.kBits[g] > p.kBits[g-1] || p.vBits[g] > p.vBits[g-1] {
				t.Errorf("level %d: bits rise with depth: K %v V %v", level, p.kBits, p.vBits)
			}
		}
	}
	if g := []int{cachegenLayerGroup(0, 32), cachegenLayerGroup(11, 32), cachegenLayerGroup(31, 32), cachegenLayerGroup(0, 1), cachegenLayerGroup(4, 5)}; fmt.Sprint(g) != "[0 1 2 0 2]" {
		t.Errorf("layer groups %v", g)
	}
}

func TestCacheGenNames(t *testing.T) {
	for _, bad := range []int{0, -1, CacheGenMaxLevel + 1} {
		if _, err := NewCacheGen(bad); !errors.Is(err, ErrUnsupported) {
			t.Errorf("level %d: %v", bad, err)
		}
	}
	c, err := ParseCacheGen("cachegen:3")
	if err != nil || c.Level() != 3 || c.Name() != "cachegen:3" || c.ID() != CodecCacheGen {
		t.Fatalf("ParseCacheGen: %v %v", c, err)
	}
	for _, bad := range []string{"cachegen", "cachegen:x", "fp8:2", "cachegen:9"} {
		if _, err := ParseCacheGen(bad); err == nil {
			t.Errorf("ParseCacheGen(%q) accepted", bad)
		}
	}
	reg, err := NewCodecs(FP8{}, mustCacheGen(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := reg.Lookup(CodecCacheGen); err != nil || got.Name() != "cachegen:2" {
		t.Fatalf("registry: %v %v", got, err)
	}
	if got, err := reg.Lookup(CodecFP8); err != nil || got.Name() != "fp8" {
		t.Fatalf("registry: %v %v", got, err)
	}
	var zero CacheGen
	if _, err := zero.EncodeLayer(nil, LayerInfo{}, nil); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("zero CacheGen encodes: %v", err)
	}
}

func TestCacheGenDecodeErrors(t *testing.T) {
	c := mustCacheGen(t, 2)
	cl := codecSyntheticKV(3, 25, 1, 8, 6)[2]
	li, in, _ := codecAsDType(t, cl, F16)
	enc, err := c.EncodeLayer(nil, li, in)
	if err != nil {
		t.Fatal(err)
	}
	ch := 8
	streams := cachegenHeader + 4*ch // first K anchor stream's block
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(enc)) }
	cases := map[string][]byte{
		"empty":     {},
		"header":    enc[:4],
		"truncated": enc[:len(enc)-1],
		"trailing":  append(bytes.Clone(enc), 0),
		"version":   mut(func(b []byte) []byte { b[0] = 2; return b }),
		"level":     mut(func(b []byte) []byte { b[1] = 0; return b }),
		"group":     mut(func(b []byte) []byte { b[2] = 0; return b }),
		"bits low":  mut(func(b []byte) []byte { b[4] = 1; return b }),
		"bits high": mut(func(b []byte) []byte { b[5] = 9; return b }),
		"nan scale": mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[cachegenHeader:], 0x7FC0); return b }),
		"neg scale": mut(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[cachegenHeader:], 0xBF80); return b }),
		"mode":      mut(func(b []byte) []byte { b[streams] = 7; return b }),
		"length":    mut(func(b []byte) []byte { b[streams+1] = 0x7F; return b }),
	}
	// a raw block whose symbol is out of range for 8 anchor bits: 255 > 254
	raw := bytes.Clone(enc[:streams])
	raw = append(raw, cgModeRaw, 3*8)
	raw = append(raw, bytes.Repeat([]byte{255}, 3*8)...)
	cases["symbol range"] = raw
	for name, b := range cases {
		out, err := c.DecodeLayer(nil, li, b)
		if !errors.Is(err, ErrMalformed) || out != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// cachegenSeedLayers are the encodings the decoders' fuzz seed corpora
// start from: every level, every mode of block.
func cachegenSeedLayers(t testing.TB) map[string][][]byte {
	out := map[string][][]byte{}
	for i, cl := range codecSyntheticKV(3, 5, 1, 4, 3) {
		li, in, _ := codecAsDType(t, cl, F16)
		enc, err := FP8{}.EncodeLayer(nil, li, in)
		if err != nil {
			t.Fatal(err)
		}
		out["FuzzFP8Decode"] = append(out["FuzzFP8Decode"], codecSeed(enc, 5, 0, 3, 1, uint8(i)))
	}
	for level := 1; level <= CacheGenMaxLevel; level++ {
		for i, cl := range codecSyntheticKV(3, 23, 2, 4, uint64(level)) {
			li, in, _ := codecAsDType(t, cl, F32)
			enc, err := mustCacheGen(t, level).EncodeLayer(nil, li, in)
			if err != nil {
				t.Fatal(err)
			}
			out["FuzzCacheGenDecode"] = append(out["FuzzCacheGenDecode"], codecSeed(enc, 23, 1, 3, 0, uint8(i)))
		}
	}
	zero := codecLayer{li: LayerInfo{Index: 0, Shape: Shape{Layers: 3, KVHeads: 1, HeadDim: 2, DType: F32}, Tokens: 4}, f: make([]float32, 16)}
	li, in, _ := codecAsDType(t, zero, F32)
	enc, err := mustCacheGen(t, 1).EncodeLayer(nil, li, in)
	if err != nil {
		t.Fatal(err)
	}
	out["FuzzCacheGenDecode"] = append(out["FuzzCacheGenDecode"], codecSeed(enc, 4, 0, 1, 0, 0))
	return out
}

// codecSeed writes one corpus entry in go test's fuzz file format.
func codecSeed(enc []byte, tokens, heads, dim, dt, layer uint8) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(enc)))
	for _, v := range []uint8{tokens, heads, dim, dt, layer} {
		fmt.Fprintf(&b, "byte(%s)\n", strconv.QuoteRune(rune(v)))
	}
	return b.Bytes()
}

func TestCodecFuzzSeeds(t *testing.T) {
	for target, seeds := range cachegenSeedLayers(t) {
		dir := filepath.Join("testdata", "fuzz", target)
		for i, want := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
			if *updateCodecSeeds {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("fuzz seed %s missing or stale (%v): run go test ./kvcache -run TestCodecFuzzSeeds -update-codec-seeds", path, err)
			}
		}
	}
}

func FuzzCacheGenDecode(f *testing.F) {
	c := mustCacheGen(f, 2)
	f.Fuzz(func(t *testing.T, enc []byte, tokens, heads, dim, dt, layer uint8) {
		codecFuzzCheck(t, c, codecFuzzInfo(tokens, heads, dim, dt, layer), enc)
	})
}

// benchCodecLayer is one f16 layer of a llama-3-8b-shaped chunk (256
// tokens, 8 KV heads × 128) of KV-like data, non-zero throughout.
func benchCodecLayer(b *testing.B, tokens, heads, dim int) (LayerInfo, []byte) {
	b.Helper()
	cl := codecSyntheticKV(1, tokens, heads, dim, 7)[0]
	li, in, _ := codecAsDType(b, cl, F16)
	return li, in
}

func benchmarkCodec(b *testing.B, c Codec, tokens, heads, dim int) {
	li, in := benchCodecLayer(b, tokens, heads, dim)
	enc, err := c.EncodeLayer(nil, li, in)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		dst := make([]byte, 0, 2*len(in))
		for b.Loop() {
			if _, err := c.EncodeLayer(dst[:0], li, in); err != nil {
				b.Fatal(err)
			}
		}
		benchutil.ReportRatio(b, "x-vs-copy", float64(len(in)), benchutil.CopyBaseline(len(in)))
		b.ReportMetric(float64(len(in))/float64(len(enc)), "ratio-vs-fp16")
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		dst := make([]byte, len(in))
		for b.Loop() {
			if _, err := c.DecodeLayer(dst, li, enc); err != nil {
				b.Fatal(err)
			}
		}
		benchutil.ReportRatio(b, "x-vs-copy", float64(len(in)), benchutil.CopyBaseline(len(in)))
	})
}

// BenchmarkCodecs times the lossy codecs on one f16 layer of a
// llama-3-8b-sized chunk (256 tokens × 8 KV heads × 128) and of a
// stories260K-sized one (64 tokens × 4 × 8).
func BenchmarkCodecs(b *testing.B) {
	for _, size := range []struct {
		name             string
		tokens, heads, d int
	}{{"llama3-8b-256tok", 256, 8, 128}, {"stories260K-64tok", 64, 4, 8}} {
		b.Run(size.name, func(b *testing.B) {
			b.Run("fp8", func(b *testing.B) { benchmarkCodec(b, FP8{}, size.tokens, size.heads, size.d) })
			for l := 1; l <= CacheGenMaxLevel; l++ {
				b.Run(fmt.Sprintf("cachegen-%d", l), func(b *testing.B) { benchmarkCodec(b, mustCacheGen(b, l), size.tokens, size.heads, size.d) })
			}
		})
	}
}
