package gpu

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// HostBuffer is one staging buffer of a HostPool: pinned host memory for the
// CUDA backend, ordinary memory for the sim backend.
type HostBuffer struct {
	B   []byte
	id  int
	out bool // checked out; guarded by the pool's mutex
}

// HostPool is a bounded set of equal-sized staging buffers. Get waits for a
// free buffer (or the context); every Get is matched by exactly one Put,
// which the DMA backends do on completion, failure, timeout and
// cancellation alike. Close frees the memory once every buffer is back.
type HostPool struct {
	size    int
	tokens  chan struct{} // one per free buffer; receiving one reserves a buffer
	all     []*HostBuffer
	release func([]byte) error

	mu     sync.Mutex
	free   []*HostBuffer // a stack: the buffer used last is reused first, warm in cache
	inUse  int
	closed bool
	done   chan struct{} // closed by Close
	idle   chan struct{} // signalled when inUse drops to zero
}

// NewHostPool allocates n buffers of size bytes with alloc; release frees
// one at Close (nil for memory the garbage collector owns).
func NewHostPool(n, size int, alloc func(int) ([]byte, error), release func([]byte) error) (*HostPool, error) {
	if n <= 0 || size <= 0 {
		return nil, fmt.Errorf("host pool of %d buffers of %d bytes: both must be positive: %w", n, size, ErrBadRequest)
	}
	p := &HostPool{size: size, tokens: make(chan struct{}, n), release: release, done: make(chan struct{}), idle: make(chan struct{}, 1)}
	for i := range n {
		b, err := alloc(size)
		if err == nil && len(b) != size {
			err = fmt.Errorf("allocator returned %d bytes, want %d", len(b), size)
		}
		if err != nil {
			p.freeAll()
			return nil, fmt.Errorf("allocate staging buffer %d of %d (%d bytes): %w", i, n, size, err)
		}
		hb := &HostBuffer{B: b, id: i}
		p.all = append(p.all, hb)
		p.free = append(p.free, hb)
		p.tokens <- struct{}{}
	}
	return p, nil
}

// Size is the length of every buffer.
func (p *HostPool) Size() int { return p.size }

// Cap is the number of buffers.
func (p *HostPool) Cap() int { return len(p.all) }

// InUse is the number of buffers checked out.
func (p *HostPool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse
}

// Get takes a free buffer, waiting for one. It fails with ctx's error, or
// ErrClosed once Close has begun.
func (p *HostPool) Get(ctx context.Context) (*HostBuffer, error) {
	if err := ctx.Err(); err != nil {
		// select picks at random among ready cases: check first, so that a
		// cancelled caller never takes a buffer.
		return nil, fmt.Errorf("get staging buffer: %w", err)
	}
	select {
	case <-p.done:
		return nil, fmt.Errorf("get staging buffer: %w", ErrClosed)
	default:
	}
	select {
	case <-p.tokens:
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			p.tokens <- struct{}{}
			return nil, fmt.Errorf("get staging buffer: %w", ErrClosed)
		}
		b := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		b.out = true
		p.inUse++
		return b, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("get staging buffer: %w", ctx.Err())
	case <-p.done:
		return nil, fmt.Errorf("get staging buffer: %w", ErrClosed)
	}
}

// Put returns a buffer. Returning one twice is a bug in the caller and
// panics, like a negative sync.WaitGroup counter.
func (p *HostPool) Put(b *HostBuffer) {
	p.mu.Lock()
	if !b.out || b.id >= len(p.all) || p.all[b.id] != b {
		p.mu.Unlock()
		panic("gpu: HostPool.Put of a buffer that is not checked out of this pool")
	}
	b.out = false
	p.free = append(p.free, b)
	p.inUse--
	if p.inUse == 0 {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()
	p.tokens <- struct{}{}
}

// Close stops new Gets, waits (bounded by ctx) for every buffer to come
// back, and frees them. If ctx ends first it reports how many are still
// out and frees nothing: freeing pinned memory a DMA still reads would
// corrupt it.
func (p *HostPool) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.mu.Unlock()
	for {
		p.mu.Lock()
		n := p.inUse
		p.mu.Unlock()
		if n == 0 {
			return p.freeAll()
		}
		select {
		case <-p.idle:
		case <-ctx.Done():
			return fmt.Errorf("close host pool: %d of %d buffers still in use: %w", n, len(p.all), ctx.Err())
		}
	}
}

func (p *HostPool) freeAll() error {
	var errs []error
	if p.release != nil {
		for _, b := range p.all {
			if err := p.release(b.B); err != nil {
				errs = append(errs, err)
			}
		}
	}
	p.all = nil
	return errors.Join(errs...)
}
