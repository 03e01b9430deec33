package engine

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strings"

	"github.com/kvloom/kvloom/matcher"
)

// Token is a token id, the same type the matcher hashes.
type Token = matcher.Token

// Special token ids of llama2.c's SentencePiece vocabularies.
const (
	TokenUnknown Token = 0
	TokenBOS     Token = 1
	TokenEOS     Token = 2
	// byteBase is the id of the byte-fallback piece <0x00>; byte b is
	// byteBase+b.
	byteBase = 3
	// minVocab is the smallest vocabulary that holds the special and
	// byte-fallback pieces.
	minVocab = byteBase + 256
	// maxPieceLen bounds one piece; llama2.c vocabularies stay far below.
	maxPieceLen = 1 << 10
)

// Tokenizer is a llama2.c tokenizer file (tokenizer.bin, tok512.bin):
// pieces with merge scores, encoded and decoded exactly as run.c does.
type Tokenizer struct {
	MaxTokenLength int
	Pieces         []string
	Scores         []float32
	lookup         map[string]Token // piece → first id holding it, as run.c's bsearch on unique pieces
}

// ParseTokenizer decodes a llama2.c tokenizer file. vocabSize is the
// model's vocabulary size (the file does not store it); zero reads pieces
// until the end of the file. The file must hold the special pieces at ids
// 0..2 and the 256 byte-fallback pieces <0x00>..<0xFF> at ids 3..258, no
// piece longer than max_token_length, and nothing after the last piece.
func ParseTokenizer(b []byte, vocabSize int) (*Tokenizer, error) {
	if vocabSize < 0 || vocabSize > maxVocab {
		return nil, fmt.Errorf("parse tokenizer: vocab size %d, want 0..%d: %w", vocabSize, maxVocab, ErrBadInput)
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("parse tokenizer: max_token_length needs 4 bytes, file has %d: %w", len(b), ErrTruncated)
	}
	maxLen := int32(binary.LittleEndian.Uint32(b))
	if maxLen <= 0 || maxLen > maxPieceLen {
		return nil, fmt.Errorf("parse tokenizer: max_token_length = %d, want 1..%d: %w", maxLen, maxPieceLen, ErrInconsistent)
	}
	t := &Tokenizer{MaxTokenLength: int(maxLen)}
	off := 4
	for i := 0; vocabSize == 0 && off < len(b) || i < vocabSize; i++ {
		if len(t.Pieces) >= maxVocab {
			return nil, fmt.Errorf("parse tokenizer: more than %d pieces: %w", maxVocab, ErrInconsistent)
		}
		if len(b)-off < 8 {
			return nil, fmt.Errorf("parse tokenizer: piece %d at offset %d needs an 8-byte score and length, %d bytes left: %w", i, off, len(b)-off, ErrTruncated)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
		n := int32(binary.LittleEndian.Uint32(b[off+4:]))
		if math.IsNaN(float64(score)) {
			return nil, fmt.Errorf("parse tokenizer: piece %d at offset %d has a NaN score: %w", i, off, ErrInconsistent)
		}
		if n <= 0 || n > maxLen {
			return nil, fmt.Errorf("parse tokenizer: piece %d at offset %d has length %d, want 1..max_token_length %d: %w", i, off+4, n, maxLen, ErrInconsistent)
		}
		off += 8
		if len(b)-off < int(n) {
			return nil, fmt.Errorf("parse tokenizer: piece %d at offset %d needs %d bytes, %d left: %w", i, off, n, len(b)-off, ErrTruncated)
		}
		t.Pieces = append(t.Pieces, string(b[off:off+int(n)]))
		t.Scores = append(t.Scores, score)
		off += int(n)
	}
	if off != len(b) {
		return nil, fmt.Errorf("parse tokenizer: %d trailing bytes after %d pieces at offset %d: %w", len(b)-off, len(t.Pieces), off, ErrInconsistent)
	}
	if len(t.Pieces) < minVocab {
		return nil, fmt.Errorf("parse tokenizer: %d pieces, want at least %d (specials and byte fallback): %w", len(t.Pieces), minVocab, ErrInconsistent)
	}
	for i := range 256 {
		if want := fmt.Sprintf("<0x%02X>", i); t.Pieces[byteBase+i] != want {
			return nil, fmt.Errorf("parse tokenizer: piece %d is %q, want byte-fallback piece %q: %w", byteBase+i, t.Pieces[byteBase+i], want, ErrInconsistent)
		}
	}
	t.lookup = make(map[string]Token, len(t.Pieces))
	for i, p := range t.Pieces {
		if _, dup := t.lookup[p]; !dup {
			t.lookup[p] = Token(i)
		}
	}
	return t, nil
}

// LoadTokenizer reads and parses the tokenizer file at path.
func LoadTokenizer(path string, vocabSize int) (*Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := ParseTokenizer(b, vocabSize)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	return t, nil
}

// MarshalBinary encodes the tokenizer in llama2.c's format.
func (t *Tokenizer) MarshalBinary() ([]byte, error) {
	if len(t.Pieces) != len(t.Scores) {
		return nil, fmt.Errorf("marshal tokenizer: %d pieces but %d scores: %w", len(t.Pieces), len(t.Scores), ErrInconsistent)
	}
	out := binary.LittleEndian.AppendUint32(nil, uint32(t.MaxTokenLength))
	for i, p := range t.Pieces {
		out = binary.LittleEndian.AppendUint32(out, math.Float32bits(t.Scores[i]))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out, nil
}

// VocabSize is the number of pieces.
func (t *Tokenizer) VocabSize() int { return len(t.Pieces) }

// Encode tokenizes text as run.c's encode does: BOS first when bos is
// set, a dummy-prefix space when text is not empty, one piece per UTF-8
// code point (byte-fallback pieces where the vocabulary lacks it), then
// merges of the adjacent pair whose merged piece scores highest (the
// leftmost on ties) until no pair merges; EOS last when eos is set.
//
// The merging loop is run.c's O(n²) scan done with a heap over adjacent
// pairs; encodeNaive in the tests is the scan itself and a fuzz target
// holds the two equal.
func (t *Tokenizer) Encode(text string, bos, eos bool) []Token {
	toks := t.initialTokens(text, bos)
	toks = t.merge(toks)
	if eos {
		toks = append(toks, TokenEOS)
	}
	return toks
}

// initialTokens is run.c's encode up to the merge loop.
func (t *Tokenizer) initialTokens(text string, bos bool) []Token {
	toks := make([]Token, 0, len(text)+3)
	if bos {
		toks = append(toks, TokenBOS)
	}
	if text == "" {
		return toks
	}
	if id, ok := t.lookup[" "]; ok {
		toks = append(toks, id)
	} else {
		toks = append(toks, byteBase+' ')
	}
	// run.c groups a byte with the continuation bytes (10xxxxxx) that
	// follow it, at most 4 bytes, whether or not they form valid UTF-8.
	for i := 0; i < len(text); {
		j := i + 1
		for j < len(text) && text[j]&0xC0 == 0x80 && j-i < 4 {
			j++
		}
		if id, ok := t.lookup[text[i:j]]; ok {
			toks = append(toks, id)
		} else {
			for k := i; k < j; k++ {
				toks = append(toks, byteBase+Token(text[k]))
			}
		}
		i = j
	}
	return toks
}

// pair is a candidate merge of the node at left with its right neighbour.
type pair struct {
	score float32
	left  int // index of the left node; orders ties leftmost-first
	id    Token
	gen   [2]uint32 // generations of both nodes when queued; stale if changed
}

type pairHeap []pair

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].score != h[j].score {
		return h[i].score > h[j].score
	}
	return h[i].left < h[j].left
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pair)) }
func (h *pairHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	*h = old[:len(old)-1]
	return p
}

