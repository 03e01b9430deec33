package kvcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kvloom/kvloom/matcher"
)

var update = flag.Bool("update", false, "rewrite golden files")

// tinySpec is a small model for blob and stitch tests.
func tinySpec(dt DType) ModelSpec {
	return ModelSpec{Name: "tiny", Arch: "llama", Layers: 3, AttnHeads: 4, KVHeads: 2, HeadDim: 8, HiddenSize: 32,
		IntermediateSize: 64, VocabSize: 100, DType: dt, RoPE: RoPE{Theta: 10000, Style: RotateHalf}, MaxPositions: 4096, WeightsID: "tiny"}
}

// fillKV fills kv with deterministic non-zero values.
func fillKV(kv *KV, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 99))
	sh := kv.Shape()
	vals := make([]float32, len(kv.Bytes())/sh.DType.Size())
	for i := range vals {
		vals[i] = float32(r.NormFloat64())
	}
	_ = EncodeFloat32(kv.Bytes(), sh.DType, vals, kv.Scale(0, false))
}

func testChunk(t testing.TB, spec ModelSpec, tokens, basePos int, seed uint64) *Chunk {
	t.Helper()
	kv, err := NewKV(spec.Shape(), tokens)
	if err != nil {
		t.Fatal(err)
	}
	if spec.DType == FP8E4M3 {
		for l := range spec.Layers {
			kv.SetScales(l, Scales{K: 0.5, V: 0.25})
		}
	}
	fillKV(kv, seed)
	toks := make([]matcher.Token, tokens)
	for i := range toks {
		toks[i] = matcher.Token(seed*1000 + uint64(i))
	}
	salt, err := spec.Salt("tenant")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ChunkFromKV(kv, 0, ChunkInfo{Key: matcher.ChunkKey{byte(seed), 1, 2}, Model: spec.Fingerprint(), SaltID: salt.ID(), Tokens: toks, BasePos: basePos})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func chunksEqual(t *testing.T, got, want *Chunk) {
	t.Helper()
	if got.Key != want.Key || got.Model != want.Model || got.SaltID != want.SaltID || got.BasePos != want.BasePos ||
		got.Shape != want.Shape || fmt.Sprint(got.Tokens) != fmt.Sprint(want.Tokens) || fmt.Sprint(got.Scales) != fmt.Sprint(want.Scales) {
		t.Fatalf("metadata differs:\n got %+v\nwant %+v", got.ChunkInfo, want.ChunkInfo)
	}
	for l := range want.Layers {
		if !bytes.Equal(got.Layers[l], want.Layers[l]) {
			t.Fatalf("layer %d differs", l)
		}
	}
}

func TestBlobRoundTrip(t *testing.T) {
	for _, dt := range []DType{F32, F16, BF16, FP8E4M3} {
		t.Run(dt.String(), func(t *testing.T) {
			spec := tinySpec(dt)
			c := testChunk(t, spec, 37, 100, 1)
			blob, err := AppendBlob([]byte("prefix"), c, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(blob[:6], []byte("prefix")) {
				t.Fatal("AppendBlob overwrote dst")
			}
			blob = blob[6:]
			if int64(len(blob)) != RawBlobSize(&c.ChunkInfo) {
				t.Fatalf("blob %d bytes, RawBlobSize %d", len(blob), RawBlobSize(&c.ChunkInfo))
			}
			var buf bytes.Buffer
			n, err := EncodeChunk(&buf, c, Raw{})
			if err != nil || n != int64(len(blob)) || !bytes.Equal(buf.Bytes(), blob) {
				t.Fatalf("EncodeChunk wrote %d bytes (%v), different from AppendBlob's %d", n, err, len(blob))
			}
			salt, _ := spec.Salt("tenant")
			opts := DecodeOptions{Model: &spec, Salt: &salt}
			got, err := DecodeChunk(blob, opts)
			if err != nil {
				t.Fatal(err)
			}
			chunksEqual(t, got, c)
			// Zero copy: raw layers alias the blob.
			e0 := blob[RawBlobSize(&c.ChunkInfo)-int64(len(c.Layers[2])):]
			if &got.Layers[2][0] != &e0[0] {
				t.Fatal("raw layer is a copy, not the blob's bytes")
			}
			got, err = ReadChunk(t.Context(), bytes.NewReader(blob), opts)
			if err != nil {
				t.Fatal(err)
			}
			chunksEqual(t, got, c)
		})
	}
}

func TestBlobGolden(t *testing.T) {
	spec := tinySpec(BF16)
	spec.Layers = 2
	c := testChunk(t, spec, 3, 7, 5)
	blob, err := AppendBlob(nil, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden_chunk.blob")
	if *update {
		if err := os.WriteFile(path, blob, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestBlobGolden -update)", err)
	}
	if !bytes.Equal(blob, want) {
		t.Fatalf("blob encoding changed (%d bytes vs golden %d): bump BlobVersion and update docs/formats.md", len(blob), len(want))
	}
	// Field offsets as docs/formats.md specifies them.
	le := binary.LittleEndian
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"version@4", uint64(le.Uint16(blob[4:])), BlobVersion},
		{"header size@6", uint64(le.Uint16(blob[6:])), BlobHeaderSize},
		{"salt id@64", le.Uint64(blob[64:]), c.SaltID},
		{"size@72", le.Uint64(blob[72:]), uint64(len(blob))},
		{"tokens@80", uint64(le.Uint32(blob[80:])), 3},
		{"base pos@84", uint64(le.Uint32(blob[84:])), 7},
		{"layers@88", uint64(le.Uint16(blob[88:])), 2},
		{"kv heads@90", uint64(le.Uint16(blob[90:])), 2},
		{"head dim@92", uint64(le.Uint16(blob[92:])), 8},
		{"dtype@94", uint64(blob[94]), uint64(BF16)},
		{"codec@95", uint64(blob[95]), uint64(CodecRaw)},
		{"token 0@128", uint64(le.Uint32(blob[128:])), uint64(c.Tokens[0])},
		{"layer 0 offset@140", le.Uint64(blob[140:]), 256},
		{"layer 0 length@148", le.Uint64(blob[148:]), 192},
		{"layer 0 crc@156", uint64(le.Uint32(blob[156:])), uint64(crc32.Checksum(c.Layers[0], castagnoli))},
		{"layer 1 offset@172", le.Uint64(blob[172:]), 448},
		{"header crc@204", uint64(le.Uint32(blob[204:])), uint64(crc32.Checksum(blob[:204], castagnoli))},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %d, want %d", ck.name, ck.got, ck.want)
		}
	}
	if !bytes.Equal(blob[:4], []byte("KVLC")) || !bytes.Equal(blob[16:48], c.Model[:]) || !bytes.Equal(blob[48:64], c.Key[:]) {
		t.Error("magic, fingerprint or key not where docs/formats.md puts them")
	}
}

