package evict

// ARC (Megiddo and Modha, "ARC: a self-tuning, low overhead replacement
// cache", FAST'03), weighted: T1 holds keys seen once recently, T2 keys
// seen at least twice; ghost lists B1 and B2 remember what each evicted.
// A hit in B1 means T1 was too small and grows its target p; a hit in B2
// shrinks it. It adapts between LRU (p = capacity) and a frequency-leaning
// split, which is why it tracks LRU on recency-dominated traces.

const (
	arcT1 = 1
	arcT2 = 2
	arcB1 = 3
	arcB2 = 4
)

type arc[K comparable] struct {
	cap    int64
	p      int64 // target weight of T1
	items  map[K]*node[K]
	ghosts map[K]*node[K]
	t1, t2 list[K]
	b1, b2 list[K]
}

// NewARC returns an empty ARC policy of capacity c.
func NewARC[K comparable](c int64) Policy[K] {
	p := &arc[K]{cap: max(c, 0), items: make(map[K]*node[K]), ghosts: make(map[K]*node[K])}
	p.t1.init()
	p.t2.init()
	p.b1.init()
	p.b2.init()
	return p
}

func (p *arc[K]) Name() string      { return ARC }
func (p *arc[K]) Len() int          { return len(p.items) }
func (p *arc[K]) Weight() int64     { return p.t1.weight + p.t2.weight }
func (p *arc[K]) Capacity() int64   { return p.cap }
func (p *arc[K]) Contains(k K) bool { _, ok := p.items[k]; return ok }

func (p *arc[K]) Touch(k K) bool {
	n, ok := p.items[k]
	if !ok {
		return false
	}
	if n.queue == arcT1 {
		p.t1.remove(n)
		n.queue = arcT2
		p.t2.pushFront(n)
	} else {
		p.t2.moveToFront(n)
	}
	return true
}

func (p *arc[K]) Insert(k K, w int64, evicted []K) (bool, []K) {
	if _, ok := p.items[k]; ok || w <= 0 || w > p.cap {
		return false, evicted
	}
	n := &node[K]{key: k, weight: w, queue: arcT1}
	if g, ok := p.ghosts[k]; ok {
		// A ghost hit: adapt p towards the list that would have kept k.
		if g.queue == arcB1 {
			d := max(w, w*p.b2.weight/max(p.b1.weight, 1))
			p.p = min(p.p+d, p.cap)
			p.b1.remove(g)
		} else {
			d := max(w, w*p.b1.weight/max(p.b2.weight, 1))
			p.p = max(p.p-d, 0)
			p.b2.remove(g)
		}
		delete(p.ghosts, k)
		n.queue = arcT2
		p.items[k] = n
		p.t2.pushFront(n)
		evicted = p.shrink(evicted, g.queue == arcB2)
	} else {
		p.items[k] = n
		p.t1.pushFront(n)
		evicted = p.shrink(evicted, false)
	}
	p.trimGhosts()
	return true, evicted
}

func (p *arc[K]) Remove(k K) bool {
	n, ok := p.items[k]
	if !ok {
		return false
	}
	if n.queue == arcT1 {
		p.t1.remove(n)
	} else {
		p.t2.remove(n)
	}
	delete(p.items, k)
	return true
}

func (p *arc[K]) SetCapacity(c int64, evicted []K) []K {
	p.cap = max(c, 0)
	p.p = min(p.p, p.cap)
	evicted = p.shrink(evicted, false)
	p.trimGhosts()
	return evicted
}

// shrink is ARC's REPLACE, repeated until the resident weight fits: evict
// T1's LRU key into B1 while T1 exceeds its target p, else T2's into B2.
func (p *arc[K]) shrink(evicted []K, hitB2 bool) []K {
	for p.Weight() > p.cap {
		var n *node[K]
		if p.t1.len > 0 && (p.t1.weight > p.p || (hitB2 && p.t1.weight == p.p) || p.t2.len == 0) {
			n = p.t1.back()
			p.t1.remove(n)
			n.queue = arcB1
			p.b1.pushFront(n)
		} else {
			n = p.t2.back()
			p.t2.remove(n)
			n.queue = arcB2
			p.b2.pushFront(n)
		}
		delete(p.items, n.key)
		p.ghosts[n.key] = n
		evicted = append(evicted, n.key)
	}
	return evicted
}

// trimGhosts keeps T1+B1 within the capacity and the whole directory
// within twice the capacity.
func (p *arc[K]) trimGhosts() {
	for p.b1.len > 0 && p.t1.weight+p.b1.weight > p.cap {
		p.dropGhost(&p.b1)
	}
	for p.b2.len > 0 && p.Weight()+p.b1.weight+p.b2.weight > 2*p.cap {
		p.dropGhost(&p.b2)
	}
}

func (p *arc[K]) dropGhost(l *list[K]) {
	g := l.back()
	l.remove(g)
	delete(p.ghosts, g.key)
}
