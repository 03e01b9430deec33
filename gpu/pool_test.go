package gpu

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestHostPool(t *testing.T) {
	freed := 0
	p, err := NewHostPool(2, 16, func(n int) ([]byte, error) { return make([]byte, n), nil }, func([]byte) error { freed++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	a, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.InUse() != 2 || len(a.B) != 16 || a == b {
		t.Fatalf("in use %d, sizes %d", p.InUse(), len(a.B))
	}
	// Exhausted: a Get with a deadline gives up with the context's error.
	tctx, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
	defer cancel()
	if _, err := p.Get(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get on an empty pool: %v, want DeadlineExceeded", err)
	}
	// A cancelled context never takes a buffer, even when one is free.
	p.Put(b)
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	for range 50 {
		if _, err := p.Get(cctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Get with a cancelled context: %v", err)
		}
	}
	if b, err = p.Get(ctx); err != nil {
		t.Fatal(err)
	}
	// Close waits for the buffers still out; a Get waiting on the empty
	// pool is released with ErrClosed as soon as Close begins.
	done := make(chan error, 1)
	go func() { done <- p.Close(ctx) }()
	if _, err := p.Get(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get during Close: %v, want ErrClosed", err)
	}
	p.Put(b)
	select {
	case err := <-done:
		t.Fatalf("Close returned (%v) with a buffer still out", err)
	case <-time.After(20 * time.Millisecond):
	}
	p.Put(a)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if freed != 2 {
		t.Fatalf("freed %d buffers, want 2", freed)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a second Put of the same buffer did not panic")
		}
	}()
	p.Put(a)
}

func TestHostPoolCloseTimesOut(t *testing.T) {
	p, err := NewHostPool(1, 8, func(n int) ([]byte, error) { return make([]byte, n), nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Get(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
	defer cancel()
	if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a buffer out forever: %v, want DeadlineExceeded", err)
	}
	if _, err := NewHostPool(0, 8, nil, nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("empty pool: %v", err)
	}
	if _, err := NewHostPool(2, 8, func(int) ([]byte, error) { return nil, errors.New("no memory") }, nil); err == nil {
		t.Fatal("a failing allocator was accepted")
	}
}
