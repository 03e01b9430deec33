package sim

// lru is a least-recently-used cache of blocks keyed by a 64-bit id, with
// a capacity in tokens. Each entry carries a value (the prefix key the
// block was stored under) and its size. Nodes live in a slice linked by
// index, so that the cache allocates only when it grows.
type lru struct {
	capacity int64
	used     int64
	index    *index
	nodes    []lruNode
	free     []int32
	// evicted collects what the last put pushed out, for demotion.
	evicted []lruNode
}

type lruNode struct {
	key, val   uint64
	size       int32
	prev, next int32
}

const sentinel = 0

func newLRU(capacity int64) *lru {
	c := &lru{capacity: capacity, index: newIndex()}
	c.nodes = append(c.nodes, lruNode{prev: sentinel, next: sentinel}) // the list head
	return c
}

func (c *lru) unlink(i int32) {
	n := &c.nodes[i]
	c.nodes[n.prev].next = n.next
	c.nodes[n.next].prev = n.prev
}

func (c *lru) pushFront(i int32) {
	h := &c.nodes[sentinel]
	c.nodes[i].prev = sentinel
	c.nodes[i].next = h.next
	c.nodes[h.next].prev = i
	h.next = i
}

// get returns the entry's value and marks it most recently used.
func (c *lru) get(key uint64) (uint64, bool) {
	i, ok := c.index.get(key)
	if !ok {
		return 0, false
	}
	c.unlink(i)
	c.pushFront(i)
	return c.nodes[i].val, true
}

// peek returns the entry's value without changing the order.
func (c *lru) peek(key uint64) (uint64, bool) {
	i, ok := c.index.get(key)
	if !ok {
		return 0, false
	}
	return c.nodes[i].val, true
}

// put inserts or refreshes an entry as most recently used, evicting from
// the least recently used end until it fits; evictions are in c.evicted
// until the next put. An entry larger than the whole cache is not stored.
func (c *lru) put(key, val uint64, size int32) {
	c.evicted = c.evicted[:0]
	if i, ok := c.index.get(key); ok {
		c.used += int64(size) - int64(c.nodes[i].size)
		c.nodes[i].val = val
		c.nodes[i].size = size
		c.unlink(i)
		c.pushFront(i)
		c.shrink(key)
		return
	}
	if int64(size) > c.capacity {
		return
	}
	var i int32
	if n := len(c.free); n > 0 {
		i = c.free[n-1]
		c.free = c.free[:n-1]
	} else {
		c.nodes = append(c.nodes, lruNode{})
		i = int32(len(c.nodes) - 1)
	}
	c.nodes[i] = lruNode{key: key, val: val, size: size}
	c.index.put(key, i)
	c.pushFront(i)
	c.used += int64(size)
	c.shrink(key)
}

// shrink evicts least recently used entries other than keep until the
// cache fits.
func (c *lru) shrink(keep uint64) {
	for c.used > c.capacity {
		i := c.nodes[sentinel].prev
		if i == sentinel {
			return
		}
		n := c.nodes[i]
		if n.key == keep {
			if n.prev == sentinel {
				return
			}
			i = n.prev
			n = c.nodes[i]
		}
		c.unlink(i)
		c.index.del(n.key)
		c.used -= int64(n.size)
		c.free = append(c.free, i)
		c.evicted = append(c.evicted, n)
	}
}

func (c *lru) len() int { return c.index.n }
