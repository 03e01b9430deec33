package gpu

import (
	"context"
	"fmt"
	"math/bits"
	"sync"
	"time"
)

// DefaultPoolPage is the allocation granule of a HostPool: every buffer is
// a whole number of pages. 64 KiB keeps the waste of a layer-sized buffer
// under one page and the bitmap small (1024 bits for 64 MiB), and is a
// multiple of every page size DMA cares about.
const DefaultPoolPage = 64 << 10

// HostBuffer is a contiguous run of pages from a HostPool: pinned host
// memory for the CUDA backend, ordinary memory for the sim backend.
//
// A HostBuffer from DMA.AllocHost belongs to the caller until it is handed
// to DMA.CopyHost (which gives it back to the pool when the copy ends, or at
// once if the copy cannot start) or released with Release. Release is
// idempotent and does nothing once the buffer was handed over, so
// `defer hb.Release()` right after AllocHost never leaks and never frees a
// buffer a copy still reads.
type HostBuffer struct {
	pool    *HostPool
	b       []byte // len: the bytes asked for; cap: the same (no growing into a neighbour)
	size    int    // len(b) as allocated; b is nil once free
	first   int    // first page
	pages   int
	state   bufState // guarded by pool.mu
	staging bool     // taken by the staging path, never seen by a caller

	// What the engine that owns the buffer knows about the copy from it;
	// set by the submitting goroutine, read by the completion goroutine
	// after the queue hand-off.
	t      *Transfer
	ev     uintptr       // cuda: event recorded after the copy
	dst    []byte        // sim: where the bytes land
	finish time.Duration // sim: the modelled finish
}

type bufState uint8

const (
	bufFree   bufState = iota
	bufCaller          // from AllocHost, not yet handed over or released
	bufEngine          // staging, or handed to CopyHost
)

// Bytes is the buffer's memory: write the layer here, then hand the buffer
// to CopyHost. It is nil once the buffer went back to the pool.
func (b *HostBuffer) Bytes() []byte {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	if b.state == bufFree {
		return nil
	}
	return b.b
}

// Len is the size asked for.
func (b *HostBuffer) Len() int { return b.size }

// Release gives a buffer the caller still holds back to the pool. It does
// nothing for a buffer handed to CopyHost (the copy returns it) or already
// released.
func (b *HostBuffer) Release() {
	b.pool.mu.Lock()
	if b.state != bufCaller {
		b.pool.mu.Unlock()
		return
	}
	b.pool.freeLocked(b)
	b.pool.mu.Unlock()
}

// HostPool is a bounded arena of host memory handed out as contiguous runs
// of pages: layer-sized buffers that a stitcher fills for a zero-copy DMA
// (AllocHost), and the chunks the staging path copies pageable memory
// through. Waiters are served strictly in arrival order, so a large request
// is never starved by a stream of small ones. Close frees the memory once
// every buffer is back.
type HostPool struct {
	mem     []byte
	page    int
	npages  int
	release func([]byte) error

	mu      sync.Mutex
	used    []uint64 // bitmap, one bit per page
	inUse   int      // buffers out
	usedPg  int      // pages out
	waiters []*poolWaiter
	closed  bool
	freed   bool
	idle    chan struct{} // signalled when inUse drops to zero
	spare   []*HostBuffer // staging HostBuffer structs to reuse (no allocation per chunk)
}

type poolWaiter struct {
	pages, n int
	state    bufState
	ready    chan *HostBuffer // buffered 1; receives the buffer or nil (closed)
}

// NewHostPool allocates size bytes (rounded up to whole pages of page
// bytes) with one call of alloc; release frees it at Close (nil for memory
// the garbage collector owns). page ≤ 0 means DefaultPoolPage.
func NewHostPool(size, page int, alloc func(int) ([]byte, error), release func([]byte) error) (*HostPool, error) {
	if page <= 0 {
		page = DefaultPoolPage
	}
	if size <= 0 {
		return nil, fmt.Errorf("host pool of %d bytes: must be positive: %w", size, ErrBadRequest)
	}
	npages := (size + page - 1) / page
	total := npages * page
	mem, err := alloc(total)
	if err == nil && len(mem) != total {
		if release != nil && mem != nil {
			_ = release(mem)
		}
		err = fmt.Errorf("allocator returned %d bytes, want %d", len(mem), total)
	}
	if err != nil {
		return nil, fmt.Errorf("allocate host pool of %d bytes: %w", total, err)
	}
	return &HostPool{
		mem: mem, page: page, npages: npages, release: release,
		used: make([]uint64, (npages+63)/64), idle: make(chan struct{}, 1),
		spare: make([]*HostBuffer, 0, min(npages, 1024)),
	}, nil
}

