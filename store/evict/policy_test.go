package evict

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func newPolicy(t *testing.T, name string, c int64) Policy[uint64] {
	t.Helper()
	p, err := New(name, c, Options[uint64]{Hash: HashID})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Every policy keeps its weight within capacity, reports what it evicts
// exactly once, and agrees with a shadow set of resident keys.
func TestPoliciesInvariants(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			p := newPolicy(t, name, 1000)
			resident := map[uint64]int64{}
			r := rand.New(rand.NewPCG(1, 2))
			var ev []uint64
			for i := range 20000 {
				k := uint64(r.IntN(400))
				switch op := r.IntN(10); {
				case op < 6:
					if hit := p.Touch(k); hit != (resident[k] > 0) {
						t.Fatalf("step %d: Touch(%d) = %v, shadow says %v", i, k, hit, resident[k] > 0)
					}
				case op < 9:
					if resident[k] > 0 {
						continue
					}
					w := int64(1 + r.IntN(50))
					var ok bool
					ok, ev = p.Insert(k, w, ev[:0])
					if ok {
						resident[k] = w
					} else if slices.Contains(ev, k) {
						t.Fatalf("step %d: refused %d but reported it evicted", i, k)
					}
					for _, e := range ev {
						if resident[e] == 0 && !(ok && e == k) {
							t.Fatalf("step %d: evicted %d, which is not resident", i, e)
						}
						delete(resident, e)
					}
				default:
					if p.Remove(k) != (resident[k] > 0) {
						t.Fatalf("step %d: Remove(%d) disagrees with the shadow", i, k)
					}
					delete(resident, k)
				}
				var sum int64
				for _, w := range resident {
					sum += w
				}
				if p.Weight() != sum || p.Len() != len(resident) || p.Weight() > p.Capacity() {
					t.Fatalf("step %d: weight %d len %d capacity %d, shadow %d/%d", i, p.Weight(), p.Len(), p.Capacity(), sum, len(resident))
				}
			}
			ev = p.SetCapacity(100, ev[:0])
			for _, e := range ev {
				delete(resident, e)
			}
			if p.Weight() > 100 || p.Len() != len(resident) {
				t.Fatalf("after SetCapacity(100): weight %d len %d, shadow %d", p.Weight(), p.Len(), len(resident))
			}
			if ok, _ := p.Insert(9999, 101, nil); ok || p.Contains(9999) {
				t.Fatal("inserted a key heavier than the capacity")
			}
		})
	}
}

func TestLRUOrder(t *testing.T) {
	p := newPolicy(t, LRU, 3)
	for k := range uint64(3) {
		p.Insert(k, 1, nil)
	}
	p.Touch(0)
	_, ev := p.Insert(3, 1, nil)
	if fmt.Sprint(ev) != "[1]" {
		t.Fatalf("evicted %v, want [1] (least recently used)", ev)
	}
}

// SLRU: a key hit once is protected from a scan of new keys.
func TestSLRUProtectsReused(t *testing.T) {
	p := newPolicy(t, SLRU, 10)
	p.Insert(100, 1, nil)
	p.Touch(100)
	for k := range uint64(50) {
		p.Insert(k, 1, nil)
	}
	if !p.Contains(100) {
		t.Fatal("a reused key was flushed by a scan")
	}
}

// S3-FIFO: one-hit wonders leave through the small queue; a key seen again
// after leaving (a ghost hit) goes straight to the main queue.
func TestS3FIFOFiltersOneHitWonders(t *testing.T) {
	p := newPolicy(t, S3FIFO, 100)
	for k := range uint64(50) {
		p.Insert(k, 1, nil)
		p.Touch(k)
	}
	for k := uint64(1000); k < 1300; k++ {
		p.Insert(k, 1, nil)
	}
	kept := 0
	for k := range uint64(50) {
		if p.Contains(k) {
			kept++
		}
	}
	if kept < 45 {
		t.Fatalf("%d of 50 reused keys survived 300 one-hit wonders, want nearly all", kept)
	}
}

func TestWTinyLFUAdmitsFrequent(t *testing.T) {
	p := newPolicy(t, WTinyLFU, 100)
	for range 5 {
		for k := range uint64(50) {
			if !p.Touch(k) {
				p.Insert(k, 1, nil)
			}
		}
	}
	for k := uint64(1000); k < 1500; k++ {
		p.Insert(k, 1, nil)
	}
	kept := 0
	for k := range uint64(50) {
		if p.Contains(k) {
			kept++
		}
	}
	if kept < 45 {
		t.Fatalf("%d of 50 frequent keys survived, want nearly all", kept)
	}
}

func TestARCAdapts(t *testing.T) {
	p := newPolicy(t, ARC, 10).(*arc[uint64])
	for k := range uint64(10) {
		p.Insert(k, 1, nil)
	}
	for k := uint64(5); k < 10; k++ { // 5..9 seen twice: T2
		p.Touch(k)
	}
	for k := uint64(10); k < 15; k++ { // push 0..4 from T1 into B1
		p.Insert(k, 1, nil)
	}
	before := p.p
	p.Insert(0, 1, nil) // B1 hit: T1 was too small
	if p.p <= before {
		t.Fatalf("p = %d after a B1 ghost hit, was %d: want it to grow", p.p, before)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New[uint64]("mru", 1, Options[uint64]{}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("unknown policy: %v", err)
	}
	if _, err := New[uint64](WTinyLFU, 1, Options[uint64]{}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("w-tinylfu without a hash: %v", err)
	}
	if _, err := New[uint64](LRU, -1, Options[uint64]{}); !errors.Is(err, ErrPolicy) {
		t.Fatalf("negative capacity: %v", err)
	}
	if !slices.Contains(Names(), DefaultPolicy) {
		t.Fatalf("default policy %q is not one of %v", DefaultPolicy, Names())
	}
}

func TestSketch(t *testing.T) {
	s := NewSketch(1000)
	for range 20 {
		s.Add(HashID(1))
	}
	for range 3 {
		s.Add(HashID(2))
	}
	if s.Estimate(HashID(1)) != 15 || s.Estimate(HashID(2)) < 3 || s.Estimate(HashID(3)) > 1 {
		t.Fatalf("estimates %d %d %d, want 15, >=3, <=1", s.Estimate(HashID(1)), s.Estimate(HashID(2)), s.Estimate(HashID(3)))
	}
	for i := range uint64(10 * 1024) { // reach the sample size: counters halve
		s.Add(HashID(i + 100))
	}
	if e := s.Estimate(HashID(1)); e > 8 {
		t.Fatalf("estimate %d after a reset, want at most 8", e)
	}
}
