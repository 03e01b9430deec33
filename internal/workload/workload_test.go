package workload

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/kvloom/kvloom/matcher"
)

// docsCorpus loads the Go documentation corpus once per test binary.
var docsCorpus = sync.OnceValues(func() (*Corpus, error) {
	return LoadCorpus(context.Background(), CorpusOptions{Source: SourceDocs})
})

func mustDocs(t *testing.T) *Corpus {
	t.Helper()
	c, err := docsCorpus()
	if err != nil {
		t.Fatalf("load the Go documentation corpus (needs the Go distribution: GOROOT or go on PATH): %v", err)
	}
	return c
}

func mustTokenizer(t *testing.T) *Tokenizer {
	t.Helper()
	tok, err := NewTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenizerKnownEncodings(t *testing.T) {
	tok := mustTokenizer(t)
	// Published cl100k_base encodings (tiktoken's README and its tests).
	for text, want := range map[string][]matcher.Token{
		"tiktoken is great!": {83, 1609, 5963, 374, 2294, 0},
		"hello world":        {15339, 1917},
		"Hello world":        {9906, 1917},
	} {
		got, err := tok.Encode(text)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, %v; want %v", text, got, err, want)
		}
	}
}

func TestTokenizerConcurrent(t *testing.T) {
	tok := mustTokenizer(t)
	want, err := tok.Encode(SystemPrompt)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			got, err := tok.Encode(SystemPrompt)
			if err == nil && !slices.Equal(got, want) {
				err = errors.New("concurrent Encode gave different tokens")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestSplitPieces(t *testing.T) {
	text := strings.Repeat("a line of text\n", 30) + "\n" + strings.Repeat("x", 5000) + "\nend\n\n" + "tail"
	for _, size := range []int{16, 100, 1000, 100000} {
		pieces := splitPieces(text, size)
		if strings.Join(pieces, "") != text {
			t.Fatalf("size %d: pieces do not concatenate to the text", size)
		}
		for i, p := range pieces[:len(pieces)-1] {
			if len(p) < size {
				t.Fatalf("size %d: piece %d has %d bytes", size, i, len(p))
			}
		}
	}
	if p := splitPieces("", 10); len(p) != 0 {
		t.Fatalf("empty text: %d pieces", len(p))
	}
}

func TestLoadCorpusDeterministicAndCached(t *testing.T) {
	root, err := GoRoot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := CorpusOptions{Root: root, Source: SourceDocs, MaxBytes: 150_000, CacheDir: dir}
	a, err := LoadCorpus(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.tok"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cache files written (%v)", err)
	}
	// Corrupt one cache file: it must be ignored and rebuilt.
	if err := os.WriteFile(files[0], []byte("KVTK garbage that fails its checksum"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := LoadCorpus(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.CacheDir = ""
	c, err := LoadCorpus(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []*Corpus{b, c} {
		if len(other.Docs) != len(a.Docs) || other.Tokens != a.Tokens {
			t.Fatalf("loads differ: %d docs / %d tokens vs %d / %d", len(other.Docs), other.Tokens, len(a.Docs), a.Tokens)
		}
		for i := range a.Docs {
			if a.Docs[i].Name != other.Docs[i].Name || !slices.Equal(a.Docs[i].Tokens, other.Docs[i].Tokens) {
				t.Fatalf("document %d differs between loads", i)
			}
		}
	}
	for _, d := range a.Docs {
		if len(d.Tokens) < matcher.DefaultMinLen {
			t.Fatalf("document %s has %d tokens, below MinTokens", d.Name, len(d.Tokens))
		}
	}
	if _, err := LoadCorpus(t.Context(), CorpusOptions{Root: t.TempDir()}); !errors.Is(err, ErrNoCorpus) {
		t.Fatalf("empty root: %v, want ErrNoCorpus", err)
	}
}

func TestTokenCacheRoundTrip(t *testing.T) {
	pieces := []string{"ab", "cde", ""}
	toks := [][]matcher.Token{{1, 2}, {3}, {}}
	path := filepath.Join(t.TempDir(), "x.tok")
	if err := writeTokenCache(path, pieces, toks); err != nil {
		t.Fatal(err)
	}
	got, err := readTokenCache(path, pieces)
	if err != nil || len(got) != 3 || !slices.Equal(got[0], toks[0]) || !slices.Equal(got[1], toks[1]) || len(got[2]) != 0 {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if _, err := readTokenCache(path, []string{"ab", "cdX", ""}[:2]); err == nil {
		t.Fatal("cache accepted for a different piece count")
	}
	if _, err := readTokenCache(path, []string{"abc", "de", ""}); err == nil {
		t.Fatal("cache accepted for different piece boundaries")
	}
}

// FuzzDecodeTokenCache: a cache file is outside input (it sits on disk);
// decoding never panics, fails with a nil result, or round-trips.
func FuzzDecodeTokenCache(f *testing.F) {
	path := filepath.Join(f.TempDir(), "seed.tok")
	if err := writeTokenCache(path, []string{"xy", "z"}, [][]matcher.Token{{7, 8, 9}, {1}}); err != nil {
		f.Fatal(err)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, 2)
	f.Add([]byte("KVTK"), 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 64 {
			return
		}
		pieces := make([]string, n)
		for i := range pieces {
			pieces[i] = strings.Repeat("p", i+1)
		}
		toks, err := decodeTokenCache(b, pieces)
		if err != nil {
			if toks != nil {
				t.Fatal("error with a non-nil result")
			}
			return
		}
		p := filepath.Join(t.TempDir(), "rt.tok")
		if err := writeTokenCache(p, pieces, toks); err != nil {
			t.Fatal(err)
		}
		again, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded cache does not re-encode to the same bytes (%v)", err)
		}
	})
}

func TestRAG(t *testing.T) {
	c := mustDocs(t)
	tok := mustTokenizer(t)
	gen := func(seed uint64) []Prompt {
		g, err := NewRAG(c, tok, RAGOptions{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var out []Prompt
		for range 300 {
			p, err := g.Next()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		return out
	}
	a, b, other := gen(7), gen(7), gen(8)
	popularity := map[int]int{}
	differs := false
	for i, p := range a {
		if !slices.Equal(p.Tokens, b[i].Tokens) {
			t.Fatalf("prompt %d differs between two generators with one seed", i)
		}
		if !slices.Equal(p.Tokens, other[i].Tokens) {
			differs = true
		}
		docs, seen := 0, map[int]bool{}
		end := 0
		for _, part := range p.Parts {
			if part.Off != end {
				t.Fatalf("prompt %d: parts are not contiguous", i)
			}
			end = part.Off + part.Len
			if part.Kind == PartDoc {
				docs++
				if seen[part.Doc] {
					t.Fatalf("prompt %d repeats document %d", i, part.Doc)
				}
				seen[part.Doc] = true
				popularity[part.Doc]++
				if !slices.Equal(p.Tokens[part.Off:end], c.Docs[part.Doc].Tokens) {
					t.Fatalf("prompt %d: document part differs from the document", i)
				}
			}
		}
		if end != len(p.Tokens) || docs < 3 || docs > 8 || p.Parts[0].Kind != PartSystem || p.Parts[len(p.Parts)-1].Kind != PartQuestion {
			t.Fatalf("prompt %d: %d docs, parts %+v", i, docs, p.Parts)
		}
	}
	if !differs {
		t.Fatal("different seeds generate the same prompts")
	}
	// Zipf popularity: the most popular document appears in a large share
	// of prompts, far above the uniform 5.5/len(docs).
	top := 0
	for _, n := range popularity {
		top = max(top, n)
	}
	if top < 60 {
		t.Fatalf("most popular document in %d of 300 prompts; Zipf(1.1) should give far more than uniform", top)
	}
	g, err := NewRAG(c, tok, RAGOptions{Seed: 1, TargetTokens: 8000})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Next()
	if err != nil || len(p.Tokens) < 8000 {
		t.Fatalf("TargetTokens 8000: %d tokens, %v", len(p.Tokens), err)
	}
	if _, err := NewRAG(c, tok, RAGOptions{MinDocs: 5, MaxDocs: 2}); err == nil {
		t.Fatal("MinDocs > MaxDocs accepted")
	}
}

func TestChat(t *testing.T) {
	c := mustDocs(t)
	g, err := NewChat(c, mustTokenizer(t), ChatOptions{Seed: 3, Turns: 4})
	if err != nil {
		t.Fatal(err)
	}
	turns, err := g.Next()
	if err != nil || len(turns) != 4 {
		t.Fatalf("Next: %d turns, %v", len(turns), err)
	}
	for i := 1; i < len(turns); i++ {
		prev, cur := turns[i-1].Tokens, turns[i].Tokens
		if len(cur) <= len(prev) || !slices.Equal(cur[:len(prev)], prev) {
			t.Fatalf("turn %d does not extend turn %d", i+1, i)
		}
	}
}

func TestDistinct(t *testing.T) {
	c := mustDocs(t)
	// Make duplicates: copies of documents, and documents embedding
	// another's tail.
	dup := &Corpus{Root: c.Root}
	for i, d := range c.Docs[:60] {
		dup.Docs = append(dup.Docs, d)
		if i%3 == 0 {
			dup.Docs = append(dup.Docs, Doc{Name: d.Name + "-copy", Tokens: d.Tokens})
		}
		if i%5 == 0 && i > 0 {
			prev := c.Docs[i-1].Tokens
			mixed := slices.Concat(d.Tokens[:len(d.Tokens)/2], prev[len(prev)/2:])
			dup.Docs = append(dup.Docs, Doc{Name: d.Name + "-mixed", Tokens: mixed})
		}
	}
	got, err := dup.Distinct(64)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Docs) < 60 {
		t.Fatalf("Distinct kept %d documents of 60 originals", len(got.Docs))
	}
	for _, d := range got.Docs {
		if strings.HasSuffix(d.Name, "-copy") {
			t.Fatalf("kept an exact copy %s", d.Name)
		}
	}
	// No two kept documents share a run of 64 tokens.
	ix, err := matcher.New(matcher.Options{})
	if err != nil {
		t.Fatal(err)
	}
	salt, err := matcher.SharedSalt(ModelFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range got.Docs {
		ms, err := ix.FindAll(salt, d.Tokens)
		if err != nil || len(ms) != 0 {
			t.Fatalf("kept document %s shares %d runs with earlier ones (%v)", d.Name, len(ms), err)
		}
		if _, err := ix.Add(matcher.Entry{Salt: salt, Tokens: d.Tokens}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParsePrompts(t *testing.T) {
	good := "{\"id\":\"a\",\"text\":\"hello\"}\n\n  {\"tokens\":[1,2,3]}  \n{\"id\":\"c\",\"text\":\"x\\ny\"}\n"
	ps, err := ParsePrompts(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	want := []InputPrompt{{ID: "a", Text: "hello"}, {ID: "line 3", Tokens: []matcher.Token{1, 2, 3}}, {ID: "c", Text: "x\ny"}}
	if len(ps) != len(want) {
		t.Fatalf("parsed %d prompts, want %d", len(ps), len(want))
	}
	for i := range want {
		if ps[i].ID != want[i].ID || ps[i].Text != want[i].Text || !slices.Equal(ps[i].Tokens, want[i].Tokens) {
			t.Fatalf("prompt %d = %+v, want %+v", i, ps[i], want[i])
		}
	}
	for name, in := range map[string]string{
		"not json":       "hello\n",
		"unknown field":  "{\"txt\":\"a\"}\n",
		"both":           "{\"text\":\"a\",\"tokens\":[1]}\n",
		"neither":        "{\"id\":\"x\"}\n",
		"empty text":     "{\"text\":\"\"}\n",
		"empty tokens":   "{\"tokens\":[]}\n",
		"negative token": "{\"tokens\":[-1]}\n",
		"huge token":     "{\"tokens\":[4294967296]}\n",
		"two values":     "{\"text\":\"a\"} {\"text\":\"b\"}\n",
		"duplicate id":   "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"a\",\"text\":\"y\"}\n",
		"empty id":       "{\"id\":\"\",\"text\":\"x\"}\n",
	} {
		ps, err := ParsePrompts(strings.NewReader(in))
		if !errors.Is(err, ErrPromptsFile) || ps != nil {
			t.Errorf("%s: ParsePrompts = %v, %v; want nil, ErrPromptsFile", name, ps, err)
		}
		if err != nil && !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: error %q does not name the line", name, err)
		}
	}
}

// FuzzParsePrompts: the prompts file is outside input. Parsing never
// panics; an error comes with a nil result; a success re-formats and
// re-parses to the same prompts.
func FuzzParsePrompts(f *testing.F) {
	f.Add([]byte("{\"id\":\"a\",\"text\":\"hello\"}\n{\"tokens\":[1,2,3]}\n"))
	f.Add([]byte("{\"text\":\"a\",\"tokens\":[1]}"))
	f.Add([]byte("\n\n{\"id\":\"\\u00e9\",\"text\":\"\\n\"}"))
	f.Fuzz(func(t *testing.T, in []byte) {
		ps, err := ParsePrompts(bytes.NewReader(in))
		if err != nil {
			if ps != nil {
				t.Fatal("error with a non-nil result")
			}
			return
		}
		var buf bytes.Buffer
		if err := FormatPrompts(&buf, ps); err != nil {
			t.Fatal(err)
		}
		again, err := ParsePrompts(&buf)
		if err != nil {
			t.Fatalf("re-parse of formatted prompts: %v", err)
		}
		if len(again) != len(ps) {
			t.Fatalf("round trip: %d prompts, want %d", len(again), len(ps))
		}
		for i := range ps {
			if (ps[i].Text == "") == (ps[i].Tokens == nil) {
				t.Fatalf("prompt %d has both or neither of text and tokens", i)
			}
			if again[i].Text != ps[i].Text || !slices.Equal(again[i].Tokens, ps[i].Tokens) {
				t.Fatalf("prompt %d changed in the round trip", i)
			}
		}
	})
}

// TestRunMatchNamesPartialPrefix: a prompt that holds only the first blocks
// of a prefix chain still names the chain its prefix match came from.
func TestRunMatchNamesPartialPrefix(t *testing.T) {
	tok := mustTokenizer(t)
	sys, err := tok.Encode(SystemPrompt)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	docs := filepath.Join(dir, "docs")
	if err := os.MkdirAll(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(docs, "empty.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	system := filepath.Join(dir, "system.txt")
	if err := os.WriteFile(system, []byte(SystemPrompt), 0o644); err != nil {
		t.Fatal(err)
	}
	// Two blocks and a bit of the chain, then tokens it does not hold.
	prompt := slices.Concat(sys[:40], []matcher.Token{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7})
	prompts := filepath.Join(dir, "prompts.jsonl")
	var pf bytes.Buffer
	if err := FormatPrompts(&pf, []InputPrompt{{ID: "p", Tokens: prompt}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prompts, pf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = RunMatch(t.Context(), &out, MatchOptions{Docs: docs, Prompts: prompts, Prefixes: []string{system}, Matcher: matcher.Options{BlockSize: 16}, Tokenizer: tok})
	if err != nil {
		t.Fatalf("RunMatch: %v", err)
	}
	want := "  * [0,32) prefix system.txt [0,32)\n"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output lacks %q:\n%s", want, out.String())
	}
}