// Size is the pool's capacity in bytes.
func (p *HostPool) Size() int { return p.npages * p.page }

// Page is the allocation granule.
func (p *HostPool) Page() int { return p.page }

// InUse is the number of buffers out (held by callers or by copies).
func (p *HostPool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// InUseBytes is the memory out, in whole pages.
func (p *HostPool) InUseBytes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.usedPg * p.page
}

func (p *HostPool) pagesFor(n int) int { return max(1, (n+p.page-1)/p.page) }

// Alloc takes a contiguous buffer of n bytes for the caller (see
// HostBuffer for who returns it), waiting for room. It fails at once with
// ErrBadRequest when n exceeds the pool, with ctx's error when ctx ends
// first, and with ErrClosed once Close has begun. A cancelled ctx never
// takes memory, even when some is free.
func (p *HostPool) Alloc(ctx context.Context, n int) (*HostBuffer, error) {
	return p.alloc(ctx, n, bufCaller)
}

func (p *HostPool) alloc(ctx context.Context, n int, state bufState) (*HostBuffer, error) {
	if n <= 0 || n > p.Size() {
		return nil, fmt.Errorf("host buffer of %d bytes: want 1..%d (the pool's size): %w", n, p.Size(), ErrBadRequest)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("host buffer of %d bytes: %w", n, err)
	}
	pages := p.pagesFor(n)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("host buffer of %d bytes: %w", n, ErrClosed)
	}
	if len(p.waiters) == 0 {
		if hb := p.takeLocked(pages, n, state); hb != nil {
			p.mu.Unlock()
			return hb, nil
		}
	}
	w := &poolWaiter{pages: pages, n: n, state: state, ready: make(chan *HostBuffer, 1)}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()
	select {
	case hb := <-w.ready:
		if hb == nil {
			return nil, fmt.Errorf("host buffer of %d bytes: %w", n, ErrClosed)
		}
		return hb, nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, x := range p.waiters {
			if x == w {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		// Served between ctx ending and the removal: give it back (which
		// also serves the waiters behind). Otherwise a waiter that left may
		// have been the queue's head, blocking the others.
		p.mu.Lock()
		select {
		case hb := <-w.ready:
			if hb != nil {
				p.freeLocked(hb)
			}
		default:
			p.serveLocked()
		}
		p.mu.Unlock()
		return nil, fmt.Errorf("host buffer of %d bytes: %w", n, ctx.Err())
	}
}

// tryAlloc takes a staging buffer without waiting, unless someone is
// already waiting (arrival order) or the pool is full or closed.
func (p *HostPool) tryAlloc(n int) *HostBuffer {
	pages := p.pagesFor(n)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.waiters) > 0 {
		return nil
	}
	return p.takeLocked(pages, n, bufEngine)
}

// takeLocked finds the lowest run of pages free pages (first fit: the
// buffers used last stay warm in cache) and marks it used.
func (p *HostPool) takeLocked(pages, n int, state bufState) *HostBuffer {
	first := p.findLocked(pages)
	if first < 0 {
		return nil
	}
	for i := first; i < first+pages; i++ {
		p.used[i/64] |= 1 << (i % 64)
	}
	p.inUse++
	p.usedPg += pages
	var hb *HostBuffer
	if state == bufEngine && len(p.spare) > 0 {
		hb = p.spare[len(p.spare)-1]
		p.spare = p.spare[:len(p.spare)-1]
		*hb = HostBuffer{}
	} else {
		hb = &HostBuffer{}
	}
	off := first * p.page
	hb.pool, hb.b, hb.size, hb.first, hb.pages, hb.state = p, p.mem[off:off+n:off+n], n, first, pages, state
	// Staging buffers never reach a caller, so their structs can be reused
	// once back; a caller's may still be referenced after Release.
	hb.staging = state == bufEngine
	return hb
}

