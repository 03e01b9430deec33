package evict

// Segmented LRU (Karedla, Love, Wherry, "Caching strategies to improve disk
// system performance", IEEE Computer 1994): new keys enter a probationary
// LRU segment; a hit there promotes the key to a protected LRU segment of
// bounded size, whose overflow falls back to probation's front. Eviction
// takes probation's LRU key (protected's only when probation is empty).
//
// With a small protected segment (a fifth of the capacity) it is LRU for
// everything but the keys reused most recently, which a burst of new blocks
// — a long prompt computed from scratch — cannot flush. On the Mooncake
// conversation trace that is what KV reuse rewards: recency dominates (turns
// of a conversation come back soon), and a few shared prefixes are hot.

const (
	slruProbation = 1
	slruProtected = 2

	slruProtectedPercent = 20
)

type slru[K comparable] struct {
	cap       int64
	items     map[K]*node[K]
	probation list[K]
	protected list[K]
}

// NewSLRU returns an empty segmented LRU policy of capacity c with a 20%
// protected segment.
func NewSLRU[K comparable](c int64) Policy[K] {
	p := &slru[K]{cap: max(c, 0), items: make(map[K]*node[K])}
	p.probation.init()
	p.protected.init()
	return p
}

func (p *slru[K]) Name() string      { return SLRU }
func (p *slru[K]) Len() int          { return len(p.items) }
func (p *slru[K]) Weight() int64     { return p.probation.weight + p.protected.weight }
func (p *slru[K]) Capacity() int64   { return p.cap }
func (p *slru[K]) Contains(k K) bool { _, ok := p.items[k]; return ok }

func (p *slru[K]) Touch(k K) bool {
	n, ok := p.items[k]
	if !ok {
		return false
	}
	if n.queue == slruProtected {
		p.protected.moveToFront(n)
		return true
	}
	p.probation.remove(n)
	n.queue = slruProtected
	p.protected.pushFront(n)
	for p.protected.weight > p.cap*slruProtectedPercent/100 && p.protected.len > 1 {
		d := p.protected.back()
		p.protected.remove(d)
		d.queue = slruProbation
		p.probation.pushFront(d)
	}
	return true
}

func (p *slru[K]) Insert(k K, w int64, evicted []K) (bool, []K) {
	if _, ok := p.items[k]; ok || w <= 0 || w > p.cap {
		return false, evicted
	}
	n := &node[K]{key: k, weight: w, queue: slruProbation}
	p.items[k] = n
	p.probation.pushFront(n)
	return true, p.shrink(evicted)
}

func (p *slru[K]) Remove(k K) bool {
	n, ok := p.items[k]
	if !ok {
		return false
	}
	if n.queue == slruProtected {
		p.protected.remove(n)
	} else {
		p.probation.remove(n)
	}
	delete(p.items, k)
	return true
}

func (p *slru[K]) SetCapacity(c int64, evicted []K) []K {
	p.cap = max(c, 0)
	return p.shrink(evicted)
}

func (p *slru[K]) shrink(evicted []K) []K {
	for p.Weight() > p.cap {
		l := &p.probation
		if l.len == 0 {
			l = &p.protected
		}
		n := l.back()
		l.remove(n)
		delete(p.items, n.key)
		evicted = append(evicted, n.key)
	}
	return evicted
}
