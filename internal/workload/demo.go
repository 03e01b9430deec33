package workload

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvloom/kvloom/matcher"
)

// DemoOptions configure RunDemo. The zero value is the demo `make demo`
// runs.
type DemoOptions struct {
	// Prompts is the number of RAG prompts; zero means 200.
	Prompts int
	// Sessions is the number of chat sessions per tenant; zero means 5.
	Sessions int
	// Seed drives every random choice; zero means 1.
	Seed uint64
	// Root is where the text is read; empty means the Go distribution.
	Root string
	// CacheDir keeps token caches; empty means none.
	CacheDir string
	// Tokenizer to use; nil means a new one.
	Tokenizer *Tokenizer
}

// DemoSummary is what the demo measured, for tests and callers.
type DemoSummary struct {
	Documents     int
	PromptTokens  int64
	ReusedTokens  int64
	DocsRetrieved int // documents placed in RAG prompts
	DocsFound     int // of those, found whole by FindAll
	ChatReused    float64
	IsolationLeak int // tokens of another tenant's history a lookup reused (must be 0)
	HotCandidates int
	HotDocuments  int // hot candidates that are exactly a corpus document
	FindTime      time.Duration
}

// RunDemo runs the matcher on a real RAG workload — the Go distribution's
// documentation tokenized with cl100k_base — and writes what it found:
// reuse, whether every retrieved document was found, tenant isolation, the
// hot substrings nobody marked, and throughput. It needs no configuration
// and finishes in seconds.
func RunDemo(ctx context.Context, w io.Writer, opts DemoOptions) (DemoSummary, error) {
	start := time.Now()
	var sum DemoSummary
	if opts.Prompts == 0 {
		opts.Prompts = 200
	}
	if opts.Sessions == 0 {
		opts.Sessions = 5
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	tok := opts.Tokenizer
	if tok == nil {
		var err error
		if tok, err = NewTokenizer(); err != nil {
			return sum, err
		}
	}
	out := &demoWriter{w: w}
	out.printf("kvloom demo: the chunk matcher on real text (grows with the project)\n\n")

	corpus, err := LoadCorpus(ctx, CorpusOptions{Root: opts.Root, Source: SourceDocs, CacheDir: opts.CacheDir, Tokenizer: tok})
	if err != nil {
		return sum, fmt.Errorf("demo: %w", err)
	}
	sum.Documents = len(corpus.Docs)
	out.printf("corpus   %d documents, %s tokens: the Go documentation in %s (doc/*.html, doc/*.md, package doc.go files)\n", len(corpus.Docs), commas(corpus.Tokens), corpus.Root)
	out.printf("         split at blank lines, tokenized with %s in %s\n", Encoding, corpus.Elapsed.Round(time.Millisecond))

	fp := ModelFingerprint()
	shared, err := matcher.SharedSalt(fp)
	if err != nil {
		return sum, err
	}
	tenants := make([]matcher.Salt, 2)
	tenantNames := []string{"alice", "bob"}
	for i, n := range tenantNames {
		if tenants[i], err = matcher.NewSalt(fp, n); err != nil {
			return sum, err
		}
	}
	ix, err := matcher.New(matcher.Options{BlockSize: 64, Vocab: Vocab})
	if err != nil {
		return sum, err
	}
	rag, err := NewRAG(corpus, tok, RAGOptions{Seed: opts.Seed})
	if err != nil {
		return sum, fmt.Errorf("demo: %w", err)
	}
	entries := []matcher.Entry{{Salt: shared, Tokens: rag.System(), Prefix: true}}
	for _, d := range corpus.Docs {
		entries = append(entries, matcher.Entry{Salt: shared, Tokens: d.Tokens})
	}
	keys, err := ix.Add(entries...)
	if err != nil {
		return sum, fmt.Errorf("demo: index: %w", err)
	}
	names := map[matcher.ChunkKey]string{}
	docKeys := make([]matcher.ChunkKey, len(corpus.Docs))
	for i, k := range keys[1:] {
		docKeys[i] = k
		if _, dup := names[k]; !dup {
			names[k] = corpus.Docs[i].Name
		}
	}
	st := ix.Stats()
	out.printf("index    %d chunks + the system prompt as a prefix chain (blocks of 64), shared by all tenants;\n", st.Chunks)
	out.printf("         %s tokens, %d anchors, ~%.1f bytes/token beyond the tokens\n\n", commas(st.Tokens), st.Postings, float64(st.OverheadBytes)/float64(st.Tokens))

	// RAG prompts.
	hot, err := matcher.NewHot(matcher.HotOptions{Anchor: ix.AnchorParams(), MinCount: 3})
	if err != nil {
		return sum, err
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) // the sketch's clock: one prompt per second
	out.printf("RAG      %d prompts for tenants alice and bob: the system prompt, 3-8 documents drawn by Zipf\n", opts.Prompts)
	out.printf("         popularity (each after a \"[n]\" line), and a question\n")
	var prefixTok, chunkTok int64
	dst := make([]matcher.Match, 0, 64)
	for i := range opts.Prompts {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		p, err := rag.Next()
		if err != nil {
			return sum, err
		}
		salt := tenants[i%2]
		t0 := time.Now()
		res, err := ix.Find(salt, p.Tokens, dst)
		sum.FindTime += time.Since(t0)
		if err != nil {
			return sum, fmt.Errorf("demo: prompt %s: %w", p.ID, err)
		}
		cover := matcher.Cover(res.Matches)
		sum.PromptTokens += int64(len(p.Tokens))
		for _, m := range cover {
			sum.ReusedTokens += int64(m.Len)
			if m.Prefix {
				prefixTok += int64(m.Len)
			} else {
				chunkTok += int64(m.Len)
			}
		}
		for _, part := range p.Parts {
			if part.Kind != PartDoc {
				continue
			}
			sum.DocsRetrieved++
			if slices.ContainsFunc(res.Matches, func(m matcher.Match) bool {
				return m.Chunk == docKeys[part.Doc] && m.ReqOff == part.Off && m.Len == part.Len
			}) {
				sum.DocsFound++
			}
		}
		if err := hot.Observe(now, salt, p.Tokens); err != nil {
			return sum, err
		}
		now = now.Add(time.Second)
		if i == 0 {
			out.printf("         first prompt %s (tenant %s, %d tokens):\n", p.ID, tenantNames[i%2], len(p.Tokens))
			for _, m := range res.Matches {
				mark := " "
				if slices.Contains(cover, m) {
					mark = "*"
				}
				if m.Prefix {
					out.printf("         %s [%d,%d) prefix  system prompt, %d blocks\n", mark, m.ReqOff, m.End(), m.Len/64)
				} else {
					out.printf("         %s [%d,%d) chunk   %s [%d,%d)\n", mark, m.ReqOff, m.End(), names[m.Chunk], m.ChunkOff, m.ChunkOff+m.Len)
				}
			}
			out.printf("           (* = in the cover; the rest of the prompt is the \"[n]\" lines and the question)\n")
		}
	}
	frac := func(a, b int64) float64 { return 100 * float64(a) / float64(max(b, 1)) }
	out.printf("         reused %.1f%% of %s prompt tokens (prefix %.1f%%, documents %.1f%%)\n", frac(sum.ReusedTokens, sum.PromptTokens), commas(sum.PromptTokens), frac(prefixTok, sum.PromptTokens), frac(chunkTok, sum.PromptTokens))
	out.printf("         every retrieved document found whole: %d of %d\n", sum.DocsFound, sum.DocsRetrieved)
	out.printf("         FindAll: %s tokens in %s, %.0f M tokens/s on one core (make bench measures it properly)\n\n",
		commas(sum.PromptTokens), sum.FindTime.Round(10*time.Microsecond), float64(sum.PromptTokens)/sum.FindTime.Seconds()/1e6)

	// Chat: each turn extends the previous one; the engine stores each
	// turn's KV, which the demo models by indexing the turn as a prefix
	// chain of its tenant.
	chat, err := NewChat(corpus, tok, ChatOptions{Seed: opts.Seed, Turns: 4})
	if err != nil {
		return sum, err
	}
	var chatTok, chatReused int64
	var lastAlice []matcher.Token
	for s := range 2 * opts.Sessions {
		salt := tenants[s%2]
		turns, err := chat.Next()
		if err != nil {
			return sum, err
		}
		for k, p := range turns {
			res, err := ix.Find(salt, p.Tokens, dst)
			if err != nil {
				return sum, fmt.Errorf("demo: chat %s: %w", p.ID, err)
			}
			if k > 0 {
				chatTok += int64(len(p.Tokens))
				chatReused += int64(matcher.Reused(matcher.Cover(res.Matches)))
			}
			if _, err := ix.Add(matcher.Entry{Salt: salt, Tokens: p.Tokens, Prefix: true}); err != nil {
				return sum, err
			}
			if s%2 == 0 {
				lastAlice = p.Tokens
			}
		}
	}
	sum.ChatReused = frac(chatReused, chatTok)
	// Isolation: bob looks up alice's last conversation. He may reuse the
	// shared system prompt and shared documents, never alice's history: he
	// must get no more than carol, a tenant with no history at all.
	carol, err := matcher.NewSalt(fp, "carol")
	if err != nil {
		return sum, err
	}
	prefixLen := func(salt matcher.Salt) (int, error) {
		res, err := ix.Find(salt, lastAlice, dst)
		if err != nil {
			return 0, err
		}
		if len(res.Matches) > 0 && res.Matches[0].Prefix {
			return res.Matches[0].Len, nil
		}
		return 0, nil
	}
	bobPrefix, err := prefixLen(tenants[1])
	if err != nil {
		return sum, err
	}
	carolPrefix, err := prefixLen(carol)
	if err != nil {
		return sum, err
	}
	alicePrefix, err := prefixLen(tenants[0])
	if err != nil {
		return sum, err
	}
	sum.IsolationLeak = max(0, bobPrefix-carolPrefix)
	out.printf("chat     %d sessions x 4 turns per tenant; each turn is stored as a prefix chain of its tenant\n", opts.Sessions)
	out.printf("         turns 2-4 reuse %.1f%% of their tokens (the previous turns, and documents quoted in them)\n", sum.ChatReused)
	out.printf("         alice's last conversation: alice reuses a %d-token prefix, bob %d, carol (no history) %d:\n", alicePrefix, bobPrefix, carolPrefix)
	out.printf("         other tenants get the shared system prompt only (tokens of alice's history leaked: %d)\n\n", sum.IsolationLeak)

	// Hot substrings: what the sketch proposes, described by what it is.
	top := hot.Top(now, 5)
	sum.HotCandidates = len(top)
	out.printf("hot      Space-Saving sketch over the prompts' anchors (nobody marked anything); top %d:\n", len(top))
	for i, c := range top {
		what := describe(ix, shared, c.Tokens, names)
		if slices.ContainsFunc(corpus.Docs, func(d Doc) bool { return slices.Equal(d.Tokens, c.Tokens) }) {
			sum.HotDocuments++
		}
		tenant := tenantNames[slices.Index(tenants, c.Salt)]
		out.printf("         %d. %5d tokens seen %5.1f times (%s): %s\n", i+1, len(c.Tokens), c.Count, tenant, what)
	}
	out.printf("\ndone in %s\n", time.Since(start).Round(time.Millisecond))
	return sum, out.err
}

// describe names what a token span is, by matching it against the index.
func describe(ix *matcher.Index, salt matcher.Salt, toks []matcher.Token, names map[matcher.ChunkKey]string) string {
	ms, err := ix.FindAll(salt, toks)
	if err != nil {
		return "?"
	}
	var parts []string
	covered := 0
	for _, m := range matcher.Cover(ms) {
		covered += m.Len
		if m.Prefix {
			parts = append(parts, "system prompt")
			continue
		}
		if m.ChunkOff == 0 && m.Len == len(toks) {
			return "exactly " + names[m.Chunk]
		}
		parts = append(parts, names[m.Chunk])
	}
	if rest := len(toks) - covered; rest > 0 {
		parts = append(parts, strconv.Itoa(rest)+" other tokens")
	}
	return strings.Join(parts, " + ")
}

type demoWriter struct {
	w   io.Writer
	err error
}

func (d *demoWriter) printf(format string, args ...any) {
	if d.err == nil {
		_, d.err = fmt.Fprintf(d.w, format, args...)
	}
}

// commas formats n with thousands separators.
func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
