package matcher_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/workload"
	"github.com/kvloom/kvloom/matcher"
)

// The large benchmark index: the Go distribution's source and text files
// (workload.SourceTree), tokenized with cl100k_base, cut at blank lines into
// ~384-byte pieces (a RAG index of passages) and deduplicated by exact
// substrings (no two passages share a 64-token run, as after a RAG
// pipeline's duplicate filter): 120K+ chunks, 30M+ real tokens. It is built
// once per benchmark binary and only by benchmarks; tokens are cached under
// workload.DefaultCacheDir() (the first run tokenizes ~115 MB, ~20 s on two
// cores; deduplication takes ~10 s more on every run).
const (
	bigMinChunks = 100_000
	bigMinTokens = 25_000_000
	promptTokens = 32 << 10
)

type bigBench struct {
	corpus   *workload.Corpus
	ix       *matcher.Index
	salt     matcher.Salt
	bPerTok  float64 // measured heap beyond the stored tokens, per token
	estBPer  float64 // Stats().OverheadBytes per token
	rag      []matcher.Token
	novel    []matcher.Token
	naive    *naiveMatcher
	buildErr error
}

var bigOnce = sync.OnceValue(func() *bigBench {
	bb := &bigBench{}
	bb.buildErr = bb.build(context.Background())
	return bb
})

