package workload

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kvloom/kvloom/matcher"
	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"
)

// Source selects which text of the Go distribution a corpus holds.
type Source int

const (
	// SourceDocs is prose: doc/*.html, doc/*.md and every package's doc.go
	// under src (about 0.6 MB, 150K tokens).
	SourceDocs Source = iota
	// SourceTree is every source and text file of the distribution under
	// api/, doc/, misc/, src/ and test/ with a known text extension (.go,
	// .s, .c, .h, .txt, .md, .html, .golden, .tmpl), testdata included,
	// skipping anything that is not UTF-8 text (about 115 MB, 45M tokens):
	// the large index of the benchmarks.
	SourceTree
)

// treeExts are the extensions SourceTree reads.
var treeExts = map[string]bool{".go": true, ".s": true, ".c": true, ".h": true, ".txt": true, ".md": true, ".html": true, ".golden": true, ".tmpl": true}

func (s Source) String() string {
	switch s {
	case SourceDocs:
		return "docs"
	case SourceTree:
		return "tree"
	}
	return "source(" + strconv.Itoa(int(s)) + ")"
}

// Doc is one document of a corpus: a piece of a file, split at blank lines.
type Doc struct {
	Name   string // path relative to the corpus root, "#n" for the n-th piece
	Text   string
	Tokens []matcher.Token
}

// Corpus is a tokenized document collection.
type Corpus struct {
	Root   string
	Source Source
	Docs   []Doc
	Files  int
	Bytes  int64
	Tokens int64
	// Elapsed is the time loading took (tokenizing, or reading the cache).
	Elapsed time.Duration
}

// CorpusOptions configure LoadCorpus. Zero values select defaults.
type CorpusOptions struct {
	// Root is the directory holding the text; empty means the Go
	// distribution (GoRoot).
	Root   string
	Source Source
	// MaxBytes stops reading files once this much text was read; zero
	// means no limit.
	MaxBytes int64
	// PieceBytes is the size at which a file is cut into documents, at a
	// blank line (or a newline inside a longer paragraph); zero means 2048.
	PieceBytes int
	// MinTokens drops documents shorter than this; zero means 64 (the
	// matcher's default MinLen: shorter ones cannot be indexed).
	MinTokens int
	// CacheDir, when set, keeps each file's tokens there, keyed by its
	// content, so only changed files are tokenized again.
	CacheDir string
	// Workers tokenizing in parallel; zero means GOMAXPROCS.
	Workers int
	// Tokenizer to use; nil means a new cl100k_base tokenizer.
	Tokenizer *Tokenizer
}

