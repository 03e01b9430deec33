package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestLRU(t *testing.T) {
	c := newLRU(10)
	c.put(1, 100, 4)
	c.put(2, 200, 4)
	if v, ok := c.get(1); !ok || v != 100 {
		t.Fatalf("get(1) = %v, %v", v, ok)
	}
	c.put(3, 300, 4) // evicts 2, the least recently used
	if _, ok := c.peek(2); ok {
		t.Fatal("2 should have been evicted")
	}
	if len(c.evicted) != 1 || c.evicted[0].key != 2 || c.evicted[0].val != 200 {
		t.Fatalf("evicted = %+v", c.evicted)
	}
	if c.used != 8 || c.len() != 2 {
		t.Fatalf("used %d, len %d", c.used, c.len())
	}
	c.put(4, 0, 11) // larger than the cache: not stored, nothing evicted
	if _, ok := c.peek(4); ok || c.len() != 2 {
		t.Fatal("an oversized entry was stored")
	}
	c.put(1, 101, 6) // growing an entry evicts others, never itself
	if v, ok := c.peek(1); !ok || v != 101 || c.used > 10 {
		t.Fatalf("after growth: %v %v used %d", v, ok, c.used)
	}
}

func TestEventQueueOrder(t *testing.T) {
	var q eventQueue
	rng := rand.New(rand.NewPCG(5, 6))
	type key struct {
		at  int64
		seq int32
	}
	var want []key
	for i := range 5000 {
		at := int64(rng.IntN(100))
		q.push(at, 1, int32(i), 0)
		want = append(want, key{at, int32(i)})
	}
	slices.SortStableFunc(want, func(a, b key) int { return int(a.at - b.at) })
	for i := range want {
		e := q.pop()
		if e.at != want[i].at || e.a != want[i].seq {
			t.Fatalf("pop %d = (%d, %d), want (%d, %d): ties must keep scheduling order", i, e.at, e.a, want[i].at, want[i].seq)
		}
	}
	if q.len() != 0 || q.processed != 5000 {
		t.Fatalf("len %d processed %d", q.len(), q.processed)
	}
}

// TestBiggerCacheNeverHitsLess is the LRU property the issue names: on the
// first 3000 requests of the Mooncake trace, replaying prefix lookups in
// arrival order (each request looks up its leading blocks, then stores all
// of them), a bigger LRU cache never serves fewer tokens.
func TestBiggerCacheNeverHitsLess(t *testing.T) {
	w := mooncake(t).Head(3000)
	replay := func(capacity int64) int64 {
		c := newLRU(capacity)
		var hit int64
		for i := range w.Requests {
			r := &w.Requests[i]
			for j, b := range r.Blocks {
				if _, ok := c.get(r.Prefix[j]); !ok {
					break
				}
				hit += int64(b.Tokens)
			}
			for j, b := range r.Blocks {
				c.put(r.Prefix[j], 0, b.Tokens)
			}
		}
		return hit
	}
	var last int64 = -1
	for _, capacity := range []int64{512, 4096, 32768, 100_000, 250_000, 1_000_000, 4_000_000, 1 << 40} {
		h := replay(capacity)
		if h < last {
			t.Fatalf("capacity %d tokens hit %d tokens, fewer than a smaller cache's %d", capacity, h, last)
		}
		last = h
	}
	if last == 0 {
		t.Fatal("nothing hit even with an unbounded cache")
	}
}

// TestIndexMatchesMap drives the open-addressing index and a Go map with
// the same random operations (small key space, many deletions) and wants
// them to agree throughout.
func TestIndexMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := newIndex()
	m := map[uint64]int32{}
	for i := range 200000 {
		k := uint64(rng.IntN(3000)) * 0x10000 // clustered keys stress probing
		switch rng.IntN(3) {
		case 0, 1:
			v := int32(1 + rng.IntN(1000))
			x.put(k, v)
			m[k] = v
		case 2:
			x.del(k)
			delete(m, k)
		}
		if i%997 == 0 {
			for mk, mv := range m {
				if v, ok := x.get(mk); !ok || v != mv {
					t.Fatalf("step %d: index[%d] = %d, %v; map has %d", i, mk, v, ok, mv)
				}
			}
			if x.n != len(m) {
				t.Fatalf("step %d: index holds %d, map %d", i, x.n, len(m))
			}
		}
		if v, ok := x.get(k); ok != (m[k] != 0) || v != m[k] {
			t.Fatalf("step %d: get(%d) = %d, %v; map %d", i, k, v, ok, m[k])
		}
	}
}
