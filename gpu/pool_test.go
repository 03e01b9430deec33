package gpu

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
)

func newTestPool(t *testing.T, size, page int) (*HostPool, *int) {
	t.Helper()
	freed := 0
	p, err := NewHostPool(size, page, func(n int) ([]byte, error) { return make([]byte, n), nil }, func([]byte) error { freed++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return p, &freed
}

// TestHostPoolRuns: buffers are contiguous runs of whole pages, taken
// lowest first, and come back for reuse.
func TestHostPoolRuns(t *testing.T) {
	ctx := t.Context()
	p, freed := newTestPool(t, 8*16, 16) // 8 pages of 16 bytes
	if p.Size() != 128 || p.Page() != 16 {
		t.Fatalf("size %d, page %d", p.Size(), p.Page())
	}
	a, err := p.Alloc(ctx, 40) // 3 pages
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Alloc(ctx, 16) // 1 page
	if err != nil {
		t.Fatal(err)
	}
	if a.first != 0 || a.pages != 3 || b.first != 3 || len(a.Bytes()) != 40 || cap(a.Bytes()) != 40 || a.Len() != 40 {
		t.Fatalf("a at page %d (%d pages, len %d cap %d), b at page %d", a.first, a.pages, len(a.Bytes()), cap(a.Bytes()), b.first)
	}
	if p.InUse() != 2 || p.InUseBytes() != 64 {
		t.Fatalf("in use %d buffers, %d bytes", p.InUse(), p.InUseBytes())
	}
	a.Release()
	a.Release() // idempotent
	if a.Bytes() != nil {
		t.Fatal("a released buffer still shows its memory")
	}
	// The hole at pages 0-2 is reused first; a 4-page run must go after b.
	c, err := p.Alloc(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Alloc(ctx, 48)
	if err != nil {
		t.Fatal(err)
	}
	if c.first != 4 || d.first != 0 {
		t.Fatalf("4-page run at %d (want 4), 3-page run at %d (want 0)", c.first, d.first)
	}
	for _, hb := range []*HostBuffer{b, c, d} {
		hb.Release()
	}
	if _, err := p.Alloc(ctx, 129); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("a buffer larger than the pool: %v, want ErrBadRequest", err)
	}
	if _, err := p.Alloc(ctx, 0); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("an empty buffer: %v, want ErrBadRequest", err)
	}
	all, err := p.Alloc(ctx, 128)
	if err != nil {
		t.Fatalf("the whole pool once everything is back: %v", err)
	}
	all.Release()
	if err := p.Close(ctx); err != nil || *freed != 1 {
		t.Fatalf("Close: %v, freed %d times (want once)", err, *freed)
	}
	if err := p.Close(ctx); err != nil || *freed != 1 {
		t.Fatalf("second Close: %v, freed %d times", err, *freed)
	}
	if _, err := p.Alloc(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Alloc after Close: %v, want ErrClosed", err)
	}
}

// TestHostPoolWaitsInOrder: a large request that does not fit waits, and
// small requests that would fit queue behind it instead of starving it.
func TestHostPoolWaitsInOrder(t *testing.T) {
	ctx := t.Context()
	p, _ := newTestPool(t, 4*16, 16)
	a, _ := p.Alloc(ctx, 16)
	b, _ := p.Alloc(ctx, 16)
	got := make(chan *HostBuffer, 2)
	go func() {
		hb, err := p.Alloc(ctx, 64) // the whole pool
		if err != nil {
			t.Error(err)
		}
		got <- hb
	}()
	testutil.Eventually(t, "the large request waits", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.waiters) == 1 })
	// Two pages are free, but the large request arrived first.
	if hb := p.tryAlloc(16); hb != nil {
		t.Fatal("a small request jumped the queue")
	}
	go func() {
		hb, err := p.Alloc(ctx, 16)
		if err != nil {
			t.Error(err)
		}
		got <- hb
	}()
	testutil.Eventually(t, "the small request queues behind", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.waiters) == 2 })
	a.Release()
	select {
	case hb := <-got:
		t.Fatalf("served %d bytes with 3 pages free and the 4-page request first", hb.Len())
	case <-time.After(20 * time.Millisecond):
	}
	b.Release()
	big := <-got
	if big.Len() != 64 {
		t.Fatalf("first served %d bytes, want the 64-byte request", big.Len())
	}
	big.Release()
	small := <-got
	small.Release()
	if p.InUse() != 0 {
		t.Fatalf("%d buffers out", p.InUse())
	}
}

// TestHostPoolCancellation: a request cancelled while waiting leaves the
// queue (and unblocks the ones behind it), a cancelled context never takes
// memory, and Close fails every waiter.
func TestHostPoolCancellation(t *testing.T) {
	ctx := t.Context()
	p, freed := newTestPool(t, 4*16, 16)
	a, _ := p.Alloc(ctx, 48)
	tctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	if _, err := p.Alloc(tctx, 32); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Alloc on a full pool with a deadline: %v, want DeadlineExceeded", err)
	}
	// The timed-out 2-page request no longer blocks a 1-page one.
	one, err := p.Alloc(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	one.Release()
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	for range 50 {
		if _, err := p.Alloc(cctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("Alloc with a cancelled context: %v", err)
		}
	}
	if p.InUse() != 1 {
		t.Fatalf("%d buffers out, want 1", p.InUse())
	}
	errc := make(chan error, 1)
	go func() { _, err := p.Alloc(ctx, 64); errc <- err }()
	testutil.Eventually(t, "a request waits", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.waiters) == 1 })
	done := make(chan error, 1)
	go func() { done <- p.Close(ctx) }()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("a request waiting at Close: %v, want ErrClosed", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Close returned (%v) with a buffer still out", err)
	case <-time.After(20 * time.Millisecond):
	}
	a.Release()
	if err := <-done; err != nil || *freed != 1 {
		t.Fatalf("Close: %v, freed %d", err, *freed)
	}
}

