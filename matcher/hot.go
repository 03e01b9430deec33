package matcher

import (
	"bytes"
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// HotOptions configure a Hot sketch. The zero value of every field selects
// its default.
type HotOptions struct {
	// Capacity is how many (salt, anchor) items the sketch tracks. Zero
	// means 1024.
	Capacity int
	// MinCount is N: a segment is proposed once its guaranteed decayed
	// count reaches it. Zero means 3.
	MinCount float64
	// HalfLife is how long it takes an observation's weight to halve.
	// Zero means 10 minutes.
	HalfLife time.Duration
	// MaxSpan bounds the tokens of context kept per item, hence the
	// longest segment proposed. Zero means 2048; at least MinLen.
	MaxSpan int
	// MinLen is the shortest segment proposed. Zero means 64.
	MinLen int
	// Anchor selects the anchors counted; zero means DefaultAnchorParams().
	// Use the index's AnchorParams so proposals are findable.
	Anchor AnchorParams
}

func (o HotOptions) resolved() (HotOptions, error) {
	var errs []error
	if o.Capacity == 0 {
		o.Capacity = 1024
	}
	if o.Capacity < 1 {
		errs = append(errs, fmt.Errorf("option Capacity %d below 1: %w", o.Capacity, ErrOptions))
	}
	if o.MinCount == 0 {
		o.MinCount = 3
	}
	if !(o.MinCount > 0) || math.IsInf(o.MinCount, 0) {
		errs = append(errs, fmt.Errorf("option MinCount %v not a positive number: %w", o.MinCount, ErrOptions))
	}
	if o.HalfLife == 0 {
		o.HalfLife = 10 * time.Minute
	}
	if o.HalfLife < 0 {
		errs = append(errs, fmt.Errorf("option HalfLife %v negative: %w", o.HalfLife, ErrOptions))
	}
	if o.MinLen == 0 {
		o.MinLen = DefaultMinLen
	}
	if o.MaxSpan == 0 {
		o.MaxSpan = max(2048, o.MinLen)
	}
	if o.MinLen < 1 || o.MaxSpan < o.MinLen {
		errs = append(errs, fmt.Errorf("options MinLen %d, MaxSpan %d: need 1 ≤ MinLen ≤ MaxSpan: %w", o.MinLen, o.MaxSpan, ErrOptions))
	}
	if o.Anchor == (AnchorParams{}) {
		o.Anchor = DefaultAnchorParams()
	}
	if err := o.Anchor.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("option Anchor: %w", err))
	}
	return o, errors.Join(errs...)
}

// Hot discovers reusable content nobody marked: a Space-Saving heavy-hitter
// sketch over the anchors of incoming prompts, with exponential time decay,
// that keeps for each tracked anchor the span of tokens common to all its
// sightings. Segments whose guaranteed count reaches MinCount, extended to
// that maximal repeated span, are proposed as index candidates (Top).
//
// Time is passed in explicitly, so a sketch is deterministic under test.
// Hot is safe for concurrent use (one mutex: observing is cheap next to
// matching).
type Hot struct {
	opts HotOptions

	mu      sync.Mutex
	items   map[hotKey]*hotItem
	heap    hotHeap
	t0      time.Time // landmark of forward decay
	started bool
	anchors []Anchor
	seen    map[uint64]bool
}

type hotKey struct {
	salt Salt
	fp   uint64
}

type hotItem struct {
	key   hotKey
	count float64 // Σ weights of sightings (plus inherited error), scaled to t0
	err   float64 // Space-Saving's overestimate, same scale
	ctx   []Token // tokens common to every sighting, around the anchor
	at    int     // the anchor's offset in ctx
	idx   int     // position in the heap
}

// hotHeap is a min-heap of items by count: the eviction victim on top.
type hotHeap []*hotItem