// merge applies run.c's merge rule. Nodes keep their original index, so
// "leftmost" in the current sequence is "smallest index".
func (t *Tokenizer) merge(toks []Token) []Token {
	n := len(toks)
	if n < 2 {
		return toks
	}
	next := make([]int, n)
	prev := make([]int, n)
	gen := make([]uint32, n)
	alive := make([]bool, n)
	for i := range n {
		next[i], prev[i], alive[i] = i+1, i-1, true
	}
	h := make(pairHeap, 0, n)
	var sb strings.Builder
	candidate := func(l int) (pair, bool) {
		r := next[l]
		if r >= n {
			return pair{}, false
		}
		sb.Reset()
		sb.WriteString(t.Pieces[toks[l]])
		sb.WriteString(t.Pieces[toks[r]])
		id, ok := t.lookup[sb.String()]
		// run.c starts from best_score = -1e10 and needs a strictly
		// higher score, so pieces scored at or below it never merge.
		if !ok || !(t.Scores[id] > -1e10) {
			return pair{}, false
		}
		return pair{score: t.Scores[id], left: l, id: id, gen: [2]uint32{gen[l], gen[r]}}, true
	}
	for i := range n - 1 {
		if p, ok := candidate(i); ok {
			h = append(h, p)
		}
	}
	heap.Init(&h)
	for h.Len() > 0 {
		p := heap.Pop(&h).(pair)
		l := p.left
		r := next[l]
		if !alive[l] || r >= n || gen[l] != p.gen[0] || gen[r] != p.gen[1] {
			continue // stale: one of the two nodes merged since it was queued
		}
		toks[l] = p.id
		gen[l]++
		alive[r] = false
		next[l] = next[r]
		if next[r] < n {
			prev[next[r]] = l
		}
		if prev[l] >= 0 {
			if q, ok := candidate(prev[l]); ok {
				heap.Push(&h, q)
			}
		}
		if q, ok := candidate(l); ok {
			heap.Push(&h, q)
		}
	}
	out := toks[:0]
	for i := 0; i < n; i = next[i] {
		out = append(out, toks[i])
	}
	return out
}