func TestHostPoolCloseTimesOut(t *testing.T) {
	p, freed := newTestPool(t, 8, 8)
	if _, err := p.Alloc(t.Context(), 8); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) || *freed != 0 {
		t.Fatalf("Close with a buffer out forever: %v, freed %d; want DeadlineExceeded and nothing freed", err, *freed)
	}
	if _, err := NewHostPool(0, 8, nil, nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("empty pool: %v", err)
	}
	if _, err := NewHostPool(64, 8, func(int) ([]byte, error) { return nil, errors.New("no memory") }, nil); err == nil {
		t.Fatal("a failing allocator was accepted")
	}
	if _, err := NewHostPool(64, 8, func(int) ([]byte, error) { return make([]byte, 8), nil }, nil); err == nil {
		t.Fatal("an allocator returning too little was accepted")
	}
	p2, err := NewHostPool(100, 0, func(n int) ([]byte, error) { return make([]byte, n), nil }, nil)
	if err != nil || p2.Page() != DefaultPoolPage || p2.Size() != DefaultPoolPage {
		t.Fatalf("default page: %v, page %d size %d", err, p2.Page(), p2.Size())
	}
}

// TestHostPoolEngineBuffers: the engine's own buffers are checked, and a
// caller's buffer is handed over exactly once.
func TestHostPoolEngineBuffers(t *testing.T) {
	p, _ := newTestPool(t, 4*16, 16)
	hb := p.tryAlloc(20)
	if hb == nil || hb.pages != 2 {
		t.Fatalf("tryAlloc: %+v", hb)
	}
	p.put(hb)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a second put of the same buffer did not panic")
			}
		}()
		p.put(hb)
	}()
	c, err := p.Alloc(t.Context(), 16)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newTestPool(t, 16, 16)
	if err := other.handOver(c); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("hand a buffer to another pool: %v", err)
	}
	if err := p.handOver(c); err != nil {
		t.Fatal(err)
	}
	if err := p.handOver(c); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("second hand-over: %v, want ErrBadRequest", err)
	}
	c.Release() // the engine owns it now: no effect
	if p.InUse() != 1 {
		t.Fatalf("Release of a handed-over buffer changed the pool: %d out", p.InUse())
	}
	p.put(c)
	if p.InUse() != 0 {
		t.Fatalf("%d out", p.InUse())
	}
}

// TestHostPoolConcurrent hammers the pool from several goroutines with
// random sizes, random cancellation and random hold times; at the end
// nothing is out and every page is free.
func TestHostPoolConcurrent(t *testing.T) {
	p, _ := newTestPool(t, 32*64, 64)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 11))
			for range 300 {
				ctx, cancel := context.WithCancel(t.Context())
				if r.IntN(4) == 0 {
					cancel()
				}
				hb, err := p.Alloc(ctx, 1+r.IntN(p.Size()/2))
				cancel()
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("Alloc: %v", err)
					}
					continue
				}
				b := hb.Bytes()
				b[0], b[len(b)-1] = byte(g), byte(g) // the race detector sees overlaps
				if r.IntN(2) == 0 {
					time.Sleep(time.Duration(r.IntN(50)) * time.Microsecond)
				}
				hb.Release()
			}
		})
	}
	wg.Wait()
	if p.InUse() != 0 {
		t.Fatalf("%d buffers out", p.InUse())
	}
	for i, w := range p.used {
		if w != 0 {
			t.Fatalf("bitmap word %d = %#x after everything came back", i, w)
		}
	}
}

// TestHostPoolCancelWhileServed races a waiter's cancellation against the
// release that serves it: whichever wins, the buffer is either the
// waiter's or back in the pool, never lost and never returned twice.
func TestHostPoolCancelWhileServed(t *testing.T) {
	p, _ := newTestPool(t, 4*16, 16)
	for i := range 300 {
		all, err := p.Alloc(t.Context(), 64)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		got := make(chan *HostBuffer, 1)
		go func() {
			hb, err := p.Alloc(ctx, 16+i%48)
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Error(err)
			}
			got <- hb
		}()
		testutil.Eventually(t, "the request waits", func() bool { p.mu.Lock(); defer p.mu.Unlock(); return len(p.waiters) == 1 })
		// Cancel first, release at once: the waiter wakes for its
		// context, often after the release has already served it.
		cancel()
		all.Release()
		if hb := <-got; hb != nil {
			hb.Release()
		}
		if n := p.InUse(); n != 0 {
			t.Fatalf("round %d: %d buffers out after the race", i, n)
		}
		cancel()
	}
}
