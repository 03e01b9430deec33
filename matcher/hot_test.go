package matcher

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func mustHot(t *testing.T, o HotOptions) *Hot {
	t.Helper()
	h, err := NewHot(o)
	if err != nil {
		t.Fatalf("NewHot: %v", err)
	}
	return h
}

func observe(t *testing.T, h *Hot, now time.Time, salt Salt, prompt []Token) {
	t.Helper()
	if err := h.Observe(now, salt, prompt); err != nil {
		t.Fatalf("Observe: %v", err)
	}
}

// TestHotFindsRepeatedDocuments feeds RAG-like prompts (a popular document
// in varying surroundings) and expects exactly that document back,
// extended to its full span though nobody marked its boundaries.
func TestHotFindsRepeatedDocuments(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	a := testSalt(t, "a")
	popular := randTokens(r, 500, 100000)
	rare := randTokens(r, 400, 100000)
	h := mustHot(t, HotOptions{MinCount: 3})
	now := epoch
	for i := range 6 {
		parts := [][]Token{randTokens(r, 100+r.IntN(200), 100000), popular, randTokens(r, 50+r.IntN(100), 100000)}
		if i == 2 {
			parts = append(parts, rare) // seen once: never proposed
		}
		observe(t, h, now, a, slices.Concat(parts...))
		now = now.Add(time.Second)
	}
	top := h.Top(now, 10)
	if len(top) != 1 {
		t.Fatalf("Top returned %d candidates, want 1 (the popular document)", len(top))
	}
	c := top[0]
	if !slices.Equal(c.Tokens, popular) || c.Salt != a || c.Key != ChunkKeyOf(a, popular) {
		t.Fatalf("candidate has %d tokens (want the 500 of the document), salt %v", len(c.Tokens), c.Salt)
	}
	if c.Count < 3 || c.Count > 6 || c.Score != c.Count*500 {
		t.Fatalf("candidate count %v score %v; want count in [3, 6], score count×500", c.Count, c.Score)
	}
}

func TestHotBelowThresholdAndDecay(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	a := testSalt(t, "a")
	doc := randTokens(r, 300, 100000)
	h := mustHot(t, HotOptions{MinCount: 3, HalfLife: time.Minute})
	for range 2 {
		observe(t, h, epoch, a, slices.Concat(randTokens(r, 80, 100000), doc))
	}
	if top := h.Top(epoch, 5); len(top) != 0 {
		t.Fatalf("seen twice, MinCount 3: Top = %d candidates, want none", len(top))
	}
	observe(t, h, epoch, a, slices.Concat(randTokens(r, 80, 100000), doc))
	if top := h.Top(epoch, 5); len(top) != 1 {
		t.Fatalf("seen three times: Top = %d, want 1", len(top))
	}
	// Decay is exponential: one half-life later three sightings weigh 1.5.
	if top := h.Top(epoch.Add(time.Minute), 5); len(top) != 0 {
		t.Fatalf("one half-life later: Top = %d, want none", len(top))
	}
	// Ten half-lives later the count has decayed far below 3.
	if top := h.Top(epoch.Add(10*time.Minute), 5); len(top) != 0 {
		t.Fatalf("after 10 half-lives: Top = %d, want none", len(top))
	}
	// Observations far in the future renormalise without losing order.
	far := epoch.Add(1000 * time.Hour)
	for range 3 {
		observe(t, h, far, a, slices.Concat(randTokens(r, 80, 100000), doc))
	}
	if top := h.Top(far, 5); len(top) != 1 || !slices.Equal(top[0].Tokens, doc) {
		t.Fatalf("after renormalising: %d candidates", len(top))
	}
}

