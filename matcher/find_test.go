package matcher

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func testSalt(t testing.TB, tenant string) Salt {
	t.Helper()
	fp := []byte("model-fingerprint-for-tests")
	if tenant == "" {
		s, err := SharedSalt(fp)
		if err != nil {
			t.Fatalf("shared salt: %v", err)
		}
		return s
	}
	s, err := NewSalt(fp, tenant)
	if err != nil {
		t.Fatalf("salt %q: %v", tenant, err)
	}
	return s
}

func mustIndex(t testing.TB, opts Options) *Index {
	t.Helper()
	ix, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	return ix
}

func mustAdd(t testing.TB, ix *Index, o *oracle, es ...Entry) []ChunkKey {
	t.Helper()
	keys, err := ix.Add(es...)
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	if o != nil {
		for i, e := range es {
			if k := o.add(e); k != keys[i] {
				t.Fatalf("Add returned key %s for entry %d, oracle %s", keys[i], i, k)
			}
		}
	}
	return keys
}

// seq returns n distinct-looking tokens starting at base.
func seq(base, n int) []Token {
	out := make([]Token, n)
	for i := range out {
		out[i] = Token(base + i*7919%100003)
	}
	return out
}

func TestFindAllCases(t *testing.T) {
	a := testSalt(t, "tenant-a")
	b := testSalt(t, "tenant-b")
	shared := a.Shared()
	doc := seq(1000, 200)
	doc2 := seq(50000, 150)
	other := seq(90000, 300)
	mutFirst := slices.Clone(doc)
	mutFirst[0]++
	mutLast := slices.Clone(doc)
	mutLast[len(mutLast)-1]++
	mutMid := slices.Clone(doc)
	mutMid[100]++
	sys := seq(7000, 600)

	type want struct{ req, n, off int }
	cases := []struct {
		name    string
		entries []Entry
		salt    Salt
		prompt  []Token
		want    []want // chunk matches, in order
		prefix  int    // expected prefix match length (0: none)
	}{
		{"whole chunk in the middle", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:50], doc, other[50:90]), []want{{50, 200, 0}}, 0},
		{"whole chunk at offset 0", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(doc, other[:10]), []want{{0, 200, 0}}, 0},
		{"prompt is the chunk", []Entry{{Salt: a, Tokens: doc}}, a, doc, []want{{0, 200, 0}}, 0},
		{"sub-range of a chunk", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:7], doc[30:130], other[7:20]), []want{{7, 100, 30}}, 0},
		{"sub-range exactly MinLen", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:7], doc[30:94], other[7:20]), []want{{7, 64, 30}}, 0},
		{"sub-range one short of MinLen", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:7], doc[30:93], other[7:20]), nil, 0},
		{"first token differs", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:5], mutFirst, other[5:9]), []want{{6, 199, 1}}, 0},
		{"last token differs", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:5], mutLast, other[5:9]), []want{{5, 199, 0}}, 0},
		{"middle token differs: two runs", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(other[:5], mutMid, other[5:9]), []want{{5, 100, 0}, {106, 99, 101}}, 0},
		{"two occurrences", []Entry{{Salt: a, Tokens: doc}}, a, slices.Concat(doc, other[:3], doc), []want{{0, 200, 0}, {203, 200, 0}}, 0},
		{"two chunks", []Entry{{Salt: a, Tokens: doc}, {Salt: a, Tokens: doc2}}, a, slices.Concat(doc2, other[:3], doc), []want{{0, 150, 0}, {153, 200, 0}}, 0},
		{"prompt shorter than MinLen", []Entry{{Salt: a, Tokens: doc}}, a, doc[:63], nil, 0},
		{"other tenant's chunk is invisible", []Entry{{Salt: b, Tokens: doc}}, a, slices.Concat(other[:5], doc), nil, 0},
		{"shared chunk is visible to a tenant", []Entry{{Salt: shared, Tokens: doc}}, a, slices.Concat(other[:5], doc), []want{{5, 200, 0}}, 0},
		{"tenant chunk is invisible under the shared salt", []Entry{{Salt: a, Tokens: doc}}, shared, slices.Concat(other[:5], doc), nil, 0},
		{"prefix chain, 2 of 3 blocks", []Entry{{Salt: a, Tokens: sys, Prefix: true}}, a, slices.Concat(sys[:520], other), nil, 512},
		{"shared prefix chain", []Entry{{Salt: shared, Tokens: sys, Prefix: true}}, a, slices.Concat(sys[:512], other), nil, 512},
		{"other tenant's prefix is invisible", []Entry{{Salt: b, Tokens: sys, Prefix: true}}, a, slices.Concat(sys[:512], other), nil, 0},
		{"prefix shorter than a block", []Entry{{Salt: a, Tokens: sys, Prefix: true}}, a, slices.Concat(sys[:255], other), nil, 0},
		{"prefix and chunk", []Entry{{Salt: a, Tokens: sys, Prefix: true}, {Salt: a, Tokens: doc}}, a, slices.Concat(sys[:300], doc), []want{{300, 200, 0}}, 256},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ix := mustIndex(t, Options{})
			o := newOracle(t, Options{})
			keys := mustAdd(t, ix, o, tc.entries...)
			got, err := ix.FindAll(tc.salt, tc.prompt)
			if err != nil {
				t.Fatalf("FindAll: %v", err)
			}
			var chunks []want
			prefix := 0
			for _, m := range got {
				if m.Prefix {
					prefix = m.Len
					continue
				}
				if !slices.Contains(keys, m.Chunk) {
					t.Errorf("match names key %s, not one of the added keys", m.Chunk)
				}
				chunks = append(chunks, want{m.ReqOff, m.Len, m.ChunkOff})
			}
			if !slices.Equal(chunks, tc.want) || prefix != tc.prefix {
				t.Errorf("chunk matches %v prefix %d, want %v prefix %d", chunks, prefix, tc.want, tc.prefix)
			}
			checkAgainstOracle(t, ix, o, tc.salt, tc.prompt, tc.name)
		})
	}
}