func (h hotHeap) Len() int           { return len(h) }
func (h hotHeap) Less(i, j int) bool { return h[i].count < h[j].count }
func (h hotHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *hotHeap) Push(x any) {
	it := x.(*hotItem)
	it.idx = len(*h)
	*h = append(*h, it)
}
func (h *hotHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// NewHot returns an empty sketch. Errors wrap ErrOptions.
func NewHot(opts HotOptions) (*Hot, error) {
	o, err := opts.resolved()
	if err != nil {
		return nil, fmt.Errorf("new hot sketch: %w", err)
	}
	return &Hot{opts: o, items: map[hotKey]*hotItem{}, seen: map[uint64]bool{}}, nil
}

// maxExponent bounds the forward-decay scale 2^((now-t0)/HalfLife) before
// the sketch renormalises to a new landmark.
const maxExponent = 256

// weight returns the scaled weight of an observation at now, first moving
// the landmark if the scale would grow too large.
func (h *Hot) weight(now time.Time) float64 {
	if !h.started {
		h.t0, h.started = now, true
	}
	e := float64(now.Sub(h.t0)) / float64(h.opts.HalfLife)
	if e > maxExponent {
		f := math.Exp2(-e)
		for _, it := range h.heap {
			it.count *= f
			it.err *= f
		}
		h.t0, e = now, 0
	}
	return math.Exp2(e)
}

// Observe counts the anchors of one prompt seen at now under salt: each
// distinct anchor once, however often it recurs in the prompt.
func (h *Hot) Observe(now time.Time, salt Salt, prompt []Token) error {
	if err := checkSalt("observe", salt); err != nil {
		return err
	}
	if len(prompt) == 0 {
		return fmt.Errorf("observe: prompt: %w", ErrEmpty)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.weight(now)
	h.anchors = h.opts.Anchor.Anchors(prompt, h.anchors[:0])
	clear(h.seen)
	for _, a := range h.anchors {
		if h.seen[a.FP] {
			continue
		}
		h.seen[a.FP] = true
		k := hotKey{salt: salt, fp: a.FP}
		if it, ok := h.items[k]; ok {
			it.count += w
			it.narrow(prompt, a.Off)
			heap.Fix(&h.heap, it.idx)
			continue
		}
		if len(h.heap) < h.opts.Capacity {
			it := &hotItem{key: k, count: w}
			it.reset(prompt, a.Off, h.opts.MaxSpan)
			h.items[k] = it
			heap.Push(&h.heap, it)
			continue
		}
		// Space-Saving: the new item replaces the smallest one and inherits
		// its count as possible overestimate.
		it := h.heap[0]
		delete(h.items, it.key)
		it.key, it.err, it.count = k, it.count, it.count+w
		it.reset(prompt, a.Off, h.opts.MaxSpan)
		h.items[k] = it
		heap.Fix(&h.heap, 0)
	}
	return nil
}

// reset makes the item's span the window of at most maxSpan tokens of
// prompt centred on the anchor at off.
func (it *hotItem) reset(prompt []Token, off, maxSpan int) {
	lo := max(0, off-maxSpan/2)
	hi := min(len(prompt), lo+maxSpan)
	lo = max(0, hi-maxSpan)
	it.ctx = append(it.ctx[:0], prompt[lo:hi]...)
	it.at = off - lo
}

// narrow shrinks the item's span to what it has in common with prompt
// around the anchor at off.
func (it *hotItem) narrow(prompt []Token, off int) {
	left := CommonSuffix(it.ctx[:it.at], prompt[:off])
	right := CommonPrefix(it.ctx[it.at:], prompt[off:])
	it.ctx = it.ctx[it.at-left : it.at+right]
	it.at = left
	if cap(it.ctx) > 2*len(it.ctx)+64 {
		it.ctx = slices.Clone(it.ctx)
	}
}

// Candidate is a proposed index entry: a segment seen at least MinCount
// times (decayed) under Salt.
type Candidate struct {
	Salt   Salt
	Key    ChunkKey // ChunkKeyOf(Salt, Tokens)
	Tokens []Token
	// Count is the guaranteed decayed number of sightings at the time Top
	// was called (Space-Saving's lower bound).
	Count float64
	// Score = Count × len(Tokens): the tokens reuse would have saved, the
	// ranking for a device table of limited size.
	Score float64
}

// Top returns up to k candidates at time now, best first: by Score
// descending, then Key ascending. Segments found through several anchors
// appear once.
func (h *Hot) Top(now time.Time, k int) []Candidate {
	h.mu.Lock()
	defer h.mu.Unlock()
	if k <= 0 || !h.started {
		return nil
	}
	f := math.Exp2(-float64(now.Sub(h.t0)) / float64(h.opts.HalfLife))
	byKey := map[ChunkKey]*Candidate{}
	for _, it := range h.heap {
		c := (it.count - it.err) * f
		if c < h.opts.MinCount || len(it.ctx) < h.opts.MinLen {
			continue
		}
		key := ChunkKeyOf(it.key.salt, it.ctx)
		if prev, ok := byKey[key]; ok {
			if c > prev.Count {
				prev.Count, prev.Score = c, c*float64(len(prev.Tokens))
			}
			continue
		}
		byKey[key] = &Candidate{Salt: it.key.salt, Key: key, Tokens: slices.Clone(it.ctx), Count: c, Score: c * float64(len(it.ctx))}
	}
	out := make([]Candidate, 0, len(byKey))
	for _, c := range byKey {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b Candidate) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return bytes.Compare(a.Key[:], b.Key[:])
	})
	return out[:min(k, len(out))]
}

// Len returns the number of tracked items.
func (h *Hot) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.heap)
}
