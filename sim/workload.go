package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Block is one storage unit of a prompt: a run of tokens whose KV is
// stored and found as a whole. ID names its content (equal ids mean equal
// tokens); whether equal ids also mean an equal prefix is the workload's
// business, and Request.Prefix keys carry that.
type Block struct {
	ID     uint64
	Tokens int32
}

// Request is one prompt arriving at the cluster.
type Request struct {
	ID int32
	// Arrival is the time from the start of the run.
	Arrival time.Duration
	Tokens  int32 // prompt length: the sum of the blocks' tokens
	Output  int32 // tokens generated
	Blocks  []Block
	// Prefix[i] identifies the prompt's first i+1 blocks: a chained hash of
	// their ids. Prefix caches store and look up these keys.
	Prefix []uint64
}

// Workload is a list of requests in arrival order.
type Workload struct {
	Name     string
	Requests []Request
}

// finish computes the prefix keys and totals, and checks the order.
func (w *Workload) finish() error {
	var last time.Duration
	for i := range w.Requests {
		r := &w.Requests[i]
		if r.Arrival < last {
			return fmt.Errorf("request %d arrives at %v, before the previous one (%v): %w", i, r.Arrival, last, ErrTrace)
		}
		last = r.Arrival
		r.ID = int32(i)
		r.Prefix = make([]uint64, len(r.Blocks))
		var h uint64 = 0x9e3779b97f4a7c15
		total := int32(0)
		for j, b := range r.Blocks {
			h = mix64(h ^ mix64(b.ID+uint64(j)*0x100000001b3))
			r.Prefix[j] = h
			total += b.Tokens
		}
		r.Tokens = total
	}
	return nil
}

// Speed returns a copy of w replayed speed times faster (arrivals divided
// by speed).
func (w *Workload) Speed(speed float64) *Workload {
	out := &Workload{Name: w.Name, Requests: make([]Request, len(w.Requests))}
	copy(out.Requests, w.Requests)
	if speed > 0 && speed != 1 {
		for i := range out.Requests {
			out.Requests[i].Arrival = time.Duration(math.Round(float64(out.Requests[i].Arrival) / speed))
		}
	}
	return out
}

// Head returns the first n requests of w (all when n ≤ 0 or larger).
func (w *Workload) Head(n int) *Workload {
	if n <= 0 || n >= len(w.Requests) {
		return w
	}
	return &Workload{Name: w.Name, Requests: w.Requests[:n]}
}

// PromptTokens returns the total prompt tokens of w.
func (w *Workload) PromptTokens() int64 {
	var n int64
	for i := range w.Requests {
		n += int64(w.Requests[i].Tokens)
	}
	return n
}

// mix64 is SplitMix64's finaliser: a fast, well-mixed 64-bit permutation.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// contentID names content: a domain (what kind of text), an owner (session,
// document) and a block index within it, plus the block's token count so
// that a partial block never equals the full one.
func contentID(domain, owner uint64, index, tokens int) uint64 {
	return mix64(mix64(domain<<56^owner) ^ uint64(index)<<20 ^ uint64(tokens))
}

const (
	domainSystem uint64 = iota + 1
	domainSession
	domainDoc
	domainQuestion
)

// ChatOptions configure the multi-turn chat generator. Zero fields take the
// defaults in brackets.
type ChatOptions struct {
	Sessions     int           // conversations [200]
	Turns        int           // mean turns per conversation, geometric [6]
	SystemTokens int           // shared system prompt [1024]
	UserTokens   int           // mean user message, exponential [200]
	AnswerTokens int           // mean answer, exponential [300]
	SessionRate  float64       // new conversations per second, Poisson [2]
	ThinkTime    time.Duration // mean gap between an answer and the next turn, exponential [30s]
	BlockTokens  int           // storage granularity [512]
	Seed         uint64
}

// Chat generates a multi-turn chat workload: each turn's prompt is the
// system prompt, the whole conversation so far and the new message, so
// consecutive turns share a growing prefix; all conversations share the
// system prompt.
func Chat(o ChatOptions) (*Workload, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Sessions, 200)
	def(&o.Turns, 6)
	def(&o.SystemTokens, 1024)
	def(&o.UserTokens, 200)
	def(&o.AnswerTokens, 300)
	def(&o.BlockTokens, 512)
	if o.SessionRate == 0 {
		o.SessionRate = 2
	}
	if o.ThinkTime == 0 {
		o.ThinkTime = 30 * time.Second
	}
	if o.Sessions < 0 || o.Turns < 0 || o.SystemTokens < 0 || o.UserTokens < 0 || o.AnswerTokens < 0 || o.BlockTokens <= 0 || !(o.SessionRate > 0) || o.ThinkTime < 0 {
		return nil, fmt.Errorf("chat options %+v out of range: %w", o, ErrConfig)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x636861740a))
	var reqs []Request
	start := 0.0
	for s := range o.Sessions {
		start += rng.ExpFloat64() / o.SessionRate
		t := start
		history := o.SystemTokens
		turns := 1 + int(rng.ExpFloat64()*float64(o.Turns-1))
		for range turns {
			user := 1 + int(rng.ExpFloat64()*float64(o.UserTokens))
			answer := 1 + int(rng.ExpFloat64()*float64(o.AnswerTokens))
			prompt := history + user
			reqs = append(reqs, Request{
				Arrival: time.Duration(t * 1e9),
				Output:  int32(answer),
				Blocks:  chatBlocks(uint64(s), o.SystemTokens, prompt, o.BlockTokens),
			})
			history = prompt + answer
			t += rng.ExpFloat64() * o.ThinkTime.Seconds()
		}
	}
	sortByArrival(reqs)
	w := &Workload{Name: "chat", Requests: reqs}
	return w, w.finish()
}