// findLocked returns the first page of the lowest free run of length
// pages, or -1. Full words are skipped 64 pages at a time.
func (p *HostPool) findLocked(pages int) int {
	run, start := 0, 0
	for i := 0; i < p.npages; {
		if i%64 == 0 && p.used[i/64] == ^uint64(0) {
			run, i = 0, i+64
			continue
		}
		if i%64 == 0 && p.used[i/64] == 0 && i+64 <= p.npages {
			if run == 0 {
				start = i
			}
			run += 64
			i += 64
			if run >= pages {
				return start
			}
			continue
		}
		w := p.used[i/64] >> (i % 64)
		if w&1 != 0 {
			// Skip the used bits at once.
			skip := bits.TrailingZeros64(^w)
			run, i = 0, i+skip
			continue
		}
		if run == 0 {
			start = i
		}
		run++
		i++
		if run >= pages {
			return start
		}
	}
	return -1
}

// put returns a buffer the engine held. A buffer that is not out is a bug
// in the engine and panics, like a negative sync.WaitGroup counter.
func (p *HostPool) put(hb *HostBuffer) {
	p.mu.Lock()
	if hb.pool != p || hb.state != bufEngine {
		p.mu.Unlock()
		panic("gpu: HostPool.put of a buffer that is not out of this pool")
	}
	p.freeLocked(hb)
	p.mu.Unlock()
}

// handOver moves a caller's buffer to the engine (CopyHost). It fails if
// the buffer is not the caller's to give.
func (p *HostPool) handOver(hb *HostBuffer) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if hb.pool != p {
		return fmt.Errorf("host buffer from another engine's pool: %w", ErrBadRequest)
	}
	if hb.state != bufCaller {
		return fmt.Errorf("host buffer already released or handed to a copy: %w", ErrBadRequest)
	}
	hb.state = bufEngine
	return nil
}

func (p *HostPool) freeLocked(hb *HostBuffer) {
	for i := hb.first; i < hb.first+hb.pages; i++ {
		p.used[i/64] &^= 1 << (i % 64)
	}
	p.inUse--
	p.usedPg -= hb.pages
	hb.state, hb.b, hb.t, hb.dst = bufFree, nil, nil, nil
	if hb.staging && len(p.spare) < cap(p.spare) {
		p.spare = append(p.spare, hb)
	}
	if p.inUse == 0 {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
	p.serveLocked()
}

// serveLocked hands free runs to waiters in arrival order, stopping at the
// first that does not fit.
func (p *HostPool) serveLocked() {
	for len(p.waiters) > 0 && !p.closed {
		w := p.waiters[0]
		hb := p.takeLocked(w.pages, w.n, w.state)
		if hb == nil {
			return
		}
		p.waiters = p.waiters[1:]
		w.ready <- hb
	}
}

// shut stops new allocations and fails every waiter with ErrClosed.
func (p *HostPool) shut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	for _, w := range p.waiters {
		w.ready <- nil
	}
	p.waiters = nil
}

// Close stops new allocations, waits (bounded by ctx) for every buffer to
// come back, and frees the memory. If ctx ends first it reports how many
// are still out and frees nothing: freeing pinned memory a DMA still reads,
// or a caller still writes, would corrupt it.
func (p *HostPool) Close(ctx context.Context) error {
	p.shut()
	for {
		p.mu.Lock()
		n, freed := p.inUse, p.freed
		if n == 0 && !freed {
			p.freed = true
		}
		p.mu.Unlock()
		if freed {
			return nil
		}
		if n == 0 {
			if p.release != nil {
				return p.release(p.mem)
			}
			return nil
		}
		select {
		case <-p.idle:
		case <-ctx.Done():
			return fmt.Errorf("close host pool: %d buffers (%d bytes) still out: %w", n, p.InUseBytes(), ctx.Err())
		}
	}
}
