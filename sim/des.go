package sim

// event is one scheduled happening. Events are ordered by time, then by
// the order they were scheduled, so that a run is deterministic.
type event struct {
	at   int64  // virtual time, ns
	seq  uint64 // scheduling order: ties in time keep it
	kind uint8
	a, b int32 // kind-specific operands (instance, request, …)
}

func (e *event) less(o *event) bool {
	return e.at < o.at || e.at == o.at && e.seq < o.seq
}

// eventQueue is a binary min-heap of events stored by value, so that
// scheduling allocates nothing once the slice has grown.
type eventQueue struct {
	h   []event
	seq uint64
	// processed counts popped events, for the events/s figure.
	processed uint64
}

func (q *eventQueue) len() int { return len(q.h) }

func (q *eventQueue) push(at int64, kind uint8, a, b int32) {
	q.seq++
	q.h = append(q.h, event{at: at, seq: q.seq, kind: kind, a: a, b: b})
	h := q.h
	i := len(h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].less(&h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *eventQueue) pop() event {
	h := q.h
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	h = h[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h[r].less(&h[l]) {
			m = r
		}
		if !h[m].less(&h[i]) {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	q.h = h
	q.processed++
	return top
}
