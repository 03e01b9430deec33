package evict

// S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction",
// SOSP'23): a small FIFO S that takes new keys and holds a tenth of the
// capacity, a main FIFO M with lazy promotion (a key accessed while in M is
// reinserted instead of evicted, its counter decremented), and a ghost FIFO
// G of keys recently evicted from S. A key leaving S moves to M only if it
// was accessed while in S; otherwise it is evicted and remembered in G, and a
// key found in G on insertion goes straight to M. One-hit wonders — most of
// a KV trace's blocks — thus leave after a short stay in S without pushing
// reused blocks out of M.

const (
	s3Small = 1 // queue ids
	s3Main  = 2
	s3Ghost = 3

	s3MaxFreq = 3
	// s3SmallPercent is S's share of the capacity.
	s3SmallPercent = 10
)

type s3fifo[K comparable] struct {
	cap   int64
	items map[K]*node[K] // resident keys (in S or M)
	ghost map[K]*node[K]
	small list[K]
	main  list[K]
	ghq   list[K]
}

// NewS3FIFO returns an empty S3-FIFO policy of capacity c.
func NewS3FIFO[K comparable](c int64) Policy[K] {
	p := &s3fifo[K]{cap: max(c, 0), items: make(map[K]*node[K]), ghost: make(map[K]*node[K])}
	p.small.init()
	p.main.init()
	p.ghq.init()
	return p
}

func (p *s3fifo[K]) Name() string      { return S3FIFO }
func (p *s3fifo[K]) Len() int          { return len(p.items) }
func (p *s3fifo[K]) Weight() int64     { return p.small.weight + p.main.weight }
func (p *s3fifo[K]) Capacity() int64   { return p.cap }
func (p *s3fifo[K]) Contains(k K) bool { _, ok := p.items[k]; return ok }

func (p *s3fifo[K]) Touch(k K) bool {
	n, ok := p.items[k]
	if ok && n.freq < s3MaxFreq {
		n.freq++
	}
	return ok
}

func (p *s3fifo[K]) Insert(k K, w int64, evicted []K) (bool, []K) {
	if _, ok := p.items[k]; ok || w <= 0 || w > p.cap {
		return false, evicted
	}
	n := &node[K]{key: k, weight: w}
	if g, ok := p.ghost[k]; ok {
		p.ghq.remove(g)
		delete(p.ghost, k)
		n.queue = s3Main
		p.main.pushFront(n)
	} else {
		n.queue = s3Small
		p.small.pushFront(n)
	}
	p.items[k] = n
	return true, p.shrink(evicted)
}

func (p *s3fifo[K]) Remove(k K) bool {
	n, ok := p.items[k]
	if !ok {
		return false
	}
	if n.queue == s3Small {
		p.small.remove(n)
	} else {
		p.main.remove(n)
	}
	delete(p.items, k)
	return true
}

func (p *s3fifo[K]) SetCapacity(c int64, evicted []K) []K {
	p.cap = max(c, 0)
	return p.shrink(evicted)
}

// shrink evicts until the resident weight fits. Each round either evicts a
// key or moves one from S to M or demotes an M key's counter, and counters
// only go down, so it terminates.
func (p *s3fifo[K]) shrink(evicted []K) []K {
	for p.Weight() > p.cap {
		if p.small.len > 0 && (p.small.weight > p.cap*s3SmallPercent/100 || p.main.len == 0) {
			evicted = p.evictSmall(evicted)
		} else {
			evicted = p.evictMain(evicted)
		}
	}
	p.trimGhost()
	return evicted
}

func (p *s3fifo[K]) evictSmall(evicted []K) []K {
	n := p.small.back()
	p.small.remove(n)
	if n.freq > 0 { // accessed while in S: it earns a place in M
		n.freq = 0
		n.queue = s3Main
		p.main.pushFront(n)
		return evicted
	}
	delete(p.items, n.key)
	evicted = append(evicted, n.key)
	g := &node[K]{key: n.key, weight: n.weight, queue: s3Ghost}
	p.ghost[n.key] = g
	p.ghq.pushFront(g)
	return evicted
}

func (p *s3fifo[K]) evictMain(evicted []K) []K {
	for {
		n := p.main.back()
		if n.freq > 0 {
			n.freq--
			p.main.moveToFront(n)
			continue
		}
		p.main.remove(n)
		delete(p.items, n.key)
		return append(evicted, n.key)
	}
}

// trimGhost bounds G to the weight M may hold.
func (p *s3fifo[K]) trimGhost() {
	limit := p.cap - p.cap*s3SmallPercent/100
	for p.ghq.weight > limit && p.ghq.len > 0 {
		g := p.ghq.back()
		p.ghq.remove(g)
		delete(p.ghost, g.key)
	}
}
