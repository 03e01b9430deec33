package matcher_test

import (
	"fmt"
	"slices"
	"time"

	"github.com/kvloom/kvloom/matcher"
)

// tokens returns n deterministic stand-in token ids starting at base.
func tokens(base, n int) []matcher.Token {
	t := make([]matcher.Token, n)
	for i := range t {
		t[i] = matcher.Token(base + i*7919%100003)
	}
	return t
}

func ExampleNewSalt() {
	model := []byte("0123456789abcdef") // kvcache.ModelSpec.Fingerprint
	alice, _ := matcher.NewSalt(model, "alice")
	shared := alice.Shared()
	fmt.Println(alice.IsShared(), shared.IsShared(), alice.Model == shared.Model)
	// Output: false true true
}

func ExampleChunkKeyOf() {
	salt, _ := matcher.NewSalt([]byte("0123456789abcdef"), "alice")
	doc := tokens(1000, 300)
	// The key depends on the salt and the tokens, not on where they sit.
	k := matcher.ChunkKeyOf(salt, doc)
	fmt.Println(k == matcher.ChunkKeyOf(salt, slices.Clone(doc)), k == matcher.ChunkKeyOf(salt.Shared(), doc))
	// Output: true false
}

func ExamplePrefixKeys() {
	salt, _ := matcher.NewSalt([]byte("0123456789abcdef"), "alice")
	prompt := tokens(1, 600)
	keys, _ := matcher.PrefixKeys(salt, prompt, 256, nil)
	// Two full blocks; the 88 tokens after them have no key yet.
	fmt.Println(len(keys))
	// Changing a token of block 0 changes every later key.
	other := slices.Clone(prompt)
	other[0]++
	keys2, _ := matcher.PrefixKeys(salt, other, 256, nil)
	fmt.Println(keys[0] != keys2[0], keys[1] != keys2[1])
	// Output:
	// 2
	// true true
}

func ExampleDynamoBlockHashes() {
	toks := make([]matcher.Token, 16)
	for i := range toks {
		toks[i] = matcher.Token(i)
	}
	// XXH3-64 with seed 1337 over the little-endian tokens: the value
	// NVIDIA Dynamo's router computes for this block.
	fmt.Println(matcher.DynamoBlockHashes(toks, matcher.DynamoBlockSize, nil))
	// Output: [15310707395893867146]
}

func ExampleAnchorParams_Anchors() {
	p := matcher.DefaultAnchorParams()
	doc := tokens(1000, 300)
	// The same document inside two different prompts selects the same
	// anchors, shifted by its offset: that is how FindAll finds a chunk
	// anywhere without separators.
	a := p.Anchors(slices.Concat(tokens(5, 40), doc), nil)
	b := p.Anchors(slices.Concat(tokens(9, 111), doc), nil)
	shared := 0
	for _, x := range a {
		for _, y := range b {
			if x.FP == y.FP && x.Off-40 == y.Off-111 {
				shared++
			}
		}
	}
	fmt.Println(p.MinLen(), shared > 0)
	// Output: 64 true
}

func ExampleIndex_FindAll() {
	ix, _ := matcher.New(matcher.Options{})
	salt, _ := matcher.NewSalt([]byte("0123456789abcdef"), "alice")
	system := tokens(7, 512)
	docA, docB := tokens(1000, 300), tokens(50000, 200)
	keys, _ := ix.Add(
		matcher.Entry{Salt: salt.Shared(), Tokens: system, Prefix: true}, // shared system prompt
		matcher.Entry{Salt: salt, Tokens: docA},
		matcher.Entry{Salt: salt.Shared(), Tokens: docB},
	)
	// A prompt: the system prompt, a question, docB, part of docA.
	prompt := slices.Concat(system, tokens(90000, 20), docB, docA[100:250])
	ms, _ := ix.FindAll(salt, prompt)
	for _, m := range ms {
		name := map[matcher.ChunkKey]string{keys[1]: "docA", keys[2]: "docB"}[m.Chunk]
		if m.Prefix {
			name = "system prompt"
		}
		fmt.Printf("[%d,%d) %s from offset %d (shared %v)\n", m.ReqOff, m.End(), name, m.ChunkOff, m.Shared)
	}
	// Output:
	// [0,512) system prompt from offset 0 (shared true)
	// [532,732) docB from offset 0 (shared true)
	// [732,882) docA from offset 100 (shared false)
}

func ExampleCover() {
	k := func(b byte) matcher.ChunkKey { return matcher.ChunkKey{b} }
	ms := []matcher.Match{
		{ReqOff: 0, Len: 256, Chunk: k(1), Prefix: true},
		{ReqOff: 200, Len: 300, Chunk: k(2)}, // overlaps the prefix
		{ReqOff: 256, Len: 240, Chunk: k(3)},
		{ReqOff: 500, Len: 100, Chunk: k(4)},
	}
	cover := matcher.Cover(ms)
	for _, m := range cover {
		fmt.Printf("[%d,%d) ", m.ReqOff, m.End())
	}
	fmt.Println(matcher.Reused(cover))
	// Output: [0,256) [256,496) [500,600) 596
}

func ExampleHot() {
	h, _ := matcher.NewHot(matcher.HotOptions{MinCount: 3})
	salt, _ := matcher.NewSalt([]byte("0123456789abcdef"), "alice")
	doc := tokens(1000, 400) // retrieved again and again; nobody indexed it
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		prompt := slices.Concat(tokens(20000*(i+1), 100), doc, tokens(30000*(i+1), 50))
		_ = h.Observe(now, salt, prompt)
		now = now.Add(time.Second)
	}
	for _, c := range h.Top(now, 3) {
		fmt.Println(len(c.Tokens), slices.Equal(c.Tokens, doc), c.Key == matcher.ChunkKeyOf(salt, doc))
	}
	// Output: 400 true true
}

func ExampleCommonPrefix() {
	stored := []matcher.Token{11, 12, 13, 14, 15, 16}
	prompt := []matcher.Token{11, 12, 13, 14, 99, 16}
	// A match anchored at both starts extends four tokens to the right.
	fmt.Println(matcher.CommonPrefix(prompt, stored))
	// Output: 4
}

func ExampleCommonSuffix() {
	stored := []matcher.Token{11, 12, 13, 14, 15, 16}
	prompt := []matcher.Token{7, 8, 13, 14, 15, 16}
	// A match anchored at both ends extends four tokens to the left.
	fmt.Println(matcher.CommonSuffix(prompt, stored))
	// Output: 4
}