// corrupt returns a copy of b with f applied, and the header CRC recomputed
// when fix is true (so that a field error, not the CRC, is what fails).
func corrupt(b []byte, fix bool, f func([]byte)) []byte {
	c := append([]byte(nil), b...)
	f(c)
	if fix {
		tokens := int(binary.LittleEndian.Uint32(c[80:]))
		layers := int(binary.LittleEndian.Uint16(c[88:]))
		n := metaSize(tokens, layers) - 4
		binary.LittleEndian.PutUint32(c[n:], crc32.Checksum(c[:n], castagnoli))
	}
	return c
}

// decodeBoth opens b through both readers and reads every layer, returning
// the first error of each.
func decodeBoth(b []byte, opts DecodeOptions) (blobErr, streamErr error) {
	ctx := context.Background()
	if br, err := OpenBlob(b, opts); err != nil {
		blobErr = err
	} else {
		for l := range br.Header().Shape.Layers {
			if _, err := br.Layer(ctx, l); err != nil {
				blobErr = err
				break
			}
		}
	}
	if sr, err := NewStreamReader(bytes.NewReader(b), opts); err != nil {
		streamErr = err
	} else {
		streamErr = sr.ReadAll(ctx)
	}
	return blobErr, streamErr
}

func TestBlobErrorsAreDistinct(t *testing.T) {
	spec := tinySpec(F16)
	c := testChunk(t, spec, 10, 0, 2)
	blob, err := AppendBlob(nil, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := spec
	other.WeightsID = "another fine-tune"
	otherShape := spec
	otherShape.KVHeads = 1
	salt, _ := spec.Salt("someone else")
	payload0 := int(binary.LittleEndian.Uint64(blob[BlobHeaderSize+4*10:]))
	tests := []struct {
		name   string
		blob   []byte
		opts   DecodeOptions
		want   error
		stream bool // the stream reader sees the same error
	}{
		{"not a blob", []byte("GGUF and more bytes than the magic"), DecodeOptions{}, ErrNotBlob, true},
		{"empty", nil, DecodeOptions{}, ErrTruncated, true},
		{"truncated header", blob[:100], DecodeOptions{}, ErrTruncated, true},
		{"truncated tokens", blob[:130], DecodeOptions{}, ErrTruncated, true},
		{"truncated payload", blob[:len(blob)-1], DecodeOptions{}, ErrTruncated, true},
		{"trailing bytes", append(append([]byte(nil), blob...), 0), DecodeOptions{}, ErrOversized, false},
		{"too many tokens", blob, DecodeOptions{MaxTokens: 9}, ErrOversized, true},
		{"too many bytes", blob, DecodeOptions{MaxBytes: 100}, ErrOversized, true},
		{"version 2", corrupt(blob, false, func(b []byte) { b[4] = 2 }), DecodeOptions{}, ErrVersion, true},
		{"payload bit flip", corrupt(blob, false, func(b []byte) { b[payload0+5] ^= 1 }), DecodeOptions{}, ErrChecksum, true},
		{"token bit flip", corrupt(blob, false, func(b []byte) { b[BlobHeaderSize+4] ^= 1 }), DecodeOptions{}, ErrChecksum, true},
		{"header crc", corrupt(blob, false, func(b []byte) { b[metaSize(10, 3)-1] ^= 0x80 }), DecodeOptions{}, ErrChecksum, true},
		{"other weights", blob, DecodeOptions{Model: &other}, ErrModelMismatch, true},
		{"other shape", corrupt(blob, true, func(b []byte) { copy(b[16:48], fpOf(otherShape)) }), DecodeOptions{Model: &otherShape}, ErrModelMismatch, true},
		{"other salt", blob, DecodeOptions{Salt: &salt}, ErrSaltMismatch, true},
		{"unknown codec", corrupt(blob, true, func(b []byte) { b[95] = 9 }), DecodeOptions{}, ErrUnknownCodec, true},
		{"bad dtype", corrupt(blob, true, func(b []byte) { b[94] = 0 }), DecodeOptions{}, ErrMalformed, true},
		{"flags", corrupt(blob, true, func(b []byte) { b[8] = 1 }), DecodeOptions{}, ErrMalformed, true},
		{"offset moved", corrupt(blob, true, func(b []byte) { b[BlobHeaderSize+40] += 64 }), DecodeOptions{}, ErrMalformed, true},
		{"raw length", corrupt(blob, true, func(b []byte) { b[BlobHeaderSize+40+8]-- }), DecodeOptions{}, ErrMalformed, true},
		{"nonzero padding", corrupt(blob, false, func(b []byte) { b[payload0-1] = 1 }), DecodeOptions{}, ErrMalformed, true},
		{"size smaller than header", corrupt(blob, true, func(b []byte) { binary.LittleEndian.PutUint64(b[72:], 100) }), DecodeOptions{}, ErrMalformed, true},
		{"layer range", blob, DecodeOptions{Layers: LayerRange{2, 5}}, ErrLayerRange, true},
	}
	sentinels := []error{ErrNotBlob, ErrTruncated, ErrOversized, ErrVersion, ErrChecksum, ErrModelMismatch, ErrSaltMismatch, ErrMalformed, ErrUnknownCodec, ErrLayerRange}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			berr, serr := decodeBoth(tc.blob, tc.opts)
			check := func(kind string, err error) {
				if !errors.Is(err, tc.want) {
					t.Fatalf("%s: err = %v, want %v", kind, err, tc.want)
				}
				for _, s := range sentinels {
					if s != tc.want && errors.Is(err, s) {
						t.Fatalf("%s: err %v is also %v: errors must be distinct", kind, err, s)
					}
				}
			}
			check("OpenBlob", berr)
			if tc.stream {
				check("StreamReader", serr)
			}
		})
	}
	// Every truncation point fails with ErrTruncated and never panics.
	for n := range len(blob) {
		berr, serr := decodeBoth(blob[:n], DecodeOptions{})
		if !errors.Is(berr, ErrTruncated) || !errors.Is(serr, ErrTruncated) {
			t.Fatalf("cut at %d: %v / %v, want ErrTruncated", n, berr, serr)
		}
	}
}

