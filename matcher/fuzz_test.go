package matcher

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
)

// FuzzFindAll builds an index and prompts from the fuzzer's bytes, with a
// tiny vocabulary so that repeats, periodic runs and near-duplicates are
// common, and compares Find with the brute-force oracle.
func FuzzFindAll(f *testing.F) {
	f.Add([]byte("\x00\x01abcabcabcabcabcabcabcabcabcabc\xffxxabcabcabcabcabcabcabcabcabcabc"), uint8(0))
	f.Add(bytes.Repeat([]byte{7}, 200), uint8(1))
	f.Add([]byte("0123456789abcdefghijklmnopqrstuvwxyz|zyxwvutsrqponmlkjihgfedcba9876543210|0123456789abcdefghijklmnopqrstuvwxyz"), uint8(2))
	f.Add([]byte("\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xe0\xf0\x10\x20\x30\x40\x50\x60\x70\x80\x90|\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0\xe0\xf1"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		if len(data) > 2000 {
			return
		}
		opts := []Options{
			{MinLen: 8, AnchorK: 4, BlockSize: 16},
			{MinLen: 12, AnchorK: 4, BlockSize: 16, MaxMatches: 3},
			{MinLen: 10, AnchorK: 5, BlockSize: 16, MaxCandidates: 40},
			{MinLen: 6, AnchorK: 6, BlockSize: 16},
		}[mode%4]
		vocab := Token(2 + mode/4%6)
		salts := []Salt{testSalt(t, "a"), testSalt(t, "b"), testSalt(t, "")}
		// '|' separates pieces: all but the last are entries, the last
		// is the prompt. A piece's first byte picks its salt and kind.
		pieces := bytes.Split(data, []byte("|"))
		ix := mustIndex(t, opts)
		o := newOracle(t, opts)
		toToks := func(b []byte) []Token {
			out := make([]Token, len(b))
			for i, c := range b {
				out[i] = Token(c) % vocab
			}
			return out
		}
		for _, p := range pieces[:len(pieces)-1] {
			if len(p) < 2 {
				continue
			}
			e := Entry{Salt: salts[int(p[0])%3], Tokens: toToks(p[1:]), Prefix: p[0]&0x80 != 0}
			keys, err := ix.Add(e)
			if err != nil {
				continue // too short: nothing changed
			}
			if k := o.add(e); k != keys[0] {
				t.Fatalf("key %s, oracle %s", keys[0], k)
			}
		}
		prompt := toToks(pieces[len(pieces)-1])
		if len(prompt) == 0 {
			return
		}
		for _, s := range salts {
			checkAgainstOracle(t, ix, o, s, prompt, fmt.Sprintf("salt %v", s))
		}
	})
}

// FuzzAnchors compares the rolling implementation with the definition.
func FuzzAnchors(f *testing.F) {
	f.Add([]byte("the quick brown fox jumps over the lazy dog"), uint8(4), uint8(5))
	f.Add(bytes.Repeat([]byte("ab"), 50), uint8(4), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, k, w uint8) {
		p := AnchorParams{K: int(k%16) + MinAnchorK, W: int(w%MaxAnchorW) + 1}
		toks := make([]Token, len(data))
		for i, c := range data {
			toks[i] = Token(c % 7)
		}
		if got, want := p.Anchors(toks, nil), refAnchors(p, toks); !slices.Equal(got, want) {
			t.Fatalf("%+v: Anchors differs from the definition at %d", p, firstDiff(got, want))
		}
	})
}

// FuzzParseSalt: salts arrive from the wire (KVLP, blob headers).
func FuzzParseSalt(f *testing.F) {
	s := testSalt(f, "a").Bytes()
	f.Add(s[:])
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSalt(b)
		if err != nil {
			if s != (Salt{}) {
				t.Fatal("error with a non-zero salt")
			}
			return
		}
		if enc := s.Bytes(); !bytes.Equal(enc[:], b) {
			t.Fatal("ParseSalt does not round-trip")
		}
	})
}

// FuzzParseChunkKey: keys arrive as text from config, CLIs and logs.
func FuzzParseChunkKey(f *testing.F) {
	f.Add(ChunkKeyOf(testSalt(f, "a"), []Token{1, 2, 3}).String())
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseChunkKey(s)
		if err != nil {
			if k != (ChunkKey{}) {
				t.Fatal("error with a non-zero key")
			}
			return
		}
		if k.String() != s && k.String() != hexLower(s) {
			t.Fatalf("ParseChunkKey(%q) does not round-trip: %s", s, k)
		}
	})
}

func hexLower(s string) string {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(b)
}
