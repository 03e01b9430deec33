package demo

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/kvloom/kvloom/kvcache"
)

// Options configure Run. Zero values take the defaults in brackets: the
// demo `make demo` runs needs nothing but ModelDir.
type Options struct {
	// ModelDir is the llama2.c model directory (checkpoint and tokenizer);
	// required.
	ModelDir string
	// Conversations is the number of chat conversations [6]; Turns the
	// turns of each [5]; Reply the tokens of each model reply [24].
	Conversations, Turns, Reply int
	// Docs is the number of stories stored as shared RAG chunks [24];
	// Prompts the RAG prompts built from them [32], each of 2..MaxDocs
	// stories [6, or Docs when fewer] and a cue.
	Docs, Prompts, MaxDocs int
	// Continue is the number of continuation positions scored after each
	// RAG prompt [32].
	Continue int
	// Recompute is the recompute policy RAG requests ask for; empty means
	// the daemon's default (ratio:0.15).
	Recompute string
	// Seed drives the documents, the prompts and the chat turns [1].
	Seed uint64
	// Keep keeps the daemon's data directory (disk tier, index journal)
	// for inspection instead of removing it.
	Keep bool
	// TempDir is where the demo's directories are made; empty means
	// os.TempDir.
	TempDir string
	// Progress receives a progress bar (a terminal); nil shows none.
	Progress io.Writer
	// Logger receives the daemon's logs; nil discards them.
	Logger *slog.Logger
	// Version is what the daemon reports as its version; empty means "dev".
	Version string
}

// userTexts are what a chat user adds after the model's reply; each turn
// picks one with the run's seed. They are short story prompts, the only
// kind of text the tiny model knows.
var userTexts = []string{
	"Then her mom said,", "But the little dog", "The next day,", "After that, they went to",
	"Suddenly,", "At the end of the day,", "Her friend asked,", "So the boy",
}

func (o *Options) defaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.Conversations, 6)
	def(&o.Turns, 5)
	def(&o.Reply, 24)
	def(&o.Docs, 24)
	def(&o.Prompts, 32)
	def(&o.MaxDocs, min(6, max(o.Docs, 2)))
	def(&o.Continue, 32)
	if o.Seed == 0 {
		o.Seed = 1
	}
	switch {
	case o.ModelDir == "":
		return fmt.Errorf("no model directory: %w", ErrOptions)
	case o.Conversations < 1 || o.Turns < 2 || o.Reply < 1:
		return fmt.Errorf("%d conversations of %d turns, replies of %d tokens: want >= 1, >= 2, >= 1: %w", o.Conversations, o.Turns, o.Reply, ErrOptions)
	case o.Docs < 2 || o.Prompts < 1:
		return fmt.Errorf("%d documents, %d RAG prompts: want >= 2 and >= 1: %w", o.Docs, o.Prompts, ErrOptions)
	case o.MaxDocs < 2 || o.MaxDocs > o.Docs:
		return fmt.Errorf("up to %d documents per prompt from %d: want 2 <= max <= documents: %w", o.MaxDocs, o.Docs, ErrOptions)
	case o.Continue < 1:
		return fmt.Errorf("%d continuation positions: want >= 1: %w", o.Continue, ErrOptions)
	}
	if o.Recompute != "" {
		if _, err := kvcache.ParsePolicy(o.Recompute); err != nil {
			return fmt.Errorf("recompute %q: %w: %w", o.Recompute, err, ErrOptions)
		}
	}
	return nil
}