func fpOf(s ModelSpec) []byte {
	fp := s.Fingerprint()
	return fp[:]
}

// gatedReader serves at most limit bytes and fails past them: a stream
// whose later layers have not arrived yet.
type gatedReader struct {
	r     io.Reader
	limit int
	read  int
}

var errNotYet = errors.New("bytes not arrived yet")

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.read >= g.limit {
		return 0, errNotYet
	}
	p = p[:min(len(p), g.limit-g.read)]
	n, err := g.r.Read(p)
	g.read += n
	return n, err
}

func TestStreamReaderDeliversLayerByLayer(t *testing.T) {
	spec := tinySpec(BF16)
	c := testChunk(t, spec, 20, 0, 3)
	blob, _ := AppendBlob(nil, c, nil)
	h, err := ParseHeader(blob, DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedReader{r: bytes.NewReader(blob), limit: int(h.Table[0].Offset + h.Table[0].Length)}
	sr, err := NewStreamReader(g, DecodeOptions{Model: &spec})
	if err != nil {
		t.Fatal(err)
	}
	l0, err := sr.Layer(t.Context(), 0)
	if err != nil {
		t.Fatalf("layer 0 needs only its own bytes: %v", err)
	}
	if !bytes.Equal(l0, c.Layers[0]) {
		t.Fatal("layer 0 differs")
	}
	g.limit = len(blob)
	l2, err := sr.Layer(t.Context(), 2)
	if err != nil || !bytes.Equal(l2, c.Layers[2]) {
		t.Fatalf("layer 2: %v", err)
	}
	// Earlier layers stay available.
	if l1, err := sr.Layer(t.Context(), 1); err != nil || !bytes.Equal(l1, c.Layers[1]) {
		t.Fatalf("layer 1 after 2: %v", err)
	}
	if err := sr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sr.Layer(t.Context(), 0); err == nil {
		t.Fatal("Layer after Close succeeded")
	}
	// A failure is sticky and reported.
	g2 := &gatedReader{r: bytes.NewReader(blob), limit: int(h.Table[1].Offset + 5)}
	sr2, _ := NewStreamReader(g2, DecodeOptions{})
	if _, err := sr2.Layer(t.Context(), 1); !errors.Is(err, ErrTruncated) || !errors.Is(err, errNotYet) {
		t.Fatalf("stalled stream: %v", err)
	}
	if _, err := sr2.Layer(t.Context(), 0); err != nil {
		t.Fatalf("layer 0 arrived before the failure: %v", err)
	}
}

func TestReadersLayerRangeAndRelease(t *testing.T) {
	spec := tinySpec(F32)
	c := testChunk(t, spec, 5, 0, 4)
	blob, _ := AppendBlob(nil, c, nil)
	released := 0
	opts := DecodeOptions{Layers: LayerRange{1, 2}, Release: func() error { released++; return nil }, Buffer: make([]byte, 1<<12)}
	for _, open := range []func() (ChunkReader, error){
		func() (ChunkReader, error) { return OpenBlob(blob, opts) },
		func() (ChunkReader, error) { return NewStreamReader(bytes.NewReader(blob), opts) },
	} {
		r, err := open()
		if err != nil {
			t.Fatal(err)
		}
		if r.Available() != (LayerRange{1, 2}) {
			t.Fatalf("Available = %v", r.Available())
		}
		if _, err := r.Layer(t.Context(), 0); !errors.Is(err, ErrLayerRange) {
			t.Fatalf("layer 0 outside the range: %v", err)
		}
		l1, err := r.Layer(t.Context(), 1)
		if err != nil || !bytes.Equal(l1, c.Layers[1]) {
			t.Fatalf("layer 1: %v", err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		_ = r.Close()
	}
	if released != 2 {
		t.Fatalf("Release called %d times, want once per reader", released)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	sr, _ := NewStreamReader(bytes.NewReader(blob), DecodeOptions{})
	if _, err := sr.Layer(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

// xorCodec is a test codec with a non-identity encoding, to exercise the
// codec path of the blob.
type xorCodec struct{}

func (xorCodec) ID() CodecID  { return 200 }
func (xorCodec) Name() string { return "xor" }
func (xorCodec) EncodeLayer(dst []byte, li LayerInfo, kv []byte) ([]byte, error) {
	dst = append(dst, byte(li.Index))
	for _, b := range kv {
		dst = append(dst, b^0x5a)
	}
	return dst, nil
}
func (xorCodec) DecodeLayer(dst []byte, li LayerInfo, enc []byte) ([]byte, error) {
	if len(enc) != li.Bytes()+1 || int(enc[0]) != li.Index {
		return nil, fmt.Errorf("xor: %d bytes: %w", len(enc), ErrMalformed)
	}
	out := dst[:0]
	for _, b := range enc[1:] {
		out = append(out, b^0x5a)
	}
	return out, nil
}

func TestCodecRegistryAndNonRawBlob(t *testing.T) {
	codecs, err := NewCodecs(xorCodec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewCodecs(xorCodec{}, xorCodec{}); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("duplicate id: %v", err)
	}
	if c, err := codecs.ByName("xor"); err != nil || c.ID() != 200 {
		t.Fatalf("ByName: %v %v", c, err)
	}
	if _, err := codecs.Lookup(CodecFP8); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("Lookup(fp8) without the codec: %v", err)
	}
	spec := tinySpec(F16)
	c := testChunk(t, spec, 9, 3, 6)
	blob, err := AppendBlob(nil, c, xorCodec{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := EncodeChunk(&buf, c, xorCodec{}); err != nil || !bytes.Equal(buf.Bytes(), blob) {
		t.Fatalf("EncodeChunk differs from AppendBlob: %v", err)
	}
	if _, err := OpenBlob(blob, DecodeOptions{}); !errors.Is(err, ErrUnknownCodec) {
		t.Fatalf("default registry accepted codec 200: %v", err)
	}
	got, err := DecodeChunk(blob, DecodeOptions{Codecs: codecs})
	if err != nil {
		t.Fatal(err)
	}
	chunksEqual(t, got, c)
	got, err = ReadChunk(t.Context(), bytes.NewReader(blob), DecodeOptions{Codecs: codecs})
	if err != nil {
		t.Fatal(err)
	}
	chunksEqual(t, got, c)
}

func TestChunkValidation(t *testing.T) {
	spec := tinySpec(F16)
	c := testChunk(t, spec, 4, 0, 1)
	bad := *c
	bad.Layers = bad.Layers[:2]
	if _, err := AppendBlob(nil, &bad, nil); !errors.Is(err, ErrShape) {
		t.Fatalf("missing layer: %v", err)
	}
	bad = *c
	bad.Tokens = nil
	if err := bad.Validate(); !errors.Is(err, ErrShape) {
		t.Fatalf("no tokens: %v", err)
	}
	bad = *c
	bad.Scales = make([]Scales, 3)
	if _, err := AppendBlob(nil, &bad, nil); !errors.Is(err, ErrShape) {
		t.Fatalf("scales on f16: %v", err)
	}
	kv, _ := NewKV(spec.Shape(), 4)
	if _, err := ChunkFromKV(kv, 2, ChunkInfo{Tokens: make([]matcher.Token, 3)}); !errors.Is(err, ErrShape) {
		t.Fatalf("range past the kv: %v", err)
	}
}

func blobSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for i, dt := range []DType{F32, F16, BF16, FP8E4M3} {
		spec := tinySpec(dt)
		spec.Layers = 1 + i%2
		c := testChunk(t, spec, 1+i, i, uint64(i))
		b, err := AppendBlob(nil, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	return append(seeds, []byte("KVLC"), []byte("KVLC\x01\x00\x80\x00"), nil)
}

func FuzzDecodeBlob(f *testing.F) {
	for _, s := range blobSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := DecodeOptions{MaxTokens: 1 << 12, MaxBytes: 1 << 22}
		c, err := DecodeChunk(data, opts)
		if err != nil {
			if c != nil {
				t.Fatalf("error %v with a chunk", err)
			}
		} else {
			// A blob that decodes is canonical: encoding it again gives the
			// same bytes.
			again, err := AppendBlob(nil, c, nil)
			if err != nil {
				t.Fatalf("decoded chunk does not encode: %v", err)
			}
			if !bytes.Equal(again, data) {
				t.Fatalf("re-encoding differs from the input")
			}
		}
		// The stream reader agrees on the outcome (it cannot see trailing
		// bytes, so only compare when the blob decoded or was not oversized).
		sc, serr := ReadChunk(context.Background(), bytes.NewReader(data), opts)
		if (serr == nil) != (err == nil) && !errors.Is(err, ErrOversized) {
			t.Fatalf("OpenBlob: %v; StreamReader: %v", err, serr)
		}
		if serr != nil && sc != nil {
			t.Fatalf("stream error %v with a chunk", serr)
		}
	})
}

func TestFetchReader(t *testing.T) {
	spec := tinySpec(BF16)
	c := testChunk(t, spec, 12, 4, 7)
	blob, _ := AppendBlob(nil, c, nil)
	h, err := ParseHeader(blob[:metaSize(12, 3)], DecodeOptions{Model: &spec})
	if err != nil {
		t.Fatal(err)
	}
	// Store the header and each layer apart, as a per-layer tier does.
	layers := map[int][]byte{}
	for l, e := range h.Table {
		layers[l] = append([]byte(nil), blob[e.Offset:e.Offset+e.Length]...)
	}
	fetches := 0
	fetch := func(_ context.Context, l int) ([]byte, error) { fetches++; return layers[l], nil }
	r, err := NewFetchReader(h, fetch, DecodeOptions{Model: &spec})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		for l := range 3 {
			got, err := r.Layer(t.Context(), l)
			if err != nil || !bytes.Equal(got, c.Layers[l]) {
				t.Fatalf("layer %d: %v", l, err)
			}
		}
	}
	if fetches != 3 {
		t.Fatalf("%d fetches, want one per layer", fetches)
	}
	layers[1][3] ^= 1
	r2, _ := NewFetchReader(h, fetch, DecodeOptions{})
	if _, err := r2.Layer(t.Context(), 1); !errors.Is(err, ErrChecksum) {
		t.Fatalf("corrupted layer: %v", err)
	}
	layers[2] = layers[2][:10]
	if _, err := r2.Layer(t.Context(), 2); !errors.Is(err, ErrTruncated) {
		t.Fatalf("short layer: %v", err)
	}
	other := spec
	other.WeightsID = "x"
	if _, err := NewFetchReader(h, fetch, DecodeOptions{Model: &other}); !errors.Is(err, ErrModelMismatch) {
		t.Fatalf("other model: %v", err)
	}
	kv, _ := NewKV(spec.Shape(), 2)
	vals := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if err := kv.PutFloat32(1, true, 1, vals); err != nil {
		t.Fatal(err)
	}
	back := make([]float32, 16)
	if err := kv.Float32(1, true, 1, back); err != nil || fmt.Sprint(back) != fmt.Sprint(vals) {
		t.Fatalf("row round trip: %v %v", back, err)
	}
	if err := kv.PutFloat32(3, true, 0, vals); !errors.Is(err, ErrShape) {
		t.Fatalf("layer out of range: %v", err)
	}
}

func TestBlobReaderConcurrentLayers(t *testing.T) {
	spec := tinySpec(FP8E4M3)
	kv, _ := NewKV(spec.Shape(), 8) // scales left unset: they mean 1
	fillKV(kv, 3)
	c, err := ChunkFromKV(kv, 0, ChunkInfo{Key: matcher.ChunkKey{7}, Model: spec.Fingerprint(), Tokens: make([]matcher.Token, 8)})
	if err != nil {
		t.Fatal(err)
	}
	if c.Scales[1] != (Scales{K: 1, V: 1}) {
		t.Fatalf("unset scales became %v, want 1", c.Scales[1])
	}
	blob, err := AppendBlob(nil, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	br, err := OpenBlob(blob, DecodeOptions{Model: &spec})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3*spec.Layers)
	var wg sync.WaitGroup
	for range 3 {
		for l := range spec.Layers {
			wg.Go(func() {
				got, err := br.Layer(t.Context(), l)
				if err == nil && !bytes.Equal(got, c.Layers[l]) {
					err = fmt.Errorf("layer %d differs", l)
				}
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
