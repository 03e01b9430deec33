package matcher

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strconv"
	"testing"
)

// vectors mirrors testdata/vectors.json, which testdata/vectors.py computes
// with the reference xxHash C library, independently of this package.
type vectors struct {
	ModelFingerprint string `json:"model_fingerprint"`
	Salts            map[string]struct {
		Bytes string `json:"bytes"`
		ID    string `json:"id"`
	} `json:"salts"`
	ChunkKeys []struct {
		Salt string `json:"salt"`
		N    int    `json:"n"`
		Key  string `json:"key"`
	} `json:"chunk_keys"`
	PrefixKeys []struct {
		Salt  string   `json:"salt"`
		N     int      `json:"n"`
		Block int      `json:"block"`
		Keys  []string `json:"keys"`
	} `json:"prefix_keys"`
	Dynamo struct {
		BlockSize   int      `json:"block_size"`
		N           int      `json:"n"`
		Blocks      []string `json:"blocks"`
		Sequence    []string `json:"sequence"`
		Blocks0To15 string   `json:"blocks_0_to_15"`
	} `json:"dynamo"`
	Fingerprints []struct {
		N  int    `json:"n"`
		FP string `json:"fp"`
	} `json:"fingerprints"`
	Anchors []struct {
		K       int      `json:"k"`
		W       int      `json:"w"`
		Input   string   `json:"input"`
		Anchors [][2]any `json:"anchors"`
	} `json:"anchors"`
	Periodic []Token `json:"periodic"`
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatalf("read test vectors (regenerate with python3 matcher/testdata/vectors.py): %v", err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("parse testdata/vectors.json: %v", err)
	}
	return &v
}

// vectorTokens is the vectors' token rule.
func vectorTokens(n int) []Token {
	out := make([]Token, n)
	for i := range out {
		out[i] = Token((uint64(i)*2654435761 + 12345) % 100277)
	}
	return out
}

func u64(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("vector %q: %v", s, err)
	}
	return v
}

