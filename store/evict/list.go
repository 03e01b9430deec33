package evict

// node is an entry of an intrusive doubly linked list; the same node moves
// between a policy's queues without reallocation.
type node[K comparable] struct {
	key        K
	weight     int64
	freq       uint8 // S3-FIFO's access counter
	queue      uint8 // which queue the node is on (policy specific)
	prev, next *node[K]
}

// list is a doubly linked list with a sentinel; front is the most recently
// inserted end, back the eviction end.
type list[K comparable] struct {
	root   node[K]
	len    int
	weight int64
}

func (l *list[K]) init() {
	l.root.next = &l.root
	l.root.prev = &l.root
}

func (l *list[K]) pushFront(n *node[K]) {
	n.prev = &l.root
	n.next = l.root.next
	l.root.next.prev = n
	l.root.next = n
	l.len++
	l.weight += n.weight
}

func (l *list[K]) remove(n *node[K]) {
	n.prev.next = n.next
	n.next.prev = n.prev
	n.prev, n.next = nil, nil
	l.len--
	l.weight -= n.weight
}

func (l *list[K]) moveToFront(n *node[K]) {
	if l.root.next == n {
		return
	}
	n.prev.next = n.next
	n.next.prev = n.prev
	n.prev = &l.root
	n.next = l.root.next
	l.root.next.prev = n
	l.root.next = n
}

// back is the eviction end, or nil when the list is empty.
func (l *list[K]) back() *node[K] {
	if l.len == 0 {
		return nil
	}
	return l.root.prev
}