func TestFindAllPrefixKeyAndShared(t *testing.T) {
	a := testSalt(t, "tenant-a")
	sys := seq(7000, 512)
	ix := mustIndex(t, Options{})
	mustAdd(t, ix, nil, Entry{Salt: a.Shared(), Tokens: sys, Prefix: true})
	prompt := slices.Concat(sys, seq(1, 40))
	ms, err := ix.FindAll(a, prompt)
	if err != nil || len(ms) != 1 {
		t.Fatalf("FindAll = %v, %v; want one prefix match", ms, err)
	}
	keys, err := PrefixKeys(a.Shared(), prompt, DefaultBlockSize, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := ms[0]; !m.Prefix || !m.Shared || m.Len != 512 || m.Chunk != keys[1] {
		t.Fatalf("prefix match %+v, want Len 512, Shared, Chunk %s", m, keys[1])
	}
	// The tenant's own chain wins a tie with the shared one.
	mustAdd(t, ix, nil, Entry{Salt: a, Tokens: sys, Prefix: true})
	ms, err = ix.FindAll(a, prompt)
	if err != nil || len(ms) != 1 || ms[0].Shared {
		t.Fatalf("after adding the tenant's own chain: %+v, %v; want the tenant's match", ms, err)
	}
}

func TestFindAllBadInput(t *testing.T) {
	ix := mustIndex(t, Options{MaxPromptLen: 1000, Vocab: 50000})
	a := testSalt(t, "a")
	cases := []struct {
		name   string
		salt   Salt
		prompt []Token
		want   error
	}{
		{"empty prompt", a, nil, ErrEmpty},
		{"too long", a, make([]Token, 1001), ErrTooLong},
		{"token beyond vocabulary", a, []Token{1, 2, 50000}, ErrTokenRange},
		{"zero salt", Salt{}, []Token{1, 2, 3}, ErrZeroSalt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ix.FindAll(tc.salt, tc.prompt)
			if !errors.Is(err, tc.want) || ms != nil {
				t.Fatalf("FindAll = %v, %v; want nil, %v", ms, err, tc.want)
			}
		})
	}
	if _, err := ParseSalt(make([]byte, 15)); !errors.Is(err, ErrSaltSize) {
		t.Fatalf("ParseSalt of 15 bytes: %v, want ErrSaltSize", err)
	}
}