// chatBlocks splits a conversation's first n tokens into blocks: full
// blocks inside the system prompt are shared, the rest belong to the
// session.
func chatBlocks(session uint64, system, n, bt int) []Block {
	blocks := make([]Block, 0, (n+bt-1)/bt)
	for i := 0; i*bt < n; i++ {
		tok := min(bt, n-i*bt)
		var id uint64
		if (i+1)*bt <= system {
			id = contentID(domainSystem, 0, i, tok)
		} else {
			id = contentID(domainSession, session, i, tok)
		}
		blocks = append(blocks, Block{ID: id, Tokens: int32(tok)})
	}
	return blocks
}

// RAGOptions configure the RAG generator. Zero fields take the defaults in
// brackets.
type RAGOptions struct {
	Requests       int     // [2000]
	Rate           float64 // requests per second, Poisson [4]
	Documents      int     // corpus size [1000]
	DocTokens      int     // mean document length, uniform in [½, 1½]× [2048]
	DocsPerRequest int     // retrieved documents per prompt [4]
	Zipf           float64 // Zipf exponent s > 1 of document popularity [1.1]
	SystemTokens   int     // shared instructions [512]
	QuestionTokens int     // mean question, exponential [100]
	OutputTokens   int     // mean answer, exponential [200]
	BlockTokens    int     // chunk size [512]
	Seed           uint64
}

// RAG generates retrieval-augmented prompts: shared instructions, k
// documents drawn by Zipf popularity (in retrieval order, so a popular
// document appears at different positions), then a question. Documents are
// chunked from their own start, as LMCache's segment hashing does, so
// their chunks keep their ids wherever they appear: reusable out of prefix
// with CacheBlend's recompute.
func RAG(o RAGOptions) (*Workload, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Requests, 2000)
	def(&o.Documents, 1000)
	def(&o.DocTokens, 2048)
	def(&o.DocsPerRequest, 4)
	def(&o.SystemTokens, 512)
	def(&o.QuestionTokens, 100)
	def(&o.OutputTokens, 200)
	def(&o.BlockTokens, 512)
	if o.Rate == 0 {
		o.Rate = 4
	}
	if o.Zipf == 0 {
		o.Zipf = 1.1
	}
	if o.Requests < 0 || o.Documents <= 0 || o.DocTokens <= 0 || o.DocsPerRequest <= 0 || o.DocsPerRequest > o.Documents ||
		!(o.Zipf > 1) || o.SystemTokens < 0 || o.QuestionTokens < 0 || o.OutputTokens < 0 || o.BlockTokens <= 0 || !(o.Rate > 0) {
		return nil, fmt.Errorf("RAG options %+v out of range (Zipf exponent must exceed 1): %w", o, ErrConfig)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x7261670a))
	zipf := rand.NewZipf(rand.New(rand.NewPCG(o.Seed, 0x7a6970660a)), o.Zipf, 1, uint64(o.Documents-1))
	docLen := make([]int, o.Documents)
	for i := range docLen {
		docLen[i] = max(1, o.DocTokens/2+rng.IntN(o.DocTokens+1))
	}
	reqs := make([]Request, 0, o.Requests)
	t := 0.0
	for i := range o.Requests {
		t += rng.ExpFloat64() / o.Rate
		var blocks []Block
		blocks = appendSegment(blocks, domainSystem, 0, o.SystemTokens, o.BlockTokens)
		seen := map[uint64]bool{}
		for len(seen) < o.DocsPerRequest {
			d := zipf.Uint64()
			if seen[d] {
				continue
			}
			seen[d] = true
			blocks = appendSegment(blocks, domainDoc, d, docLen[d], o.BlockTokens)
		}
		q := 1 + int(rng.ExpFloat64()*float64(o.QuestionTokens))
		blocks = appendSegment(blocks, domainQuestion, uint64(i), q, o.BlockTokens)
		reqs = append(reqs, Request{
			Arrival: time.Duration(t * 1e9),
			Output:  int32(1 + int(rng.ExpFloat64()*float64(o.OutputTokens))),
			Blocks:  blocks,
		})
	}
	w := &Workload{Name: "rag", Requests: reqs}
	return w, w.finish()
}

func appendSegment(blocks []Block, domain, owner uint64, n, bt int) []Block {
	for i := 0; i*bt < n; i++ {
		tok := min(bt, n-i*bt)
		blocks = append(blocks, Block{ID: contentID(domain, owner, i, tok), Tokens: int32(tok)})
	}
	return blocks
}

func sortByArrival(reqs []Request) {
	// Stable, so that equal arrivals keep generation order (determinism).
	slices.SortStableFunc(reqs, func(a, b Request) int {
		switch {
		case a.Arrival < b.Arrival:
			return -1
		case a.Arrival > b.Arrival:
			return 1
		}
		return 0
	})
}
