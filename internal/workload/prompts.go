package workload

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/kvloom/kvloom/matcher"
)

// MaxPromptLine bounds one line of a prompts file.
const MaxPromptLine = 64 << 20

// InputPrompt is one prompt of a prompts file: exactly one of Text (to be
// tokenized with cl100k_base) and Tokens (token ids) is set.
type InputPrompt struct {
	ID     string
	Text   string
	Tokens []matcher.Token
}

type promptLine struct {
	ID     *string          `json:"id,omitempty"`
	Text   *string          `json:"text,omitempty"`
	Tokens *[]matcher.Token `json:"tokens,omitempty"`
}

// ParsePrompts reads a prompts file: JSON Lines, one object per line,
//
//	{"id": "q1", "text": "…"}        text, tokenized with cl100k_base
//	{"id": "q2", "tokens": [1, 2, 3]} token ids
//
// "id" is optional (default "line N"); exactly one of "text" and "tokens"
// must be present and non-empty; other fields are rejected. Blank lines are
// skipped. Errors wrap ErrPromptsFile and name the line; on error the
// result is nil.
func ParsePrompts(r io.Reader) ([]InputPrompt, error) {
	var out []InputPrompt
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxPromptLine)
	ids := map[string]int{}
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		p, err := parsePromptLine(line, n)
		if err != nil {
			return nil, err
		}
		if prev, dup := ids[p.ID]; dup {
			return nil, fmt.Errorf("line %d: id %q already used on line %d: %w", n, p.ID, prev, ErrPromptsFile)
		}
		ids[p.ID] = n
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read prompts (lines of at most %d bytes): %w: %w", MaxPromptLine, ErrPromptsFile, err)
	}
	return out, nil
}

func parsePromptLine(line []byte, n int) (InputPrompt, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var pl promptLine
	if err := dec.Decode(&pl); err != nil {
		return InputPrompt{}, fmt.Errorf("line %d: %w: %w", n, ErrPromptsFile, err)
	}
	if dec.More() {
		return InputPrompt{}, fmt.Errorf("line %d: more than one JSON value: %w", n, ErrPromptsFile)
	}
	p := InputPrompt{ID: "line " + strconv.Itoa(n)}
	if pl.ID != nil {
		if *pl.ID == "" {
			return InputPrompt{}, fmt.Errorf("line %d: empty \"id\": %w", n, ErrPromptsFile)
		}
		p.ID = *pl.ID
	}
	switch {
	case pl.Text != nil && pl.Tokens != nil:
		return InputPrompt{}, fmt.Errorf("line %d (%s): both \"text\" and \"tokens\"; give one: %w", n, p.ID, ErrPromptsFile)
	case pl.Text != nil:
		if *pl.Text == "" {
			return InputPrompt{}, fmt.Errorf("line %d (%s): empty \"text\": %w", n, p.ID, ErrPromptsFile)
		}
		p.Text = *pl.Text
	case pl.Tokens != nil:
		if len(*pl.Tokens) == 0 {
			return InputPrompt{}, fmt.Errorf("line %d (%s): empty \"tokens\": %w", n, p.ID, ErrPromptsFile)
		}
		p.Tokens = *pl.Tokens
	default:
		return InputPrompt{}, fmt.Errorf("line %d (%s): neither \"text\" nor \"tokens\": %w", n, p.ID, ErrPromptsFile)
	}
	return p, nil
}

// FormatPrompts writes prompts in the format ParsePrompts reads.
func FormatPrompts(w io.Writer, prompts []InputPrompt) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, p := range prompts {
		pl := promptLine{ID: &p.ID}
		if p.Tokens != nil {
			pl.Tokens = &p.Tokens
		} else {
			pl.Text = &p.Text
		}
		if err := enc.Encode(pl); err != nil {
			return fmt.Errorf("write prompt %s: %w", p.ID, err)
		}
	}
	return nil
}