// Piece returns the bytes token decodes to after prev, as run.c's decode:
// the leading space of the piece after BOS is dropped and byte-fallback
// pieces become their byte.
func (t *Tokenizer) Piece(prev, token Token) (string, error) {
	if int(token) >= len(t.Pieces) {
		return "", fmt.Errorf("decode token %d, vocabulary has %d: %w", token, len(t.Pieces), ErrBadToken)
	}
	if token >= byteBase && token < byteBase+256 {
		return string([]byte{byte(token - byteBase)}), nil
	}
	p := t.Pieces[token]
	if prev == TokenBOS && strings.HasPrefix(p, " ") {
		p = p[1:]
	}
	return p, nil
}

// Decode concatenates the pieces of tokens, each decoded after the one
// before it (the first after prev).
func (t *Tokenizer) Decode(prev Token, tokens []Token) (string, error) {
	var sb strings.Builder
	for _, tok := range tokens {
		p, err := t.Piece(prev, tok)
		if err != nil {
			return "", err
		}
		sb.WriteString(p)
		prev = tok
	}
	return sb.String(), nil
}

// Printable filters a piece the way run.c's safe_printf does, so that
// output compares with llama2.c's: a piece that is a single control byte
// other than whitespace prints nothing. Unlike run.c it keeps single bytes
// at or above 0x80, which byte-fallback pieces use to spell UTF-8.
func Printable(piece string) string {
	if len(piece) != 1 {
		return piece
	}
	c := piece[0]
	if c >= 0x80 || (c >= 0x20 && c < 0x7F) || c == ' ' || (c >= '\t' && c <= '\r') {
		return piece
	}
	return ""
}
