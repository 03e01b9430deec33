package evict

// W-TinyLFU (Einziger, Friedman, Manes, "TinyLFU: a highly efficient cache
// admission policy", 2017; the design Caffeine ships): a small LRU window
// (1% of the capacity) takes new keys; keys leaving it compete for the main
// area, a segmented LRU (probation, and protected at 80% of main), against
// main's LRU victim. The one the frequency sketch estimates as more
// popular stays.

const (
	wWindow    = 1
	wProbation = 2
	wProtected = 3

	wWindowPercent    = 1
	wProtectedPercent = 80
)

type wtinylfu[K comparable] struct {
	cap       int64
	hash      Hasher[K]
	sketch    *Sketch
	items     map[K]*node[K]
	window    list[K]
	probation list[K]
	protected list[K]
}

// NewWTinyLFU returns an empty W-TinyLFU policy of capacity c whose sketch is
// sized for about expected keys (it grows with the resident keys).
func NewWTinyLFU[K comparable](c int64, hash Hasher[K], expected int) Policy[K] {
	p := &wtinylfu[K]{cap: max(c, 0), hash: hash, sketch: NewSketch(expected), items: make(map[K]*node[K])}
	p.window.init()
	p.probation.init()
	p.protected.init()
	return p
}

func (p *wtinylfu[K]) Name() string { return WTinyLFU }
func (p *wtinylfu[K]) Len() int     { return len(p.items) }
func (p *wtinylfu[K]) Weight() int64 {
	return p.window.weight + p.probation.weight + p.protected.weight
}
func (p *wtinylfu[K]) Capacity() int64   { return p.cap }
func (p *wtinylfu[K]) Contains(k K) bool { _, ok := p.items[k]; return ok }

func (p *wtinylfu[K]) windowCap() int64 { return max(p.cap*wWindowPercent/100, 1) }
func (p *wtinylfu[K]) protectedCap() int64 {
	return (p.cap - p.windowCap()) * wProtectedPercent / 100
}

func (p *wtinylfu[K]) Touch(k K) bool {
	p.sketch.Add(p.hash(k))
	n, ok := p.items[k]
	if !ok {
		return false
	}
	switch n.queue {
	case wWindow:
		p.window.moveToFront(n)
	case wProbation:
		p.probation.remove(n)
		n.queue = wProtected
		p.protected.pushFront(n)
		for p.protected.weight > p.protectedCap() && p.protected.len > 1 {
			d := p.protected.back()
			p.protected.remove(d)
			d.queue = wProbation
			p.probation.pushFront(d)
		}
	case wProtected:
		p.protected.moveToFront(n)
	}
	return true
}

func (p *wtinylfu[K]) Insert(k K, w int64, evicted []K) (bool, []K) {
	if _, ok := p.items[k]; ok || w <= 0 || w > p.cap {
		return false, evicted
	}
	p.sketch.Add(p.hash(k))
	if len(p.items) >= 4*p.sketch.Width() {
		// More resident keys than the sketch can tell apart: grow it
		// (forgetting counts, as Caffeine's sketch does when it resizes).
		p.sketch = NewSketch(2 * len(p.items))
	}
	n := &node[K]{key: k, weight: w, queue: wWindow}
	p.items[k] = n
	p.window.pushFront(n)
	start := len(evicted)
	evicted = p.shrink(evicted)
	_, ok := p.items[k]
	if !ok {
		// Refused by admission: k is reported as not resident, not as
		// evicted.
		for i := start; i < len(evicted); i++ {
			if evicted[i] == k {
				evicted = append(evicted[:i], evicted[i+1:]...)
				break
			}
		}
	}
	return ok, evicted
}

func (p *wtinylfu[K]) Remove(k K) bool {
	n, ok := p.items[k]
	if !ok {
		return false
	}
	p.queueOf(n).remove(n)
	delete(p.items, k)
	return true
}

func (p *wtinylfu[K]) queueOf(n *node[K]) *list[K] {
	switch n.queue {
	case wWindow:
		return &p.window
	case wProbation:
		return &p.probation
	}
	return &p.protected
}

func (p *wtinylfu[K]) SetCapacity(c int64, evicted []K) []K {
	p.cap = max(c, 0)
	return p.shrink(evicted)
}

// shrink moves the window's overflow into probation as candidates, then,
// while over capacity, evicts the loser of main's LRU victim against the
// newest candidate.
func (p *wtinylfu[K]) shrink(evicted []K) []K {
	var candidates int
	for p.window.weight > p.windowCap() && p.window.len > 0 {
		n := p.window.back()
		p.window.remove(n)
		n.queue = wProbation
		p.probation.pushFront(n)
		candidates++
	}
	for p.Weight() > p.cap {
		var victim, candidate *node[K]
		switch {
		case p.probation.len > 0:
			victim = p.probation.back()
		case p.protected.len > 0:
			victim = p.protected.back()
		default:
			victim = p.window.back()
		}
		if candidates > 0 && p.probation.len > 0 {
			candidate = p.probation.root.next // newest candidate
		}
		loser := victim
		if candidate != nil && candidate != victim &&
			p.sketch.Estimate(p.hash(candidate.key)) <= p.sketch.Estimate(p.hash(victim.key)) {
			loser = candidate
		}
		if loser == candidate {
			candidates--
		}
		p.queueOf(loser).remove(loser)
		delete(p.items, loser.key)
		evicted = append(evicted, loser.key)
	}
	return evicted
}
