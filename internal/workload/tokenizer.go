package workload

import (
	"fmt"
	"sync"

	"github.com/kvloom/kvloom/matcher"
	"github.com/tiktoken-go/tokenizer"
)

// Encoding is the tokenizer every workload uses.
const Encoding = "cl100k_base"

// Vocab is the size of cl100k_base's id space, special tokens included:
// every token Tokenizer returns is below it.
const Vocab = 100277

// Tokenizer encodes text with cl100k_base. Its vocabulary is compiled into
// the binary (tiktoken-go embeds it), so it never touches the network. It is
// safe for concurrent use: each call borrows its own codec.
type Tokenizer struct {
	pool sync.Pool // tokenizer.Codec
}

// NewTokenizer returns a cl100k_base tokenizer.
func NewTokenizer() (*Tokenizer, error) {
	c, err := tokenizer.Get(tokenizer.Cl100kBase)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", Encoding, err)
	}
	t := &Tokenizer{}
	t.pool.Put(c)
	return t, nil
}

// Encode returns the tokens of text.
func (t *Tokenizer) Encode(text string) ([]matcher.Token, error) {
	c, ok := t.pool.Get().(tokenizer.Codec)
	if !ok {
		var err error
		if c, err = tokenizer.Get(tokenizer.Cl100kBase); err != nil {
			return nil, fmt.Errorf("load tokenizer %s: %w", Encoding, err)
		}
	}
	defer t.pool.Put(c)
	ids, _, err := c.Encode(text)
	if err != nil {
		return nil, fmt.Errorf("tokenize %d bytes with %s: %w", len(text), Encoding, err)
	}
	out := make([]matcher.Token, len(ids))
	for i, id := range ids {
		out[i] = matcher.Token(id)
	}
	return out, nil
}
