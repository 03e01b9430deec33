package engine

import (
	"slices"
	"testing"
)

// encodeNaive is run.c's merge loop verbatim: scan every adjacent pair,
// merge the best (strictly higher score wins, so the leftmost on ties),
// repeat. Encode must agree with it on every input.
func encodeNaive(t *Tokenizer, text string, bos, eos bool) []Token {
	toks := t.initialTokens(text, bos)
	for {
		best, bestID, bestIdx := float32(-1e10), Token(0), -1
		for i := 0; i+1 < len(toks); i++ {
			id, ok := t.lookup[t.Pieces[toks[i]]+t.Pieces[toks[i+1]]]
			if ok && t.Scores[id] > best {
				best, bestID, bestIdx = t.Scores[id], id, i
			}
		}
		if bestIdx < 0 {
			break
		}
		toks[bestIdx] = bestID
		toks = slices.Delete(toks, bestIdx+1, bestIdx+2)
	}
	if eos {
		toks = append(toks, TokenEOS)
	}
	return toks
}

func TestEncode(t *testing.T) {
	_, tok := openStories(t)
	for _, tc := range []struct {
		text     string
		bos, eos bool
		want     []Token
	}{
		{"Once upon a time", true, false, []Token{1, 403, 407, 261, 378}},
		{"", true, false, []Token{1}},
		{"", false, true, []Token{2}},
	} {
		if got := tok.Encode(tc.text, tc.bos, tc.eos); !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
		}
	}
	for _, text := range []string{
		"Once upon a time", "Zoo", "Lily's mom said, \"Lily, let's go to the park.\"",
		"héllo wörld ™ 日本", "\x00\xff\xfe broken \xc3", "  two  spaces\n\nnewlines\t",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	} {
		got := tok.Encode(text, true, false)
		if want := encodeNaive(tok, text, true, false); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, run.c's loop gives %v", text, got, want)
		}
		dec, err := tok.Decode(TokenBOS, got[1:])
		if err != nil {
			t.Fatal(err)
		}
		if dec != text {
			t.Errorf("Decode(Encode(%q)) = %q", text, dec)
		}
	}
}

func TestDecodePieces(t *testing.T) {
	_, tok := openStories(t)
	for _, tc := range []struct {
		prev, tok Token
		want      string
	}{
		{TokenBOS, 403, "Once"}, // leading space dropped after BOS
		{403, 407, " upon"},
		{5, 3 + 'A', "A"}, // byte fallback
		{TokenBOS, 3 + ' ', " "},
	} {
		got, err := tok.Piece(tc.prev, tc.tok)
		if err != nil || got != tc.want {
			t.Errorf("Piece(%d, %d) = %q, %v; want %q", tc.prev, tc.tok, got, err, tc.want)
		}
	}
	if _, err := tok.Piece(0, 512); err == nil {
		t.Error("token 512 decoded")
	}
	for _, tc := range []struct{ in, want string }{{"a", "a"}, {"\x01", ""}, {"\n", "\n"}, {"\x7f", ""}, {"\xe2", "\xe2"}, {"ab", "ab"}} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