// GoRoot returns the Go distribution's root: $GOROOT if it is a directory,
// else what `go env GOROOT` prints.
func GoRoot(ctx context.Context) (string, error) {
	if r := os.Getenv("GOROOT"); r != "" && isDir(r) {
		return r, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err == nil {
		if r := strings.TrimSpace(string(out)); r != "" && isDir(r) {
			return r, nil
		}
	}
	return "", fmt.Errorf("find the Go distribution (set GOROOT, or put the go command on PATH): go env GOROOT: %v: %w", err, ErrNoCorpus)
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// corpusFiles lists the files of a source under root, in lexical order.
func corpusFiles(root string, src Source) ([]string, error) {
	var files []string
	add := func(rel string) { files = append(files, rel) }
	if src == SourceDocs {
		for _, pat := range []string{"doc/*.html", "doc/*.md"} {
			m, err := filepath.Glob(filepath.Join(root, pat))
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", pat, err)
			}
			for _, f := range m {
				rel, _ := filepath.Rel(root, f)
				add(filepath.ToSlash(rel))
			}
		}
	}
	dirs := []string{"src"}
	if src == SourceTree {
		dirs = []string{"api", "doc", "misc", "src", "test"}
	}
	for _, dir := range dirs {
		if err := walkSource(root, dir, src, add); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func walkSource(root, dir string, src Source, add func(string)) error {
	srcDir := filepath.Join(root, dir)
	if !isDir(srcDir) {
		return nil
	}
	err := filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "testdata" && src != SourceTree {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		ok := false
		switch src {
		case SourceDocs:
			ok = name == "doc.go"
		case SourceTree:
			ok = treeExts[filepath.Ext(name)]
		}
		if ok && d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			add(filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk %s: %w", srcDir, err)
	}
	return nil
}

// splitPieces cuts text into pieces of at least pieceBytes (the last one
// may be shorter): after a blank line, or after any line once a piece has
// grown past 4×pieceBytes without one. The pieces concatenate to text.
func splitPieces(text string, pieceBytes int) []string {
	var pieces []string
	start, pos := 0, 0
	for pos < len(text) {
		end := len(text)
		if nl := strings.IndexByte(text[pos:], '\n'); nl >= 0 {
			end = pos + nl + 1
		}
		blank := strings.TrimSpace(text[pos:end]) == ""
		pos = end
		if size := pos - start; (blank && size >= pieceBytes) || size >= 4*pieceBytes {
			pieces = append(pieces, text[start:pos])
			start = pos
		}
	}
	if start < len(text) {
		pieces = append(pieces, text[start:])
	}
	return pieces
}

// LoadCorpus reads and tokenizes a corpus. The result depends only on the
// files and the options, not on timing or the cache.
func LoadCorpus(ctx context.Context, opts CorpusOptions) (*Corpus, error) {
	start := time.Now()
	if opts.Root == "" {
		r, err := GoRoot(ctx)
		if err != nil {
			return nil, err
		}
		opts.Root = r
	}
	if opts.PieceBytes == 0 {
		opts.PieceBytes = 2048
	}
	if opts.MinTokens == 0 {
		opts.MinTokens = matcher.DefaultMinLen
	}
	if opts.Workers == 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Tokenizer == nil {
		t, err := NewTokenizer()
		if err != nil {
			return nil, err
		}
		opts.Tokenizer = t
	}
	files, err := corpusFiles(opts.Root, opts.Source)
	if err != nil {
		return nil, fmt.Errorf("load %s corpus from %s: %w", opts.Source, opts.Root, err)
	}
	type fileResult struct {
		text   string
		pieces []string
		toks   [][]matcher.Token
	}
	// Read in order up to MaxBytes, then tokenize in parallel.
	results := make([]fileResult, 0, len(files))
	kept := make([]string, 0, len(files))
	var total int64
	for _, rel := range files {
		if opts.MaxBytes > 0 && total >= opts.MaxBytes {
			break
		}
		b, err := os.ReadFile(filepath.Join(opts.Root, filepath.FromSlash(rel)))
		if err != nil {
			return nil, fmt.Errorf("load corpus: %w", err)
		}
		if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
			continue // not text
		}
		total += int64(len(b))
		kept = append(kept, rel)
		results = append(results, fileResult{text: string(b)})
	}
	files = kept
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.Workers)
	for i := range results {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			fr := &results[i]
			fr.pieces = splitPieces(fr.text, opts.PieceBytes)
			toks, err := encodeCached(opts.Tokenizer, opts.CacheDir, opts.PieceBytes, fr.text, fr.pieces)
			if err != nil {
				return fmt.Errorf("tokenize %s: %w", files[i], err)
			}
			fr.toks = toks
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("load %s corpus from %s: %w", opts.Source, opts.Root, err)
	}
	c := &Corpus{Root: opts.Root, Source: opts.Source, Files: len(results), Bytes: total}
	for i, fr := range results {
		for j, p := range fr.pieces {
			if len(fr.toks[j]) < opts.MinTokens {
				continue
			}
			c.Docs = append(c.Docs, Doc{Name: files[i] + "#" + strconv.Itoa(j), Text: p, Tokens: fr.toks[j]})
			c.Tokens += int64(len(fr.toks[j]))
		}
	}
	if len(c.Docs) == 0 {
		return nil, fmt.Errorf("load %s corpus from %s: %d files, no document of at least %d tokens: %w", opts.Source, opts.Root, len(results), opts.MinTokens, ErrNoCorpus)
	}
	c.Elapsed = time.Since(start)
	return c, nil
}

// The token cache file: "KVTK", version, piece count, per piece its byte
// length, a token count and the tokens (all little-endian uint32), then an
// XXH3-64 of everything before it.
const (
	cacheMagic   = "KVTK"
	cacheVersion = 2
)

func cacheKey(pieceBytes int, text string) string {
	h := xxh3.New()
	_, _ = h.WriteString("kvloom-workload tokens v2\x00" + Encoding + "\x00" + strconv.Itoa(pieceBytes) + "\x00")
	_, _ = h.WriteString(text)
	b := h.Sum128().Bytes()
	return fmt.Sprintf("%x.tok", b[:])
}

// encodeCached tokenizes pieces, reading and writing dir's cache when dir
// is set. A missing, corrupt or stale cache file is simply rebuilt.
func encodeCached(t *Tokenizer, dir string, pieceBytes int, text string, pieces []string) ([][]matcher.Token, error) {
	var path string
	if dir != "" {
		path = filepath.Join(dir, cacheKey(pieceBytes, text))
		if toks, err := readTokenCache(path, pieces); err == nil {
			return toks, nil
		}
	}
	toks := make([][]matcher.Token, len(pieces))
	for i, p := range pieces {
		var err error
		if toks[i], err = t.Encode(p); err != nil {
			return nil, err
		}
	}
	if dir != "" {
		if err := writeTokenCache(path, pieces, toks); err != nil {
			return nil, err
		}
	}
	return toks, nil
}

var errBadCache = errors.New("bad token cache file")

func readTokenCache(path string, pieces []string) ([][]matcher.Token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return decodeTokenCache(b, pieces)
}

func decodeTokenCache(b []byte, pieces []string) ([][]matcher.Token, error) {
	if len(b) < 20 || string(b[:4]) != cacheMagic {
		return nil, errBadCache
	}
	body, sum := b[:len(b)-8], binary.LittleEndian.Uint64(b[len(b)-8:])
	if xxh3.Hash(body) != sum {
		return nil, errBadCache
	}
	if binary.LittleEndian.Uint32(body[4:]) != cacheVersion || int(binary.LittleEndian.Uint32(body[8:])) != len(pieces) {
		return nil, errBadCache
	}
	p := body[12:]
	out := make([][]matcher.Token, len(pieces))
	for i := range out {
		if len(p) < 8 || int(binary.LittleEndian.Uint32(p)) != len(pieces[i]) {
			return nil, errBadCache
		}
		n := int(binary.LittleEndian.Uint32(p[4:]))
		p = p[8:]
		if n > len(p)/4 {
			return nil, errBadCache
		}
		t := make([]matcher.Token, n)
		for j := range t {
			t[j] = binary.LittleEndian.Uint32(p[4*j:])
		}
		out[i] = t
		p = p[4*n:]
	}
	if len(p) != 0 {
		return nil, errBadCache
	}
	return out, nil
}

func writeTokenCache(path string, pieces []string, toks [][]matcher.Token) error {
	n := 12
	for _, t := range toks {
		n += 8 + 4*len(t)
	}
	b := make([]byte, 0, n+8)
	b = append(b, cacheMagic...)
	b = binary.LittleEndian.AppendUint32(b, cacheVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(toks)))
	for i, t := range toks {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(pieces[i])))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t)))
		for _, x := range t {
			b = binary.LittleEndian.AppendUint32(b, x)
		}
	}
	b = binary.LittleEndian.AppendUint64(b, xxh3.Hash(b))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tok-*")
	if err != nil {
		return fmt.Errorf("token cache: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("token cache: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("token cache: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("token cache: %w", err)
	}
	return nil
}

// DefaultCacheDir is where the CLI keeps token caches: the user's cache
// directory, or "" (no cache) when there is none.
func DefaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "kvloom", "tokens")
}

