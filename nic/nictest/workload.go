package nictest

import (
	"math/rand/v2"
	"testing"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// world generates entries and prompts for one device's matcher parameters.
type world struct {
	rng   *rand.Rand
	opts  matcher.Options
	vocab int
	// salts: two tenants of one model, that model's shared salt, and a
	// tenant of another model.
	tenantA, tenantB, shared, otherModel matcher.Salt
}

func newWorld(t *testing.T, seed uint64, opts matcher.Options) *world {
	t.Helper()
	fp := []byte("model-01-nictest")
	a, err := matcher.NewSalt(fp, "tenant-a")
	if err != nil {
		t.Fatalf("salt: %v", err)
	}
	b, err := matcher.NewSalt(fp, "tenant-b")
	if err != nil {
		t.Fatalf("salt: %v", err)
	}
	s, err := matcher.SharedSalt(fp)
	if err != nil {
		t.Fatalf("salt: %v", err)
	}
	o, err := matcher.NewSalt([]byte("model-02-nictest"), "tenant-a")
	if err != nil {
		t.Fatalf("salt: %v", err)
	}
	return &world{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), opts: opts, vocab: 1 << 17,
		tenantA: a, tenantB: b, shared: s, otherModel: o}
}

func (w *world) tokens(n int) []matcher.Token {
	toks := make([]matcher.Token, n)
	for i := range toks {
		toks[i] = matcher.Token(w.rng.IntN(w.vocab))
	}
	return toks
}

// entrySalt picks the salt of a new entry: mostly tenant A, some B, some
// shared, a few of another model.
func (w *world) entrySalt() matcher.Salt {
	switch r := w.rng.IntN(10); {
	case r < 5:
		return w.tenantA
	case r < 7:
		return w.tenantB
	case r < 9:
		return w.shared
	}
	return w.otherModel
}

// requestSalt picks the salt of a request (never the shared one: requests
// come from tenants).
func (w *world) requestSalt() matcher.Salt {
	switch r := w.rng.IntN(10); {
	case r < 6:
		return w.tenantA
	case r < 9:
		return w.tenantB
	}
	return w.otherModel
}

// entry makes an entry with its correct key.
func (w *world) entry(t *testing.T, salt matcher.Salt, toks []matcher.Token, prefix bool, rank float64) nic.Entry {
	t.Helper()
	e := nic.Entry{Salt: salt, Tokens: toks, Prefix: prefix, Rank: rank}
	e.Key = nic.EntryKey(e, w.opts.BlockSize)
	if e.Key == (matcher.ChunkKey{}) {
		t.Fatalf("entry of %d tokens (prefix=%v) has no key with block size %d", len(toks), prefix, w.opts.BlockSize)
	}
	return e
}

// randomEntry is a chunk of MinLen..3·MinLen tokens, or now and then a
// prefix chain of one to three blocks and a partial one.
func (w *world) randomEntry(t *testing.T, rank float64) nic.Entry {
	t.Helper()
	if w.rng.IntN(8) == 0 {
		n := w.opts.BlockSize*(1+w.rng.IntN(3)) + w.rng.IntN(w.opts.BlockSize)
		return w.entry(t, w.entrySalt(), w.tokens(n), true, rank)
	}
	n := w.opts.MinLen + w.rng.IntN(2*w.opts.MinLen+1)
	return w.entry(t, w.entrySalt(), w.tokens(n), false, rank)
}

// prompt builds a prompt from filler and pieces of entries: whole chunks,
// parts at least MinLen long, parts just too short, near-duplicates with one
// token changed at an edge or in the middle, repeats; and sometimes a
// prefix chain's tokens at offset 0.
func (w *world) prompt(entries []nic.Entry) []matcher.Token {
	var p []matcher.Token
	if len(entries) > 0 && w.rng.IntN(4) == 0 {
		e := entries[w.rng.IntN(len(entries))]
		if e.Prefix {
			n := min(len(e.Tokens), w.opts.BlockSize*(1+w.rng.IntN(3))+w.rng.IntN(20))
			p = append(p, e.Tokens[:n]...)
		}
	}
	pieces := w.rng.IntN(5)
	for range pieces {
		p = append(p, w.tokens(w.rng.IntN(2*w.opts.MinLen))...)
		if len(entries) == 0 {
			break
		}
		e := entries[w.rng.IntN(len(entries))]
		toks := e.Tokens
		switch w.rng.IntN(6) {
		case 0, 1: // whole
			p = append(p, toks...)
		case 2: // a part at least MinLen long
			n := w.opts.MinLen + w.rng.IntN(len(toks)-w.opts.MinLen+1)
			off := w.rng.IntN(len(toks) - n + 1)
			p = append(p, toks[off:off+n]...)
		case 3: // a part one token too short
			n := w.opts.MinLen - 1
			off := w.rng.IntN(len(toks) - n + 1)
			p = append(p, toks[off:off+n]...)
		case 4: // near-duplicate: one token changed at an edge or inside
			c := append([]matcher.Token(nil), toks...)
			switch w.rng.IntN(3) {
			case 0:
				c[0]++
			case 1:
				c[len(c)-1]++
			default:
				c[len(c)/2]++
			}
			p = append(p, c...)
		case 5: // repeated
			p = append(p, toks...)
			p = append(p, toks...)
		}
	}
	p = append(p, w.tokens(1+w.rng.IntN(w.opts.MinLen))...)
	return p
}
