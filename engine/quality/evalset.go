package quality

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/kvloom/kvloom/engine"
)

// Openings start the evaluation documents: varied first words so that the
// stories differ in characters, places and plots.
var Openings = []string{
	"Once upon a time", "One day", "Tom and Sue", "The little dog", "In a small town",
	"Lily wanted", "Ben had a red ball", "There was a big tree", "Mia and her mom",
	"The sun was hot", "A little bird", "Max found a box", "It was a rainy day",
	"The cat and the mouse", "Sara liked to draw", "Tim went to the park",
}

// Cues end every prompt and ask the model to go on.
// They are encoded after the documents' text, so the tokenizer's
// dummy-prefix space becomes the space before them.
var Cues = []string{"One day,", "Then", "The next day,", "Later,"}

// SetOptions sizes the evaluation set. Zero values take the defaults in
// brackets.
type SetOptions struct {
	Docs      int     `json:"docs"`        // documents in the pool [24]
	Prompts   int     `json:"prompts"`     // prompts built from the pool [24]
	MinDocs   int     `json:"min_docs"`    // documents per prompt, at least [2]
	MaxDocs   int     `json:"max_docs"`    // documents per prompt, at most [6]
	DocTokens int     `json:"doc_tokens"`  // tokens per document, at most [64]
	MinTokens int     `json:"min_tokens"`  // a shorter story is redrawn with the next seed [24]
	Continue  int     `json:"continue"`    // continuation positions scored per prompt [32]
	Temp      float32 `json:"temperature"` // sampling temperature of the documents [0.8]
	Seed      uint64  `json:"seed"`        // base seed of documents and prompt composition [1]
}

func (o *SetOptions) defaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Docs, 24)
	def(&o.Prompts, 24)
	def(&o.MinDocs, 2)
	def(&o.MaxDocs, 6)
	def(&o.DocTokens, 64)
	def(&o.MinTokens, 24)
	def(&o.Continue, 32)
	if o.Temp == 0 {
		o.Temp = 0.8
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	switch {
	case o.Docs < 2 || o.Prompts < 1:
		return fmt.Errorf("set options: %d docs, %d prompts; want >= 2 and >= 1: %w", o.Docs, o.Prompts, ErrOptions)
	case o.MinDocs < 2 || o.MaxDocs < o.MinDocs || o.MaxDocs > o.Docs:
		return fmt.Errorf("set options: %d..%d docs per prompt from a pool of %d; want 2 <= min <= max <= pool: %w", o.MinDocs, o.MaxDocs, o.Docs, ErrOptions)
	case o.MinTokens < 1 || o.DocTokens < o.MinTokens:
		return fmt.Errorf("set options: doc tokens %d..%d: %w", o.MinTokens, o.DocTokens, ErrOptions)
	case o.Continue < 1:
		return fmt.Errorf("set options: %d continuation positions: %w", o.Continue, ErrOptions)
	}
	return nil
}

// Doc is one document: a story the model wrote, without BOS.
type Doc struct {
	Opening string
	Seed    uint64
	Tokens  []engine.Token
}

// Prompt is BOS, then the documents in Docs order, then the cue.
type Prompt struct {
	Docs []int // indices into Set.Docs
	Cue  []engine.Token
}

// Set is an evaluation set: a pool of documents and the prompts built
// from them.
type Set struct {
	Options SetOptions
	Docs    []Doc
	Prompts []Prompt
}

// Tokens returns the prompt's tokens: BOS, documents, cue.
func (s *Set) Tokens(p Prompt) []engine.Token {
	out := []engine.Token{engine.TokenBOS}
	for _, d := range p.Docs {
		out = append(out, s.Docs[d].Tokens...)
	}
	return append(out, p.Cue...)
}

// NewSet generates the documents with the model (temperature sampling,
// top-p 0.9, one seed per document) and composes the prompts with a PCG
// seeded by opts.Seed; the same options give the same set.
func NewSet(ctx context.Context, e *engine.Engine, tok *engine.Tokenizer, opts SetOptions) (*Set, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	set := &Set{Options: opts}
	seed := opts.Seed * 1000003
	for i := 0; len(set.Docs) < opts.Docs; i++ {
		if i > 20*opts.Docs {
			return nil, fmt.Errorf("new set: only %d of %d stories reached %d tokens: %w", len(set.Docs), opts.Docs, opts.MinTokens, ErrOptions)
		}
		opening := Openings[len(set.Docs)%len(Openings)]
		seed++
		sampler, err := engine.NewSampler(opts.Temp, 0.9, seed)
		if err != nil {
			return nil, err
		}
		// Steps counts emitted tokens after BOS, the opening's included.
		toks, err := e.Generate(ctx, tok, engine.GenerateOptions{Prompt: opening, Steps: opts.DocTokens, Sampler: sampler}, nil)
		if err != nil {
			return nil, fmt.Errorf("new set: story %d: %w", len(set.Docs), err)
		}
		if len(toks) < opts.MinTokens {
			continue
		}
		set.Docs = append(set.Docs, Doc{Opening: opening, Seed: seed, Tokens: toks})
	}
	r := rand.New(rand.NewPCG(opts.Seed, 0x6b766c6f6f6d))
	maxLen := e.Config().SeqLen - opts.Continue - 1
	for len(set.Prompts) < opts.Prompts {
		m := opts.MinDocs + r.IntN(opts.MaxDocs-opts.MinDocs+1)
		docs := r.Perm(opts.Docs)[:m]
		cue := tok.Encode(Cues[r.IntN(len(Cues))], false, false)
		p := Prompt{Docs: docs, Cue: cue}
		if len(set.Tokens(p)) > maxLen {
			return nil, fmt.Errorf("new set: a prompt of %d documents has %d tokens, more than seq_len leaves for %d continuation positions: %w", m, len(set.Tokens(p)), opts.Continue, ErrOptions)
		}
		set.Prompts = append(set.Prompts, p)
	}
	return set, nil
}
