package matcher

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentReadersOneWriter runs FindAll, Get, Entries and Stats in
// several goroutines while a writer keeps adding and removing entries.
// Readers must always find the entries that are never removed, and every
// match they see must be exact. Run it with -race.
func TestConcurrentReadersOneWriter(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	a := testSalt(t, "a")
	ix := mustIndex(t, Options{BlockSize: 64})
	stableA, stableB, toggled := randTokens(r, 400, 100000), randTokens(r, 300, 100000), randTokens(r, 250, 100000)
	sys := randTokens(r, 192, 100000)
	keys := mustAdd(t, ix, nil, Entry{Salt: a, Tokens: stableA}, Entry{Salt: a.Shared(), Tokens: stableB}, Entry{Salt: a, Tokens: sys, Prefix: true})
	toggledKey := ChunkKeyOf(a, toggled)
	tokens := map[ChunkKey][]Token{keys[0]: stableA, keys[1]: stableB, toggledKey: toggled}
	prompt := slices.Concat(sys, stableA, randTokens(r, 50, 100000), toggled, randTokens(r, 30, 100000), stableB)
	offA, offC, offB := 192, 192+400+50, 192+400+50+250+30

	// Churn: other documents the writer adds and removes, prepared up front
	// so that the readers' token map is never written.
	churn := make([][]Token, 50)
	for i := range churn {
		churn[i] = randTokens(r, 100+r.IntN(200), 100000)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		stop.Store(true)
	}
	var finds atomic.Int64
	for range 4 {
		wg.Go(func() {
			dst := make([]Match, 0, 16)
			for !stop.Load() {
				res, err := ix.Find(a, prompt, dst)
				if err != nil {
					fail(err)
					return
				}
				finds.Add(1)
				var sawA, sawB, sawPrefix bool
				for _, m := range res.Matches {
					if m.Prefix {
						sawPrefix = m.Len == 192
						continue
					}
					toks, ok := tokens[m.Chunk]
					if !ok {
						fail(fmt.Errorf("match with an unknown key %s", m.Chunk))
						return
					}
					if !slices.Equal(prompt[m.ReqOff:m.End()], toks[m.ChunkOff:m.ChunkOff+m.Len]) {
						fail(fmt.Errorf("inexact match %+v", m))
						return
					}
					switch m.Chunk {
					case keys[0]:
						sawA = m.ReqOff == offA && m.Len == len(stableA)
					case keys[1]:
						sawB = m.ReqOff == offB && m.Len == len(stableB) && m.Shared
					case toggledKey:
						if m.ReqOff != offC || m.Len != len(toggled) {
							fail(fmt.Errorf("toggled chunk matched at %d+%d", m.ReqOff, m.Len))
							return
						}
					}
				}
				if !sawA || !sawB || !sawPrefix {
					fail(fmt.Errorf("a reader lost a stable entry during writes (A %v, B %v, prefix %v)", sawA, sawB, sawPrefix))
					return
				}
			}
		})
	}
	wg.Go(func() {
		for !stop.Load() {
			n := 0
			for k, e := range ix.Entries() {
				if k == keys[0] && !slices.Equal(e.Tokens, stableA) {
					fail(fmt.Errorf("Entries returned wrong tokens for a stable entry"))
					return
				}
				n++
			}
			if st := ix.Stats(); st.Chunks < 2 || n < 3 {
				fail(fmt.Errorf("Stats %+v / %d entries: stable entries missing", st, n))
				return
			}
			if _, ok := ix.Get(keys[1]); !ok {
				fail(fmt.Errorf("Get lost a stable entry"))
				return
			}
		}
	})
	hot := mustHotT(t)
	wg.Go(func() {
		now := time.Unix(0, 0)
		for !stop.Load() {
			if err := hot.Observe(now, a, prompt); err != nil {
				fail(err)
				return
			}
			hot.Top(now, 3)
			now = now.Add(time.Second)
		}
	})

	for i := 0; i < 400 && !stop.Load(); i++ {
		var err error
		switch i % 3 {
		case 0:
			_, err = ix.Add(Entry{Salt: a, Tokens: toggled})
		case 1:
			ix.Remove(toggledKey)
		default:
			c := churn[r.IntN(len(churn))]
			k := ChunkKeyOf(a, c)
			_, _, err = ix.Update([]Entry{{Salt: a, Tokens: churn[r.IntN(len(churn))]}}, []ChunkKey{k})
		}
		if err != nil {
			fail(err)
		}
	}
	// Let the readers overlap the writes for a while, then stop them.
	for finds.Load() < 200 && !stop.Load() {
		time.Sleep(time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

func mustHotT(t *testing.T) *Hot {
	t.Helper()
	h, err := NewHot(HotOptions{Capacity: 64})
	if err != nil {
		t.Fatal(err)
	}
	return h
}
