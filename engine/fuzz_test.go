package engine

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// seedCorpora are the committed seeds of each fuzz target, built from the
// real files and small synthetic ones; TestFuzzSeeds keeps them current.
func seedCorpora(t *testing.T) map[string][][]byte {
	tok := readModelFile(t, "tok512.bin")
	ck := tinyCheckpointConfig(Config{Dim: 4, HiddenDim: 6, Layers: 1, Heads: 2, KVHeads: 1, VocabSize: 6, SeqLen: 4, SharedClassifier: true})
	unshared := tinyCheckpointConfig(Config{Dim: 4, HiddenDim: 3, Layers: 2, Heads: 2, KVHeads: 2, VocabSize: 5, SeqLen: 3})
	return map[string][][]byte{
		"FuzzParseCheckpoint": {ck, unshared, ck[:HeaderSize], ck[:len(ck)-7], {}},
		"FuzzParseTokenizer":  {tok, tok[:200], tok[:4]},
		"FuzzEncode":          {[]byte("Once upon a time"), []byte("héllo ™\x00\xff"), []byte("")},
	}
}

func TestFuzzSeeds(t *testing.T) {
	for name, seeds := range seedCorpora(t) {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, s := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed-%d", i))
			want := []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n")
			if *updateSeeds {
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
				t.Errorf("seed %s is missing or stale (%v): run go test ./engine -run TestFuzzSeeds -update-seeds", path, err)
			}
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseCheckpoint(b)
		if err != nil {
			if m != nil {
				t.Fatal("error with a model")
			}
			if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrBadHeader) && !errors.Is(err, ErrInconsistent) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		out, err := m.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("parsed checkpoint does not re-encode to its bytes (%v)", err)
		}
		e, err := New(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.NewState().Forward([]Token{1}); err != nil && !errors.Is(err, ErrBadToken) {
			t.Fatal(err)
		}
	})
}

func FuzzParseTokenizer(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := ParseTokenizer(b, 0)
		if err != nil {
			if tok != nil {
				t.Fatal("error with a tokenizer")
			}
			return
		}
		out, err := tok.MarshalBinary()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("parsed tokenizer does not re-encode to its bytes (%v)", err)
		}
		text := "Once upon a time, ™ \xff"
		ids := tok.Encode(text, true, true)
		if !slices.Equal(ids, encodeNaive(tok, text, true, true)) {
			t.Fatal("heap merge differs from run.c's loop")
		}
		for _, id := range ids {
			if int(id) >= tok.VocabSize() {
				t.Fatalf("encode produced id %d of %d", id, tok.VocabSize())
			}
		}
	})
}

func FuzzEncode(f *testing.F) {
	tok, err := ParseTokenizer(readModelFile(f, "tok512.bin"), 512)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		text := string(b)
		got := tok.Encode(text, true, false)
		if want := encodeNaive(tok, text, true, false); !slices.Equal(got, want) {
			t.Fatalf("Encode(%q) = %v, run.c's loop gives %v", text, got, want)
		}
		dec, err := tok.Decode(TokenBOS, got[1:])
		if err != nil || dec != text {
			t.Fatalf("Decode(Encode(%q)) = %q, %v", text, dec, err)
		}
	})
}