func TestHotRankingAndTenants(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	a, b := testSalt(t, "a"), testSalt(t, "b")
	long := randTokens(r, 800, 100000)
	short := randTokens(r, 100, 100000)
	h := mustHot(t, HotOptions{MinCount: 2})
	for i := range 4 {
		now := epoch.Add(time.Duration(i) * time.Second)
		observe(t, h, now, a, slices.Concat(randTokens(r, 70, 100000), long, randTokens(r, 70, 100000)))
		observe(t, h, now, b, slices.Concat(randTokens(r, 70, 100000), short, randTokens(r, 70, 100000)))
	}
	top := h.Top(epoch.Add(4*time.Second), 10)
	if len(top) != 2 {
		t.Fatalf("Top = %d candidates, want 2", len(top))
	}
	if !slices.Equal(top[0].Tokens, long) || top[0].Salt != a || !slices.Equal(top[1].Tokens, short) || top[1].Salt != b {
		t.Fatalf("ranking: first %d tokens salt %v, second %d tokens salt %v", len(top[0].Tokens), top[0].Salt, len(top[1].Tokens), top[1].Salt)
	}
	if got := h.Top(epoch.Add(4*time.Second), 1); len(got) != 1 || got[0].Key != top[0].Key {
		t.Fatalf("Top(1) = %v", got)
	}
}

func TestHotCapacityEvicts(t *testing.T) {
	r := rand.New(rand.NewPCG(37, 38))
	a := testSalt(t, "a")
	// Space-Saving keeps every item more frequent than events/capacity:
	// about 760 anchor sightings over 200 items, and each anchor of the
	// document is seen 10 times.
	h := mustHot(t, HotOptions{Capacity: 200, MinCount: 3})
	doc := randTokens(r, 300, 100000)
	for i := range 40 {
		now := epoch.Add(time.Duration(i) * time.Second)
		// Unique noise floods the sketch; the document recurs every 4th.
		p := randTokens(r, 400, 100000)
		if i%4 == 0 {
			p = slices.Concat(p, doc)
		}
		observe(t, h, now, a, p)
	}
	if h.Len() != 200 {
		t.Fatalf("sketch tracks %d items, capacity 200", h.Len())
	}
	top := h.Top(epoch.Add(40*time.Second), 3)
	if len(top) == 0 || !slices.Equal(top[0].Tokens, doc) {
		t.Fatalf("the recurring document is not the top candidate under eviction pressure: %d candidates", len(top))
	}
}

func TestHotDeterministic(t *testing.T) {
	run := func() []Candidate {
		r := rand.New(rand.NewPCG(39, 40))
		a := testSalt(t, "a")
		docs := [][]Token{randTokens(r, 200, 5000), randTokens(r, 300, 5000), randTokens(r, 150, 5000)}
		h := mustHot(t, HotOptions{Capacity: 64, MinCount: 2})
		for i := range 60 {
			observe(t, h, epoch.Add(time.Duration(i)*time.Second), a, slices.Concat(randTokens(r, 90, 5000), docs[r.IntN(3)], docs[r.IntN(3)]))
		}
		return h.Top(epoch.Add(time.Minute), 10)
	}
	x, y := run(), run()
	if len(x) == 0 || len(x) != len(y) {
		t.Fatalf("runs gave %d and %d candidates", len(x), len(y))
	}
	for i := range x {
		if x[i].Key != y[i].Key || x[i].Count != y[i].Count {
			t.Fatalf("candidate %d differs between identical runs", i)
		}
	}
}

func TestHotBadInput(t *testing.T) {
	if _, err := NewHot(HotOptions{Capacity: -1, MinCount: -2, HalfLife: -time.Second, MinLen: 10, MaxSpan: 5}); !errors.Is(err, ErrOptions) {
		t.Fatalf("NewHot with bad options: %v, want ErrOptions", err)
	}
	h := mustHot(t, HotOptions{})
	if err := h.Observe(epoch, Salt{}, []Token{1}); !errors.Is(err, ErrZeroSalt) {
		t.Fatalf("Observe with zero salt: %v", err)
	}
	if err := h.Observe(epoch, testSalt(t, "a"), nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Observe with empty prompt: %v", err)
	}
	if top := h.Top(epoch, 3); top != nil {
		t.Fatalf("empty sketch: Top = %v", top)
	}
}
