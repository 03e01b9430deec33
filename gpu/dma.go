package gpu

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// DMA moves stitched KV from host memory into device buffers, one layer at
// a time, asynchronously, so that an engine can compute on layer l while
// layer l+1 is still in flight:
//
//	for l := range layers { t[l], err = dma.CopyLayer(ctx, buf, l, stitched[l]) }
//	for l := range layers { t[l].Wait(ctx); computeLayer(l) }
//
// The design card's synchronous CopyLayer(ctx, dst, layer, src) error is
// CopyLayer followed by Transfer.Wait.
type DMA interface {
	// Alloc reserves device memory for layers × layerBytes.
	Alloc(ctx context.Context, layers int, layerBytes int64) (*Buffer, error)
	// CopyLayer starts copying src into layer `layer` of dst. It returns once
	// src has been staged into the backend's pinned buffers, so the caller
	// may reuse src; the Transfer completes when the bytes are on the
	// device. ctx bounds the staging (waiting for a free staging buffer);
	// a copy already handed to the device runs to its end either way, and
	// its staging buffer always goes back to the pool.
	CopyLayer(ctx context.Context, dst *Buffer, layer int, src []byte) (*Transfer, error)
	// ReadLayer copies a layer back to host memory, for verification. Wait
	// for the layer's Transfer first.
	ReadLayer(ctx context.Context, src *Buffer, layer int, dst []byte) error
	// Free releases a buffer.
	Free(b *Buffer) error
	// Backend names the implementation ("sim", "cuda").
	Backend() string
	// Close ends every transfer still in flight (they complete with
	// ErrClosed), returns the staging buffers and frees them.
	Close() error
}

// Buffer is device memory holding one request's KV, layer after layer.
type Buffer struct {
	owner      DMA
	layers     int
	layerBytes int64
	freed      bool
	mem        []byte // sim: host memory standing in for the device
	dev        uint64 // cuda: CUdeviceptr
}

// Layers is the number of layers the buffer holds.
func (b *Buffer) Layers() int { return b.layers }

// LayerBytes is the size of one layer.
func (b *Buffer) LayerBytes() int64 { return b.layerBytes }

// limits on one allocation, so a bad request cannot overflow int64.
const (
	maxLayers     = 1 << 16
	maxLayerBytes = 1 << 40
)

func checkAlloc(layers int, layerBytes int64) error {
	if layers <= 0 || layers > maxLayers || layerBytes <= 0 || layerBytes > maxLayerBytes {
		return fmt.Errorf("allocate %d layers of %d bytes: want 1..%d layers of 1..%d bytes: %w", layers, layerBytes, maxLayers, int64(maxLayerBytes), ErrBadRequest)
	}
	return nil
}

func checkLayer(owner DMA, b *Buffer, layer int, n int) error {
	switch {
	case b == nil || b.owner != owner:
		return fmt.Errorf("buffer does not belong to this %s DMA: %w", owner.Backend(), ErrBadRequest)
	case b.freed:
		return fmt.Errorf("buffer was freed: %w", ErrBadRequest)
	case layer < 0 || layer >= b.layers:
		return fmt.Errorf("layer %d out of [0, %d): %w", layer, b.layers, ErrBadRequest)
	case int64(n) > b.layerBytes:
		return fmt.Errorf("layer %d: %d bytes exceed the layer size %d: %w", layer, n, b.layerBytes, ErrBadRequest)
	}
	return nil
}

// Transfer is one layer's copy in flight. It completes when every chunk
// of it has reached the device, or failed.
type Transfer struct {
	layer int
	bytes int64
	done  chan struct{}

	mu       sync.Mutex
	pending  int  // chunks handed to the device and not yet complete
	sealed   bool // no more chunks will be added
	err      error
	start    time.Duration // first chunk's start on the link (sim)
	finish   time.Duration // last chunk's finish (sim)
	busy     time.Duration // device time spent copying (sum over chunks)
	hasStart bool
}

func newTransfer(layer int, bytes int64) *Transfer {
	return &Transfer{layer: layer, bytes: bytes, done: make(chan struct{})}
}

// Layer is the layer being copied.
func (t *Transfer) Layer() int { return t.layer }

// Bytes is the size of the copy.
func (t *Transfer) Bytes() int64 { return t.bytes }

// Done is closed when the transfer has completed or failed.
func (t *Transfer) Done() <-chan struct{} { return t.done }

// Wait blocks until the transfer completes and returns its error, or
// returns ctx's error first (the copy goes on; its buffers still return to
// the pool).
func (t *Transfer) Wait(ctx context.Context) error {
	select {
	case <-t.done:
		return t.Err()
	case <-ctx.Done():
		return fmt.Errorf("wait for layer %d: %w", t.layer, ctx.Err())
	}
}

// Err is the transfer's error once Done is closed (nil before).
func (t *Transfer) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Finished is the clock time the last byte landed (sim backend; zero
// for CUDA, whose clock is the device's).
func (t *Transfer) Finished() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.finish
}

// Elapsed is the time from the first byte moving to the last landing
// (sim), or the device time the copy engine spent on it (CUDA, from events).
func (t *Transfer) Elapsed() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.busy > 0 {
		return t.busy
	}
	return t.finish - t.start
}

func (t *Transfer) addChunk(start time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending++
	if !t.hasStart {
		t.start, t.hasStart = start, true
	}
}

// chunkDone records one chunk's end; busy is device time (CUDA), finish
// the clock time (sim).
func (t *Transfer) chunkDone(finish, busy time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending--
	t.finish = max(t.finish, finish)
	t.busy += busy
	if err != nil && t.err == nil {
		t.err = fmt.Errorf("copy layer %d: %w", t.layer, err)
	}
	if t.sealed && t.pending == 0 {
		close(t.done)
	}
}

// seal says no more chunks follow; err (staging failed) fails the transfer.
func (t *Transfer) seal(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sealed = true
	if err != nil && t.err == nil {
		t.err = fmt.Errorf("copy layer %d: %w", t.layer, err)
	}
	if t.pending == 0 {
		close(t.done)
	}
}

// stage splits src into staging-buffer-sized chunks, copies each into a
// buffer from pool, and hands it to submit with its offset. With workers
// > 1 that many goroutines stage chunks at once (one CPU copy stream
// cannot keep up with a Gen5 x16 link); they all end before stage returns.
// submit owns the buffer once it returns nil; on its error, or when ctx
// ends, stage returns the buffers it holds and the first error.
func stage(ctx context.Context, pool *HostPool, src []byte, workers int, submit func(hb *HostBuffer, off, n int) error) error {
	size := pool.Size()
	one := func(ctx context.Context, off int) error {
		hb, err := pool.Get(ctx)
		if err != nil {
			return err
		}
		n := copy(hb.B, src[off:])
		if err := submit(hb, off, n); err != nil {
			pool.Put(hb)
			return err
		}
		return nil
	}
	chunks := (len(src) + size - 1) / size
	if workers <= 1 || chunks <= 1 {
		for off := 0; off < len(src); off += size {
			if err := one(ctx, off); err != nil {
				return err
			}
		}
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(min(workers, chunks))
	for off := 0; off < len(src); off += size {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return one(gctx, off) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}