func TestAddBadInputChangesNothing(t *testing.T) {
	ix := mustIndex(t, Options{Vocab: 1000})
	a := testSalt(t, "a")
	good := Entry{Salt: a, Tokens: seq(1, 100)}
	for i := range good.Tokens {
		good.Tokens[i] %= 1000
	}
	mustAdd(t, ix, nil, good)
	cases := []struct {
		name string
		e    Entry
		want error
	}{
		{"short chunk", Entry{Salt: a, Tokens: make([]Token, 63)}, ErrTooShort},
		{"short prefix", Entry{Salt: a, Tokens: make([]Token, 255), Prefix: true}, ErrTooShort},
		{"empty", Entry{Salt: a}, ErrEmpty},
		{"vocab", Entry{Salt: a, Tokens: append(make([]Token, 99), 1000)}, ErrTokenRange},
		{"zero salt", Entry{Tokens: make([]Token, 100)}, ErrZeroSalt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			other := Entry{Salt: a, Tokens: make([]Token, 100)}
			keys, err := ix.Add(other, tc.e)
			if !errors.Is(err, tc.want) || keys != nil {
				t.Fatalf("Add = %v, %v; want nil, %v", keys, err, tc.want)
			}
			if ix.Len() != 1 {
				t.Fatalf("after a failed Add the index holds %d entries, want 1", ix.Len())
			}
		})
	}
}