func TestHashVectors(t *testing.T) {
	v := loadVectors(t)
	model, err := hex.DecodeString(v.ModelFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	salts := map[string]Salt{}
	for name, want := range v.Salts {
		var s Salt
		if name == "shared" {
			s, err = SharedSalt(model)
		} else {
			s, err = NewSalt(model, name)
		}
		if err != nil {
			t.Fatal(err)
		}
		b := s.Bytes()
		if hex.EncodeToString(b[:]) != want.Bytes || s.ID() != u64(t, want.ID) {
			t.Errorf("salt %s: bytes %x id %d, want %s %s", name, b, s.ID(), want.Bytes, want.ID)
		}
		salts[name] = s
	}
	toks := vectorTokens(1000)
	for _, c := range v.ChunkKeys {
		if got := ChunkKeyOf(salts[c.Salt], toks[:c.N]).String(); got != c.Key {
			t.Errorf("ChunkKeyOf(%s, %d tokens) = %s, want %s", c.Salt, c.N, got, c.Key)
		}
	}
	for _, p := range v.PrefixKeys {
		keys, err := PrefixKeys(salts[p.Salt], toks[:p.N], p.Block, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, k := range keys {
			got = append(got, k.String())
		}
		if !slices.Equal(got, p.Keys) {
			t.Errorf("PrefixKeys(%s, %d tokens, block %d) differ from the vectors (%d vs %d keys)", p.Salt, p.N, p.Block, len(got), len(p.Keys))
		}
	}
	d := v.Dynamo
	blocks := DynamoBlockHashes(toks[:d.N], d.BlockSize, nil)
	seqs := DynamoSequenceHashes(blocks, nil)
	if len(blocks) != len(d.Blocks) || len(seqs) != len(d.Sequence) {
		t.Fatalf("Dynamo: %d blocks, %d sequence hashes; vectors have %d, %d", len(blocks), len(seqs), len(d.Blocks), len(d.Sequence))
	}
	for i := range blocks {
		if blocks[i] != u64(t, d.Blocks[i]) || seqs[i] != u64(t, d.Sequence[i]) {
			t.Errorf("Dynamo block %d: %d / %d, want %s / %s", i, blocks[i], seqs[i], d.Blocks[i], d.Sequence[i])
		}
	}
	zeroTo15 := make([]Token, 16)
	for i := range zeroTo15 {
		zeroTo15[i] = Token(i)
	}
	if got := DynamoBlockHashes(zeroTo15, DynamoBlockSize, nil); len(got) != 1 || got[0] != u64(t, d.Blocks0To15) {
		t.Errorf("Dynamo block hash of tokens 0..15 = %v, want %s", got, d.Blocks0To15)
	}
	for _, f := range v.Fingerprints {
		if got := Fingerprint(toks[:f.N]); got != u64(t, f.FP) {
			t.Errorf("Fingerprint of %d tokens = %d, want %s", f.N, got, f.FP)
		}
	}
	inputs := map[string][]Token{"tokens(600)": toks[:600], "tokens(200)": toks[:200], "periodic": v.Periodic}
	for _, a := range v.Anchors {
		in, ok := inputs[a.Input]
		if !ok {
			t.Fatalf("unknown anchor vector input %q", a.Input)
		}
		got := AnchorParams{K: a.K, W: a.W}.Anchors(in, nil)
		var want []Anchor
		for _, pair := range a.Anchors {
			want = append(want, Anchor{Off: int(pair[0].(float64)), FP: u64(t, pair[1].(string))})
		}
		if !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("Anchors K=%d W=%d of %s: %d anchors, vectors %d; first difference at %d", a.K, a.W, a.Input, len(got), len(want), firstDiff(got, want))
		}
	}
}

func TestKeyDomainsAndSalts(t *testing.T) {
	a, b := testSalt(t, "a"), testSalt(t, "b")
	toks := vectorTokens(256)
	pk, err := PrefixKeys(a, toks, 256, nil)
	if err != nil {
		t.Fatal(err)
	}
	ck := ChunkKeyOf(a, toks)
	if pk[0] == ck {
		t.Fatal("a one-block prefix key equals the chunk key of the same tokens")
	}
	if ChunkKeyOf(b, toks) == ck || ChunkKeyOf(a.Shared(), toks) == ck {
		t.Fatal("chunk keys of different salts collide")
	}
	// Chaining: the second block's key depends on the first block.
	other := slices.Clone(toks)
	other[0]++
	x, _ := PrefixKeys(a, slices.Concat(toks[:16], toks[:16]), 16, nil)
	y, _ := PrefixKeys(a, slices.Concat(other[:16], toks[:16]), 16, nil)
	if x[1] == y[1] {
		t.Fatal("prefix key of block 1 does not depend on block 0")
	}
	// Position independence: a chunk's key is the same wherever it sits.
	if ChunkKeyOf(a, toks[10:80]) != ChunkKeyOf(a, slices.Clone(toks[10:80])) {
		t.Fatal("chunk key depends on the slice, not the tokens")
	}
	for _, bs := range []int{0, 15, 1025} {
		if _, err := PrefixKeys(a, toks, bs, nil); !errors.Is(err, ErrBlockSize) {
			t.Errorf("PrefixKeys with block size %d: %v, want ErrBlockSize", bs, err)
		}
	}
	if keys, _ := PrefixKeys(a, toks[:255], 16, nil); len(keys) != 15 {
		t.Errorf("255 tokens in blocks of 16 give %d keys, want 15 (full blocks only)", len(keys))
	}
	if k, err := ParseChunkKey(ck.String()); err != nil || k != ck {
		t.Errorf("ParseChunkKey(String()) = %v, %v", k, err)
	}
}

func TestPrefixKeysNoAlloc(t *testing.T) {
	toks := vectorTokens(32 << 10)
	a := testSalt(t, "a")
	dst := make([]ChunkKey, 0, 128)
	allocs := testing.AllocsPerRun(10, func() {
		var err error
		dst, err = PrefixKeys(a, toks, 256, dst[:0])
		if err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("PrefixKeys allocated %v times per call", allocs)
	}
}