func (bb *bigBench) build(ctx context.Context) error {
	tok, err := workload.NewTokenizer()
	if err != nil {
		return err
	}
	raw, err := workload.LoadCorpus(ctx, workload.CorpusOptions{Source: workload.SourceTree, PieceBytes: 384, CacheDir: workload.DefaultCacheDir(), Tokenizer: tok})
	if err != nil {
		return err
	}
	c, err := raw.Distinct(matcher.DefaultMinLen)
	if err != nil {
		return err
	}
	// Hold the prose of doc/ out of the index: the novel prompt is made of
	// it.
	c.Docs = slices.DeleteFunc(c.Docs, func(d workload.Doc) bool { return strings.HasPrefix(d.Name, "doc/") })
	bb.corpus = c
	shared, err := matcher.SharedSalt(workload.ModelFingerprint())
	if err != nil {
		return err
	}
	bb.salt, err = matcher.NewSalt(workload.ModelFingerprint(), "bench")
	if err != nil {
		return err
	}
	rag, err := workload.NewRAG(c, tok, workload.RAGOptions{Seed: 1, TargetTokens: promptTokens})
	if err != nil {
		return err
	}
	entries := make([]matcher.Entry, 0, len(c.Docs)+1)
	entries = append(entries, matcher.Entry{Salt: shared, Tokens: rag.System(), Prefix: true})
	for _, d := range c.Docs {
		entries = append(entries, matcher.Entry{Salt: shared, Tokens: d.Tokens})
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ix, err := matcher.New(matcher.Options{BlockSize: 64, Vocab: workload.Vocab})
	if err != nil {
		return err
	}
	if _, err := ix.Add(entries...); err != nil {
		return err
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := ix.Stats()
	bb.ix = ix
	bb.bPerTok = (float64(after.HeapAlloc) - float64(before.HeapAlloc) - 4*float64(st.Tokens)) / float64(st.Tokens)
	bb.estBPer = float64(st.OverheadBytes) / float64(st.Tokens)

	p, err := rag.Next()
	if err != nil {
		return err
	}
	bb.rag = p.Tokens[:promptTokens]
	// Real text that is not in the index: the language specification's
	// prose, held out above.
	docs, err := workload.LoadCorpus(ctx, workload.CorpusOptions{Source: workload.SourceDocs, Root: c.Root, Tokenizer: tok})
	if err != nil {
		return err
	}
	for _, d := range docs.Docs {
		bb.novel = append(bb.novel, d.Tokens...)
		if len(bb.novel) >= promptTokens {
			break
		}
	}
	bb.novel = bb.novel[:promptTokens]
	bb.naive = newNaive(c.Docs)
	return nil
}

func bigBenchOrFail(b *testing.B) *bigBench {
	b.Helper()
	bb := bigOnce()
	if bb.buildErr != nil {
		b.Fatalf("build the large index from the Go distribution's sources: %v", bb.buildErr)
	}
	if st := bb.ix.Stats(); st.Chunks < bigMinChunks || st.Tokens < bigMinTokens {
		b.Fatalf("large index holds %d chunks, %d tokens; the figure needs ≥ %d chunks and ≥ %d tokens", st.Chunks, st.Tokens, bigMinChunks, bigMinTokens)
	}
	return bb
}

// BenchmarkFindAll matches a 32K-token prompt against the large index and
// reports prompt tokens/s on one core, the ratio to the naive matcher on
// the same prompt and index, and the index's memory beyond its tokens.
func BenchmarkFindAll(b *testing.B) {
	for _, tc := range []struct {
		name   string
		prompt func(*bigBench) []matcher.Token
	}{
		{"prompt=rag", func(bb *bigBench) []matcher.Token { return bb.rag }},
		{"prompt=novel", func(bb *bigBench) []matcher.Token { return bb.novel }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			bb := bigBenchOrFail(b)
			prompt := tc.prompt(bb)
			dst := make([]matcher.Match, 0, 4096)
			res, err := bb.ix.Find(bb.salt, prompt, dst)
			if err != nil {
				b.Fatalf("Find: %v", err)
			}
			// Cross-check on real data: every whole chunk the naive matcher
			// finds is a FindAll match.
			if !res.Truncated {
				for _, nm := range bb.naive.find(prompt) {
					key := matcher.ChunkKeyOf(bb.salt.Shared(), bb.corpus.Docs[nm.doc].Tokens)
					if !slices.ContainsFunc(res.Matches, func(m matcher.Match) bool {
						return m.Chunk == key && m.ReqOff == nm.off && m.ChunkOff == 0 && m.Len == len(bb.corpus.Docs[nm.doc].Tokens)
					}) {
						b.Fatalf("naive matcher finds document %s at %d, FindAll does not", bb.corpus.Docs[nm.doc].Name, nm.off)
					}
				}
			}
			b.SetBytes(int64(4 * len(prompt)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				res, err = bb.ix.Find(bb.salt, prompt, dst)
				if err != nil {
					b.Fatal(err)
				}
			}
			benchutil.ReportRate(b, "tokens/s", float64(len(prompt)))
			t := fastest(60, 5, func() { _, _ = bb.ix.Find(bb.salt, prompt, dst) })
			b.ReportMetric(float64(len(prompt))/t.Seconds(), "min-tokens/s")
			benchutil.ReportRatio(b, "x-vs-naive", float64(len(prompt)), benchutil.Baseline{
				Op:    func() { bb.naive.find(prompt) },
				PerOp: float64(len(prompt)),
			})
			b.ReportMetric(bb.bPerTok, "B/token")
			b.ReportMetric(bb.estBPer, "est-B/token")
			st := bb.ix.Stats()
			b.ReportMetric(float64(st.Chunks), "chunks")
			b.ReportMetric(float64(st.Tokens)/1e6, "Mtokens")
			b.ReportMetric(float64(len(res.Matches)), "matches")
			b.ReportMetric(float64(res.Candidates), "candidates")
			b.ReportMetric(float64(res.Passed), "passed")
			b.ReportMetric(float64(matcher.Reused(matcher.Cover(res.Matches)))/float64(len(prompt)), "reused-frac")
		})
	}
}

// naiveMatcher is the baseline the issue names: for every distinct length
// of indexed chunks, hash the prompt window at every offset (a rolling
// hash) and look it up among the chunks of that length, verifying hits. It
// finds whole chunks only.
type naiveMatcher struct {
	docs    []workload.Doc
	lengths []int
	byLen   map[int]map[uint64][]int32
	pow     map[int]uint64
}

const naiveBase = 0x100000001b3

func naiveHash(t []matcher.Token) uint64 {
	var h uint64
	for _, x := range t {
		h = h*naiveBase + uint64(x) + 1
	}
	return h
}

func newNaive(docs []workload.Doc) *naiveMatcher {
	nm := &naiveMatcher{docs: docs, byLen: map[int]map[uint64][]int32{}, pow: map[int]uint64{}}
	for i, d := range docs {
		l := len(d.Tokens)
		m := nm.byLen[l]
		if m == nil {
			m = map[uint64][]int32{}
			nm.byLen[l] = m
			nm.lengths = append(nm.lengths, l)
			p := uint64(1)
			for range l - 1 {
				p *= naiveBase
			}
			nm.pow[l] = p
		}
		h := naiveHash(d.Tokens)
		m[h] = append(m[h], int32(i))
	}
	slices.Sort(nm.lengths)
	return nm
}

type naiveHit struct{ doc, off int }

func (nm *naiveMatcher) find(prompt []matcher.Token) []naiveHit {
	var hits []naiveHit
	for _, l := range nm.lengths {
		if l > len(prompt) {
			break
		}
		m, top := nm.byLen[l], nm.pow[l]
		h := naiveHash(prompt[:l])
		for off := 0; ; off++ {
			for _, id := range m[h] {
				if slices.Equal(prompt[off:off+l], nm.docs[id].Tokens) {
					hits = append(hits, naiveHit{doc: int(id), off: off})
				}
			}
			if off+l == len(prompt) {
				break
			}
			h = (h-(uint64(prompt[off])+1)*top)*naiveBase + uint64(prompt[off+l]) + 1
		}
	}
	return hits
}

// BenchmarkIndexAdd builds the large index the way a control plane would,
// in batches of 1024 chunks (one Update, one snapshot each), and reports
// chunks indexed per second and the memory beyond the stored tokens.
func BenchmarkIndexAdd(b *testing.B) {
	bb := bigBenchOrFail(b)
	salt := bb.salt.Shared()
	var bPerTok float64
	b.ReportAllocs()
	for b.Loop() {
		// The heap measurement around each build is not the build's cost.
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		ix, err := matcher.New(matcher.Options{Vocab: workload.Vocab})
		if err != nil {
			b.Fatal(err)
		}
		batch := make([]matcher.Entry, 0, 1024)
		for i, d := range bb.corpus.Docs {
			batch = append(batch, matcher.Entry{Salt: salt, Tokens: d.Tokens})
			if len(batch) == cap(batch) || i == len(bb.corpus.Docs)-1 {
				if _, err := ix.Add(batch...); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.StartTimer()
		st := ix.Stats()
		bPerTok = (float64(after.HeapAlloc) - float64(before.HeapAlloc) - 4*float64(st.Tokens)) / float64(st.Tokens)
		runtime.KeepAlive(ix)
	}
	benchutil.ReportRate(b, "chunks/s", float64(len(bb.corpus.Docs)))
	b.ReportMetric(bPerTok, "B/token")
}

// fastest times op in rounds batches of n calls and returns the fastest
// batch's time per call. On a shared machine the fastest batch is the one
// least disturbed by other processes: a stable estimate where the mean of
// b.Loop moves with the load.
func fastest(rounds, n int, op func()) time.Duration {
	best := time.Duration(1<<63 - 1)
	for range rounds {
		start := time.Now()
		for range n {
			op()
		}
		best = min(best, time.Since(start)/time.Duration(n))
	}
	return best
}

// fastestPair alternates batches of a and b and returns each one's fastest
// time per call, so both see the same conditions.
func fastestPair(rounds, n int, a, b func()) (ta, tb time.Duration) {
	ta, tb = time.Duration(1<<63-1), time.Duration(1<<63-1)
	for range rounds {
		ta = min(ta, fastest(1, n, a))
		tb = min(tb, fastest(1, n, b))
	}
	return ta, tb
}

// BenchmarkPrefixKeys hashes a 32K-token prompt into prefix keys and
// reports the throughput as a ratio to copy() over the same bytes:
// x-vs-copy (benchutil: the baseline timed after the subject) and
// x-vs-copy-min (the fastest of 15 alternating batches of each).
func BenchmarkPrefixKeys(b *testing.B) {
	for _, bs := range []int{256, 16} {
		b.Run("block="+strconv.Itoa(bs), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 1))
			toks := make([]matcher.Token, 32<<10)
			for i := range toks {
				toks[i] = matcher.Token(r.IntN(workload.Vocab))
			}
			salt, err := matcher.NewSalt(workload.ModelFingerprint(), "bench")
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]matcher.ChunkKey, 0, len(toks)/bs)
			n := 4 * len(toks)
			hash := func() { dst, _ = matcher.PrefixKeys(salt, toks, bs, dst[:0]) }
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				hash()
			}
			base := benchutil.CopyBaseline(n)
			benchutil.ReportRatio(b, "x-vs-copy", float64(n), base)
			th, tc := fastestPair(15, 50, hash, base.Op)
			b.ReportMetric(float64(tc)/float64(th), "x-vs-copy-min")
		})
	}
}