func TestOptionsErrors(t *testing.T) {
	_, err := New(Options{MinLen: 2, BlockSize: 8, MaxPromptLen: -1, Vocab: -3, MaxMatches: -1, MaxCandidates: -1})
	if !errors.Is(err, ErrOptions) {
		t.Fatalf("New with bad options: %v, want ErrOptions", err)
	}
	for _, field := range []string{"MinLen", "BlockSize", "MaxPromptLen", "Vocab", "MaxMatches", "MaxCandidates"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if _, err := New(Options{MinLen: 64, AnchorK: 65}); !errors.Is(err, ErrOptions) {
		t.Errorf("AnchorK 65: %v, want ErrOptions", err)
	}
	ix := mustIndex(t, Options{MinLen: 8})
	if p := ix.AnchorParams(); p.K != 8 || p.W != 1 {
		t.Errorf("MinLen 8 gives anchor params %+v, want K=8 W=1", p)
	}
}

func TestRemove(t *testing.T) {
	a := testSalt(t, "a")
	ix := mustIndex(t, Options{})
	doc, doc2 := seq(1, 300), seq(5000, 300)
	sys := seq(9000, 512)
	keys := mustAdd(t, ix, nil, Entry{Salt: a, Tokens: doc}, Entry{Salt: a, Tokens: doc2}, Entry{Salt: a, Tokens: sys, Prefix: true})
	if n := ix.Remove(keys[0], keys[2], ChunkKey{1}); n != 2 {
		t.Fatalf("Remove removed %d, want 2", n)
	}
	ms, err := ix.FindAll(a, slices.Concat(sys, doc, doc2))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Chunk != keys[1] || ms[0].ReqOff != 812 {
		t.Fatalf("after Remove FindAll = %+v, want only doc2 at 812", ms)
	}
	if _, ok := ix.Get(keys[0]); ok {
		t.Fatal("Get finds a removed entry")
	}
	if st := ix.Stats(); st.Chunks != 1 || st.Prefixes != 0 || st.Tokens != 300 {
		t.Fatalf("Stats after Remove = %+v", st)
	}
	// Re-adding reuses the freed ids and finds everything again.
	mustAdd(t, ix, nil, Entry{Salt: a, Tokens: doc}, Entry{Salt: a, Tokens: sys, Prefix: true})
	ms, err = ix.FindAll(a, slices.Concat(sys, doc, doc2))
	if err != nil || len(ms) != 3 {
		t.Fatalf("after re-adding: %d matches, %v; want 3", len(ms), err)
	}
}

func TestUpdateRemoveThenAddSameKey(t *testing.T) {
	a := testSalt(t, "a")
	ix := mustIndex(t, Options{})
	doc := seq(1, 300)
	keys := mustAdd(t, ix, nil, Entry{Salt: a, Tokens: doc})
	added, removed, err := ix.Update([]Entry{{Salt: a, Tokens: doc}}, keys)
	if err != nil || removed != 1 || added[0] != keys[0] {
		t.Fatalf("Update = %v, %d, %v", added, removed, err)
	}
	ms, err := ix.FindAll(a, doc)
	if err != nil || len(ms) != 1 {
		t.Fatalf("FindAll after remove+add in one Update: %v, %v", ms, err)
	}
}

func TestEntriesAndGet(t *testing.T) {
	a := testSalt(t, "a")
	ix := mustIndex(t, Options{})
	in := []Entry{{Salt: a, Tokens: seq(1, 100)}, {Salt: a.Shared(), Tokens: seq(500, 70)}, {Salt: a, Tokens: seq(900, 300), Prefix: true}}
	keys := mustAdd(t, ix, nil, in...)
	n := 0
	for k, e := range ix.Entries() {
		i := slices.Index(keys, k)
		if i < 0 {
			t.Fatalf("Entries yields unknown key %s", k)
		}
		wantToks := in[i].Tokens
		if in[i].Prefix {
			wantToks = wantToks[:256]
		}
		if e.Salt != in[i].Salt || e.Prefix != in[i].Prefix || !slices.Equal(e.Tokens, wantToks) {
			t.Fatalf("entry %d: %+v", i, e)
		}
		got, ok := ix.Get(k)
		if !ok || !slices.Equal(got.Tokens, e.Tokens) {
			t.Fatalf("Get(%s) = %v", k, ok)
		}
		if kk, err := ix.KeyOf(in[i]); err != nil || kk != k {
			t.Fatalf("KeyOf(entry %d) = %s, %v; want %s", i, kk, err, k)
		}
		n++
	}
	if n != 3 || ix.Len() != 3 {
		t.Fatalf("Entries yielded %d, Len %d; want 3", n, ix.Len())
	}
	// A subset index (what a device with a small table holds) finds
	// exactly the matches of the full index that involve its entries.
	sub := mustIndex(t, Options{})
	for k, e := range ix.Entries() {
		if k == keys[1] {
			if _, err := sub.Add(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	prompt := slices.Concat(seq(900, 300), seq(1, 100), seq(500, 70))
	full, err := ix.FindAll(a, prompt)
	if err != nil {
		t.Fatal(err)
	}
	part, err := sub.FindAll(a, prompt)
	if err != nil {
		t.Fatal(err)
	}
	wantPart := slices.DeleteFunc(slices.Clone(full), func(m Match) bool { return m.Chunk != keys[1] })
	if !slices.Equal(part, wantPart) || len(part) != 1 {
		t.Fatalf("subset index found %+v, want %+v", part, wantPart)
	}
}

// TestFindAllAgainstOracle is the property test: random and adversarial
// indexes and prompts, every Find result compared with the brute-force
// definition.
func TestFindAllAgainstOracle(t *testing.T) {
	trials := 400
	if testing.Short() {
		trials = 100
	}
	r := rand.New(rand.NewPCG(11, 12))
	for trial := range trials {
		kind := scenarioKinds[trial%len(scenarioKinds)]
		t.Run(fmt.Sprintf("%d-%s", trial, kind), func(t *testing.T) {
			runScenario(t, r, kind)
		})
	}
}

var scenarioKinds = []string{"random", "small-vocab", "periodic", "near-duplicate", "overlapping", "long-repeat", "short-prompt", "limits"}

func runScenario(t *testing.T, r *rand.Rand, kind string) {
	opts := []Options{
		{MinLen: 16, AnchorK: 4, BlockSize: 16},
		{MinLen: 16, AnchorK: 4, BlockSize: 16},
		{MinLen: 24, AnchorK: 8, BlockSize: 32},
		{MinLen: 20, AnchorK: 5, BlockSize: 16}, // even window
		{MinLen: 80, AnchorK: 4, BlockSize: 16}, // window capped at 63
	}[r.IntN(5)]
	if kind == "limits" {
		opts.MaxMatches = 1 + r.IntN(4)
		opts.MaxCandidates = 5 + r.IntN(200)
	}
	salts := []Salt{testSalt(t, "a"), testSalt(t, "b"), testSalt(t, "")}
	ix := mustIndex(t, opts)
	o := newOracle(t, opts)
	vocab := 1000
	if kind == "small-vocab" || kind == "limits" {
		vocab = 2 + r.IntN(3)
	}
	gen := func(n int) []Token { return randTokens(r, n, vocab) }
	if kind == "periodic" {
		unit := gen(1 + r.IntN(5))
		gen = func(n int) []Token {
			return slices.Repeat(unit, n/len(unit)+2)[r.IntN(len(unit)):][:n]
		}
	}
	var chunks, prefixes [][]Token
	nEntries := 1 + r.IntN(5)
	for range nEntries {
		n := 16 + r.IntN(120)
		var c []Token
		switch {
		case kind == "overlapping" && len(chunks) > 0:
			prev := chunks[r.IntN(len(chunks))]
			cut := r.IntN(len(prev))
			c = slices.Concat(prev[cut:], gen(n))
		case kind == "long-repeat":
			piece := gen(8 + r.IntN(30))
			c = slices.Repeat(piece, n/len(piece)+1)
		default:
			c = gen(n)
		}
		if len(c) < opts.MinLen {
			c = append(c, gen(opts.MinLen)...)
		}
		chunks = append(chunks, c)
		e := Entry{Salt: salts[r.IntN(3)], Tokens: c, Prefix: r.IntN(4) == 0}
		if e.Prefix && len(c) < opts.BlockSize {
			e.Prefix = false
		}
		if e.Prefix {
			prefixes = append(prefixes, c)
		}
		mustAdd(t, ix, o, e)
	}
	if r.IntN(4) == 0 && len(o.order) > 1 {
		k := o.order[r.IntN(len(o.order))]
		if ix.Remove(k) != 1 {
			t.Fatalf("Remove of a held key failed")
		}
		o.remove(k)
	}
	for p := range 4 {
		var prompt []Token
		if kind == "short-prompt" {
			prompt = gen(1 + r.IntN(opts.MinLen+4))
		} else {
			if len(prefixes) > 0 && r.IntN(2) == 0 {
				pre := prefixes[r.IntN(len(prefixes))]
				prompt = slices.Clone(pre[:r.IntN(len(pre))+1])
			}
			for range 1 + r.IntN(5) {
				c := chunks[r.IntN(len(chunks))]
				i := r.IntN(len(c))
				j := i + r.IntN(len(c)-i) + 1
				if r.IntN(2) == 0 {
					i, j = 0, len(c)
				}
				piece := slices.Clone(c[i:j])
				if kind == "near-duplicate" && len(piece) > 0 {
					switch r.IntN(3) {
					case 0:
						piece[0]++
					case 1:
						piece[len(piece)-1]++
					default:
						piece[r.IntN(len(piece))]++
					}
				}
				prompt = slices.Concat(prompt, gen(r.IntN(20)), piece)
			}
			if len(prompt) == 0 {
				prompt = gen(1)
			}
		}
		checkAgainstOracle(t, ix, o, salts[r.IntN(3)], prompt, fmt.Sprintf("prompt %d", p))
	}
}

func TestMaxMatchesTruncation(t *testing.T) {
	a := testSalt(t, "a")
	ix := mustIndex(t, Options{MinLen: 16, AnchorK: 4, MaxMatches: 5})
	o := newOracle(t, Options{MinLen: 16, AnchorK: 4, MaxMatches: 5})
	// A constant chunk against a constant prompt: one maximal run per
	// diagonal, far more than 5.
	mustAdd(t, ix, o, Entry{Salt: a, Tokens: slices.Repeat([]Token{7}, 40)})
	prompt := slices.Repeat([]Token{7}, 100)
	res, err := ix.Find(a, prompt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated || len(res.Matches) != 5 {
		t.Fatalf("Find: %d matches, truncated %v; want 5, true", len(res.Matches), res.Truncated)
	}
	// The first five in order: ReqOff 0 with chunk offsets 0..? — the
	// runs starting at prompt offset 0 (diagonals d ≤ 0) come first, longest
	// first.
	if res.Matches[0].ReqOff != 0 || res.Matches[0].Len != 40 || res.Matches[0].ChunkOff != 0 {
		t.Fatalf("first match %+v, want ReqOff 0 Len 40 ChunkOff 0", res.Matches[0])
	}
	checkAgainstOracle(t, ix, o, a, prompt, "constant")
}

func TestMaxCandidates(t *testing.T) {
	a := testSalt(t, "a")
	opts := Options{MaxCandidates: 1000}
	ix := mustIndex(t, opts)
	mustAdd(t, ix, nil, Entry{Salt: a, Tokens: slices.Repeat([]Token{7}, 2000)})
	_, err := ix.FindAll(a, slices.Repeat([]Token{7}, 5000))
	if !errors.Is(err, ErrTooManyCandidates) {
		t.Fatalf("periodic prompt against periodic chunk: %v, want ErrTooManyCandidates", err)
	}
	// A normal prompt on the same index is unaffected.
	ms, err := ix.FindAll(a, seq(1, 500))
	if err != nil || len(ms) != 0 {
		t.Fatalf("ordinary prompt: %v, %v", ms, err)
	}
}

func TestFindReusesDst(t *testing.T) {
	a := testSalt(t, "a")
	ix := mustIndex(t, Options{})
	doc, sys := seq(1, 1000), seq(7000, 512)
	mustAdd(t, ix, nil, Entry{Salt: a, Tokens: doc}, Entry{Salt: a.Shared(), Tokens: sys, Prefix: true})
	prompt := slices.Concat(sys, seq(20000, 3000), doc, seq(40000, 3000))
	dst := make([]Match, 0, 16)
	if _, err := ix.Find(a, prompt, dst); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(50, func() {
		res, err := ix.Find(a, prompt, dst)
		if err != nil || len(res.Matches) != 2 {
			t.Fatalf("Find: %v, %v", res.Matches, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Find with a reused dst allocated %v times per call", allocs)
	}
}

// TestTenantIsolation: content indexed under one tenant's salt is never
// found, counted or able to fail another tenant's lookup; shared content
// is found by every tenant of the model and by no other model.
func TestTenantIsolation(t *testing.T) {
	a, b := testSalt(t, "a"), testSalt(t, "b")
	otherModel, err := NewSalt([]byte("another-model-fingerprint"), "a")
	if err != nil {
		t.Fatal(err)
	}
	ix := mustIndex(t, Options{MaxCandidates: 50})
	secret, public := seq(1, 400), seq(30000, 300)
	sys := seq(60000, 512)
	mustAdd(t, ix, nil,
		Entry{Salt: a, Tokens: secret},
		Entry{Salt: a, Tokens: sys, Prefix: true},
		Entry{Salt: a.Shared(), Tokens: public},
		// Enough periodic content under a to exceed b's candidate limit,
		// were it counted for b.
		Entry{Salt: a, Tokens: slices.Repeat([]Token{9}, 300)},
	)
	prompt := slices.Concat(sys, secret, public, slices.Repeat([]Token{9}, 200))
	resB, err := ix.Find(b, prompt, nil)
	if err != nil {
		t.Fatalf("tenant b: %v (another tenant's content must not count toward b's limit)", err)
	}
	if len(resB.Matches) != 1 || resB.Matches[0].ReqOff != 912 || !resB.Matches[0].Shared {
		t.Fatalf("tenant b sees %+v, want only the shared chunk at 912", resB.Matches)
	}
	// b's counts reveal nothing about a's content: they equal the counts
	// against an index holding only the shared chunk.
	only := mustIndex(t, Options{MaxCandidates: 50})
	mustAdd(t, only, nil, Entry{Salt: a.Shared(), Tokens: public})
	resOnly, err := only.Find(b, prompt, nil)
	if err != nil || resOnly.Candidates != resB.Candidates || resOnly.Anchors != resB.Anchors {
		t.Fatalf("tenant b's counts (%d anchors, %d candidates) differ from a shared-only index (%d, %d): they leak a's content", resB.Anchors, resB.Candidates, resOnly.Anchors, resOnly.Candidates)
	}
	// Tenant a sees its own content (and hits its own limit).
	if _, err := ix.Find(a, prompt, nil); !errors.Is(err, ErrTooManyCandidates) {
		t.Fatalf("tenant a: %v, want ErrTooManyCandidates from its own periodic content", err)
	}
	resA, err := ix.Find(a, slices.Concat(sys, secret, public), nil)
	if err != nil || len(resA.Matches) != 3 {
		t.Fatalf("tenant a: %d matches, %v; want prefix, secret, public", len(resA.Matches), err)
	}
	// Another model sees nothing, not even the shared chunk.
	resM, err := ix.Find(otherModel, prompt, nil)
	if err != nil || len(resM.Matches) != 0 || resM.Candidates != 0 {
		t.Fatalf("another model: %+v, %v", resM, err)
	}
}
