package engine

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
)

func readModelFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Stories260K(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCheckpointStories260K(t *testing.T) {
	b := readModelFile(t, "stories260K.bin")
	m, err := ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Dim: 64, HiddenDim: 172, Layers: 5, Heads: 8, KVHeads: 4, VocabSize: 512, SeqLen: 512, SharedClassifier: true}
	if m.Config != want {
		t.Fatalf("config %+v, want %+v", m.Config, want)
	}
	if m.Config.HeadSize() != 8 || m.Config.KVDim() != 32 || m.Config.KVMul() != 2 {
		t.Fatalf("derived sizes head %d kv %d mul %d", m.Config.HeadSize(), m.Config.KVDim(), m.Config.KVMul())
	}
	if &m.Weights.WCls[0] != &m.Weights.TokenEmbedding[0] {
		t.Fatal("shared classifier does not alias the embedding")
	}
	out, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out, b) {
		t.Fatal("re-encoded checkpoint differs from the file")
	}
}

// tinyCheckpoint builds a small valid checkpoint with deterministic
// weights; shared selects the classifier kind.
func tinyCheckpoint(shared bool) []byte {
	return tinyCheckpointConfig(Config{Dim: 8, HiddenDim: 12, Layers: 2, Heads: 4, KVHeads: 2, VocabSize: 260, SeqLen: 16, SharedClassifier: shared})
}