// Distinct returns c after exact-substring deduplication (as in Lee et al.,
// "Deduplicating Training Data Makes Language Models Better", 2022): every
// run of at least minLen tokens that already occurred in an earlier
// document (in corpus order) is cut out, the document is split around it,
// and pieces shorter than minLen are dropped. No two documents of the
// result share a run of minLen tokens — an index of distinct passages, as a
// RAG ingestion pipeline with a duplicate filter would hold. Documents that
// keep only part of their text are named "name.k" for their k-th piece and
// carry no Text. Token slices are shared with c. It uses the matcher
// itself, in batches.
func (c *Corpus) Distinct(minLen int) (*Corpus, error) {
	opts := matcher.Options{MinLen: minLen, MaxPromptLen: matcher.MaxMaxPromptLen, MaxMatches: 1 << 16, MaxCandidates: 1 << 24}
	ix, err := matcher.New(opts)
	if err != nil {
		return nil, fmt.Errorf("distinct documents: %w", err)
	}
	salt, err := matcher.SharedSalt(ModelFingerprint())
	if err != nil {
		return nil, err
	}
	out := &Corpus{Root: c.Root, Source: c.Source, Files: c.Files, Bytes: c.Bytes, Elapsed: c.Elapsed}
	// fresh returns the [start, end) spans of toks that no match in the
	// indexes covers, or ok=false when the matches cannot all be listed.
	fresh := func(toks []matcher.Token, idxs ...*matcher.Index) (spans [][2]int, ok bool, err error) {
		var all []matcher.Match
		for _, idx := range idxs {
			res, err := idx.Find(salt, toks, nil)
			if errors.Is(err, matcher.ErrTooManyCandidates) {
				return nil, false, nil
			}
			if err != nil {
				return nil, false, err
			}
			if res.Truncated {
				return nil, false, nil
			}
			all = append(all, res.Matches...)
		}
		slices.SortFunc(all, func(a, b matcher.Match) int { return cmp.Compare(a.ReqOff, b.ReqOff) })
		pos := 0
		for _, m := range all {
			if m.ReqOff > pos {
				spans = append(spans, [2]int{pos, m.ReqOff})
			}
			pos = max(pos, m.End())
		}
		if pos < len(toks) {
			spans = append(spans, [2]int{pos, len(toks)})
		}
		return spans, true, nil
	}
	const batch = 4096
	for start := 0; start < len(c.Docs); start += batch {
		recent, err := matcher.New(opts)
		if err != nil {
			return nil, err
		}
		var add []matcher.Entry
		for _, d := range c.Docs[start:min(start+batch, len(c.Docs))] {
			spans, ok, err := fresh(d.Tokens, ix, recent)
			if err != nil {
				return nil, fmt.Errorf("distinct documents: %s: %w", d.Name, err)
			}
			if !ok {
				continue
			}
			whole := len(spans) == 1 && spans[0] == [2]int{0, len(d.Tokens)}
			for k, sp := range spans {
				if sp[1]-sp[0] < minLen {
					continue
				}
				nd := Doc{Name: d.Name, Text: d.Text, Tokens: d.Tokens[sp[0]:sp[1]:sp[1]]}
				if !whole {
					nd.Name, nd.Text = d.Name+"."+strconv.Itoa(k), ""
				}
				e := matcher.Entry{Salt: salt, Tokens: nd.Tokens}
				if _, err := recent.Add(e); err != nil {
					return nil, fmt.Errorf("distinct documents: %s: %w", nd.Name, err)
				}
				add = append(add, e)
				out.Docs = append(out.Docs, nd)
				out.Tokens += int64(len(nd.Tokens))
			}
		}
		if _, err := ix.Add(add...); err != nil {
			return nil, fmt.Errorf("distinct documents: %w", err)
		}
	}
	if len(out.Docs) == 0 {
		return nil, fmt.Errorf("distinct documents: none of %d documents has %d fresh tokens: %w", len(c.Docs), minLen, ErrNoCorpus)
	}
	return out, nil
}
