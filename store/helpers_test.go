package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testSpec is a small model whose layers are kvHeads×headDim×2 bytes (f16)
// per token.
func testSpec(t testing.TB, layers, kvHeads, headDim int) *kvcache.ModelSpec {
	t.Helper()
	s := &kvcache.ModelSpec{Name: "store-test", Arch: "llama", Layers: layers, AttnHeads: kvHeads * 2, KVHeads: kvHeads, HeadDim: headDim,
		HiddenSize: kvHeads * 2 * headDim, IntermediateSize: 4 * kvHeads * 2 * headDim, VocabSize: 1000, NormEps: 1e-5, DType: kvcache.F16,
		RoPE: kvcache.RoPE{Theta: 10000, Style: kvcache.RotateHalf}, MaxPositions: 1 << 16, WeightsID: "store-test"}
	if err := s.Validate(); err != nil {
		t.Fatalf("test spec: %v", err)
	}
	return s
}

// smallSpec: 4 layers of 2×16×2 B per token; 64 tokens = 8 KiB a layer.
func smallSpec(t testing.TB) *kvcache.ModelSpec { return testSpec(t, 4, 2, 16) }

// makeChunk builds a chunk of spec with tokens tokens whose KV bytes are
// random non-zero values from seed; its key is the real chunk key of its
// tokens under the spec's tenant salt.
func makeChunk(t testing.TB, spec *kvcache.ModelSpec, tokens int, seed uint64) *kvcache.Chunk {
	t.Helper()
	salt, err := spec.Salt("tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 7))
	toks := make([]matcher.Token, tokens)
	for i := range toks {
		toks[i] = matcher.Token(r.IntN(spec.VocabSize))
	}
	c := &kvcache.Chunk{ChunkInfo: kvcache.ChunkInfo{
		Key: matcher.ChunkKeyOf(salt, toks), Model: spec.Fingerprint(), SaltID: salt.ID(), Tokens: toks, Shape: spec.Shape(),
	}}
	lb := spec.Shape().LayerBytes(tokens)
	for range spec.Layers {
		b := make([]byte, lb)
		// f16 values with the exponent's top bit clear: finite, |x| < 2,
		// never zero (so no zero pages, and lossy codecs accept them).
		for i := 0; i+1 < len(b); i += 2 {
			v := uint16(r.Uint32())&0xBFFF | 1
			b[i], b[i+1] = byte(v), byte(v>>8)
		}
		c.Layers = append(c.Layers, b)
	}
	return c
}

// checkReader reads every available layer of r and compares it with want.
func checkReader(t testing.TB, r kvcache.ChunkReader, want *kvcache.Chunk) {
	t.Helper()
	if r.Info().Key != want.Key {
		t.Fatalf("reader key %v, want %v", r.Info().Key, want.Key)
	}
	rng := r.Available()
	for l := rng.Start; l < rng.End; l++ {
		b, err := r.Layer(context.Background(), l)
		if err != nil {
			t.Fatalf("layer %d: %v", l, err)
		}
		if string(b) != string(want.Layers[l]) {
			t.Fatalf("layer %d of %v differs from what was stored", l, want.Key)
		}
	}
}

// mustGet gets key from s and checks it against want.
func mustGet(t testing.TB, s Store, want *kvcache.Chunk) {
	t.Helper()
	r, err := s.Get(t.Context(), want.Key, kvcache.AllLayers)
	if err != nil {
		t.Fatalf("get %v: %v", want.Key, err)
	}
	defer r.Close()
	checkReader(t, r, want)
}

func mustMiss(t testing.TB, s Store, key matcher.ChunkKey) error {
	t.Helper()
	r, err := s.Get(t.Context(), key, kvcache.AllLayers)
	if err == nil {
		r.Close()
		t.Fatalf("get %v: found, want a miss", key)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("get %v: %v, want ErrNotFound", key, err)
	}
	return err
}