// tinyCheckpointConfig builds a valid checkpoint of config c.
func tinyCheckpointConfig(c Config) []byte {
	m := &Model{Config: c}
	r := rand.New(rand.NewPCG(1, 2))
	for _, tn := range c.tensors() {
		w := make([]float32, tn.n)
		for i := range w {
			w[i] = float32(r.NormFloat64() * 0.3)
		}
		*tn.field(&m.Weights) = w
	}
	if c.SharedClassifier {
		m.Weights.WCls = m.Weights.TokenEmbedding
	}
	b, err := m.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseCheckpointUnsharedClassifier(t *testing.T) {
	b := tinyCheckpoint(false)
	if v := int32(binary.LittleEndian.Uint32(b[20:])); v != -260 {
		t.Fatalf("unshared checkpoint stores vocab %d, want -260", v)
	}
	m, err := ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.SharedClassifier || m.Config.VocabSize != 260 {
		t.Fatalf("config %+v", m.Config)
	}
	if &m.Weights.WCls[0] == &m.Weights.TokenEmbedding[0] || len(m.Weights.WCls) != 260*8 {
		t.Fatal("unshared classifier not read from the end of the file")
	}
	e, err := New(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.NewState().Forward([]Token{1, 5, 7}); err != nil {
		t.Fatal(err)
	}
}

func TestParseCheckpointErrors(t *testing.T) {
	good := tinyCheckpoint(true)
	setHeader := func(i int, v int32) []byte {
		b := slices.Clone(good)
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
		return b
	}
	nan := slices.Clone(good)
	binary.LittleEndian.PutUint32(nan[HeaderSize+40:], math.Float32bits(float32(math.NaN())))
	for _, tc := range []struct {
		name string
		b    []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "header needs 28 bytes"},
		{"short header", good[:20], ErrTruncated, "file has 20"},
		{"truncated weights", good[:len(good)-4], ErrTruncated, "needs"},
		{"trailing", append(slices.Clone(good), 0, 0, 0, 0), ErrInconsistent, "trailing"},
		{"zero dim", setHeader(0, 0), ErrBadHeader, "dim = 0"},
		{"negative layers", setHeader(2, -3), ErrBadHeader, "n_layers = -3"},
		{"huge vocab", setHeader(5, math.MaxInt32), ErrBadHeader, "vocab_size"},
		{"min vocab", setHeader(5, math.MinInt32), ErrBadHeader, "vocab_size"},
		{"heads do not divide", setHeader(3, 3), ErrBadHeader, "multiple of n_heads"},
		{"kv heads do not divide", setHeader(4, 3), ErrBadHeader, "n_kv_heads 3"},
		{"odd head size", setHeader(3, 8), ErrBadHeader, "odd"},
		{"nan weight", nan, ErrInconsistent, "token_embedding_table element 10 (offset 68)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseCheckpoint(tc.b)
			if !errors.Is(err, tc.want) || m != nil {
				t.Fatalf("got %v, %v; want nil, %v", m, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestParseTokenizerStories260K(t *testing.T) {
	b := readModelFile(t, "tok512.bin")
	tok, err := ParseTokenizer(b, 512)
	if err != nil {
		t.Fatal(err)
	}
	if tok.MaxTokenLength != 7 || tok.VocabSize() != 512 {
		t.Fatalf("max len %d, vocab %d", tok.MaxTokenLength, tok.VocabSize())
	}
	if tok.Pieces[TokenBOS] != "\n<s>\n" || tok.Pieces[TokenEOS] != "\n</s>\n" || tok.Pieces[3] != "<0x00>" {
		t.Fatalf("special pieces %q %q %q", tok.Pieces[1], tok.Pieces[2], tok.Pieces[3])
	}
	out, err := tok.MarshalBinary()
	if err != nil || !slices.Equal(out, b) {
		t.Fatalf("re-encoded tokenizer differs (err %v)", err)
	}
	if t2, err := ParseTokenizer(b, 0); err != nil || t2.VocabSize() != 512 {
		t.Fatalf("parse to end of file: %v", err)
	}
}

func TestParseTokenizerErrors(t *testing.T) {
	good := readModelFile(t, "tok512.bin")
	patch := func(off int, v uint32) []byte {
		b := slices.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	// piece 3 (<0x00>) starts after ids 0..2: 4 + (8+5) + (8+5) + (8+6)
	piece3 := 4 + 13 + 13 + 14
	badByte := slices.Clone(good)
	copy(badByte[piece3+8:], "<0x0G>")
	for _, tc := range []struct {
		name  string
		b     []byte
		vocab int
		want  error
		msg   string
	}{
		{"empty", nil, 512, ErrTruncated, "max_token_length"},
		{"zero max len", patch(0, 0), 512, ErrInconsistent, "max_token_length = 0"},
		{"truncated piece", good[:len(good)-1], 512, ErrTruncated, "piece 511"},
		{"truncated score", good[:piece3+3], 512, ErrTruncated, "piece 3 at offset 44"},
		{"too long piece", patch(piece3+4, 9), 512, ErrInconsistent, "length 9"},
		{"negative length", patch(piece3+4, 0xFFFFFFFF), 512, ErrInconsistent, "length -1"},
		{"nan score", patch(piece3, 0x7FC00000), 512, ErrInconsistent, "NaN"},
		{"vocab larger than file", good, 513, ErrTruncated, "piece 512"},
		{"vocab smaller than file", good, 511, ErrInconsistent, "trailing"},
		{"vocab too small for bytes", good[:piece3], 3, ErrInconsistent, "at least 259"},
		{"bad byte piece", badByte, 512, ErrInconsistent, `piece 3 is "<0x0G>"`},
		{"negative vocab", good, -1, ErrBadInput, "vocab size -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := ParseTokenizer(tc.b, tc.vocab)
			if !errors.Is(err, tc.want) || tok != nil {
				t.Fatalf("got %v; want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := Open(dir); !errors.Is(err, ErrBadInput) {
		t.Fatalf("empty dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.bin"), tinyCheckpoint(true)[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.bin"), readModelFile(t, "tok512.bin"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(dir); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "model.bin") {
		t.Fatalf("truncated checkpoint: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.bin"), tinyCheckpoint(true), 0o644); err != nil {
		t.Fatal(err)
	}
	// vocab 260 in the checkpoint, 512 pieces in the tokenizer
	if _, _, err := Open(dir); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("tokenizer larger than the vocabulary: %v", err)
	}
}

// CheckpointPath names the file Open loads as the checkpoint, and refuses
// a directory Open refuses.
func TestCheckpointPath(t *testing.T) {
	dir := testutil.Stories260K(t)
	got, err := CheckpointPath(dir)
	if err != nil || got != filepath.Join(dir, "stories260K.bin") {
		t.Fatalf("checkpoint of %s = %q, %v; want stories260K.bin", dir, got, err)
	}
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "tok512.bin"), readModelFile(t, "tok512.bin"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := CheckpointPath(empty); !errors.Is(err, ErrBadInput) || !errors.Is(err, fs.ErrNotExist) || got != "" {
		t.Fatalf("dir with a tokenizer alone: %q, %v", got, err)
	}
	if _, _, err := Open(empty); !errors.Is(err, ErrBadInput) || !strings.HasPrefix(err.Error(), "open model dir "+empty+": want one checkpoint") {
		t.Fatalf("open dir with a tokenizer alone: %v", err)
	}
}

func TestFindDefaultModelDir(t *testing.T) {
	want := testutil.Stories260K(t)
	got, err := FindDefaultModelDir(".")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("found %s, want %s", got, want)
	}
	// A tree of our own: the model dir is found from two levels below the
	// directory that holds it, and not from a sibling tree.
	root := t.TempDir()
	model := filepath.Join(root, "ws", DefaultModelSubdir)
	deep := filepath.Join(root, "ws", "checkout", "pkg")
	other := filepath.Join(root, "elsewhere")
	for _, d := range []string{model, deep, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := FindDefaultModelDir(deep); err != nil || got != model {
		t.Fatalf("from %s: %q, %v; want %s", deep, got, err, model)
	}
	// From the sibling the search climbs past root; what it finds there
	// depends on the machine (CI may keep a shared/ beside /tmp), so the
	// answer must be the first ancestor of root holding the subdir, or none.
	wantOther, wantErr := "", true
	for d := root; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, DefaultModelSubdir)); err == nil && st.IsDir() {
			wantOther, wantErr = filepath.Join(d, DefaultModelSubdir), false
			break
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	got, err = FindDefaultModelDir(other)
	if wantErr && !errors.Is(err, os.ErrNotExist) || !wantErr && (err != nil || got != wantOther) {
		t.Fatalf("from %s: %q, %v; want %q (error expected: %v)", other, got, err, wantOther, wantErr)
	}
}

// TestSpecMatchesKVCache: the engine's ModelSpec is kvcache's for the same
// file (LoadLlama2C) and for the stories260K preset, fingerprint included.
func TestSpecMatchesKVCache(t *testing.T) {
	path := filepath.Join(testutil.Stories260K(t), "stories260K.bin")
	m, err := LoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := kvcache.LoadLlama2C(path, kvcache.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	preset, err := kvcache.Preset("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]kvcache.ModelSpec{"LoadLlama2C": loaded, "preset": preset} {
		if s.Fingerprint() != m.Spec.Fingerprint() {
			t.Errorf("fingerprint differs from kvcache's %s: %+v vs %+v", name, s, m.Spec)
		}
	}
	if m.Spec.WeightsID != kvcache.Stories260KWeightsID || m.Spec.Name != "stories260K" {
		t.Errorf("spec %+v", m.Spec)
	}
	if f16 := m.SpecFor(kvcache.F16); f16.Fingerprint() == m.Spec.Fingerprint() || f16.DType != kvcache.F16 {
		t.Error("SpecFor(f16) has the f32 fingerprint")
	}
}
