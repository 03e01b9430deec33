package engine

import (
	"context"
	"fmt"
)

// GenerateOptions describes one run of Generate.
type GenerateOptions struct {
	// Prompt is encoded with BOS and the dummy-prefix space; empty means
	// BOS alone, as run.c without -i.
	Prompt string
	// Steps is run.c's -n: the number of positions, prompt tokens included
	// (BOS is position 0). Zero or more than seq_len means seq_len.
	Steps int
	// Sampler picks tokens after the prompt; nil means greedy.
	Sampler *Sampler
}

// Generate runs run.c's generate loop: it feeds the prompt, then samples
// until Steps positions are done or the model emits BOS, which ends a
// story. emit receives each decoded piece in order (prompt pieces first);
// an error from emit stops generation. Generate returns every token after
// BOS that it emitted, prompt tokens included.
func (e *Engine) Generate(ctx context.Context, tok *Tokenizer, opts GenerateOptions, emit func(piece string) error) ([]Token, error) {
	c := e.m.Config
	if tok.VocabSize() != c.VocabSize {
		return nil, fmt.Errorf("generate: tokenizer has %d pieces, model vocabulary %d: %w", tok.VocabSize(), c.VocabSize, ErrInconsistent)
	}
	steps := opts.Steps
	if steps <= 0 || steps > c.SeqLen {
		steps = c.SeqLen
	}
	sampler := opts.Sampler
	if sampler == nil {
		sampler = &Sampler{}
	}
	prompt := tok.Encode(opts.Prompt, true, false)
	if len(prompt) > c.SeqLen {
		return nil, fmt.Errorf("generate: prompt is %d tokens, seq_len is %d: %w", len(prompt), c.SeqLen, ErrContextFull)
	}
	var out []Token
	say := func(prev, next Token) error {
		p, err := tok.Piece(prev, next)
		if err != nil {
			return err
		}
		out = append(out, next)
		if emit != nil {
			return emit(p)
		}
		return nil
	}
	// The prompt's pieces print before anything is computed (run.c prints
	// prompt[pos+1] after forward(pos), whose logits it ignores).
	for pos := 0; pos < len(prompt)-1 && pos < steps; pos++ {
		if err := say(prompt[pos], prompt[pos+1]); err != nil {
			return out, fmt.Errorf("generate: %w", err)
		}
	}
	if steps < len(prompt) {
		return out, nil
	}
	s := e.NewState()
	logits, err := s.Forward(prompt)
	if err != nil {
		return out, fmt.Errorf("generate: %w", err)
	}
	token := prompt[len(prompt)-1]
	for pos := len(prompt) - 1; pos < steps; pos++ {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("generate: %w", err)
		}
		next := sampler.Sample(logits)
		if next == TokenBOS {
			break
		}
		if err := say(token, next); err != nil {
			return out, fmt.Errorf("generate: %w", err)
		}
		token = next
		if pos+1 < steps {
			if logits, err = s.Forward([]Token{next}); err != nil {
				return out, fmt.Errorf("generate: %w", err)
			}
		}
	}
	return out, nil
}

// Greedy appends up to n argmax tokens to the sequence in s, starting from
// logits (the logits after s's last position), and returns them. It stops
// early when the model emits BOS or the context is full; BOS is not
// returned.
func (s *State) Greedy(logits []float32, n int) ([]Token, error) {
	out := make([]Token, 0, n)
	for len(out) < n {
		next := Argmax(logits)
		if next == TokenBOS {
			break
		}
		out = append(out, next)
		if len(out) == n || s.n >= s.c.SeqLen {
			break
		}
		var err error
		if logits, err = s.Forward([]Token{next}); err != nil {
			return out, err
		}
	}
	return out, nil
}
