package engine

import (
	"testing"

	"github.com/kvloom/kvloom/internal/benchutil"
)

// benchTokens is a 256-token story the model wrote, so that prefill sees
// real text.
func benchTokens(b *testing.B, e *Engine, n int) []Token {
	b.Helper()
	s := e.NewState()
	logits, err := s.Forward([]Token{TokenBOS})
	if err != nil {
		b.Fatal(err)
	}
	toks := []Token{TokenBOS}
	for len(toks) < n {
		next := Argmax(logits)
		toks = append(toks, next)
		if logits, err = s.Forward([]Token{next}); err != nil {
			b.Fatal(err)
		}
	}
	return toks
}

func BenchmarkPrefill256(b *testing.B) {
	e, _ := openStories(b)
	toks := benchTokens(b, e, 256)
	s := e.NewState()
	b.ReportAllocs()
	for b.Loop() {
		s.Reset()
		if _, err := s.Forward(toks); err != nil {
			b.Fatal(err)
		}
	}
	benchutil.ReportRate(b, "tokens/s", float64(len(toks)))
}

func BenchmarkDecode(b *testing.B) {
	e, _ := openStories(b)
	toks := benchTokens(b, e, 128)
	s := e.NewState()
	b.ReportAllocs()
	for b.Loop() {
		s.Reset()
		for _, t := range toks {
			if _, err := s.Forward([]Token{t}); err != nil {
				b.Fatal(err)
			}
		}
	}
	benchutil.ReportRate(b, "tokens/s", float64(len(toks)))
}
