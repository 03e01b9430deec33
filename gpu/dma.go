package gpu

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
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
//
// There are two ways in. CopyLayer takes any memory (a Go slice, an mmapped
// segment) and copies it through the engine's pinned pool on the CPU first.
// AllocHost and CopyHost skip that copy: the stitcher writes the layer
// straight into pinned memory from the pool and hands it over, and the
// device reads it from there:
//
//	hb, err := dma.AllocHost(ctx, layerBytes)
//	defer hb.Release() // no-op once CopyHost took it
//	stitchInto(hb.Bytes())
//	t, err := dma.CopyHost(ctx, buf, l, hb)
type DMA interface {
	// Alloc reserves device memory for layers × layerBytes.
	Alloc(ctx context.Context, layers int, layerBytes int64) (*Buffer, error)
	// CopyLayer starts copying src into layer `layer` of dst. It returns once
	// src has been staged into the backend's pinned pool, so the caller may
	// reuse src; the Transfer completes when the bytes are on the device.
	// Staging runs on the caller's goroutine and, for layers of several
	// chunks, on up to StagingWorkers-1 helpers, and each chunk's DMA starts
	// as soon as it is staged, overlapping the staging of the next. ctx
	// bounds the staging (waiting for pool memory); a chunk already handed to
	// the device runs to its end either way, and its pool memory always goes
	// back.
	CopyLayer(ctx context.Context, dst *Buffer, layer int, src []byte) (*Transfer, error)
	// AllocHost takes n bytes of contiguous pinned host memory from the
	// engine's pool for the caller to fill, waiting for room (bounded by
	// ctx). It fails with ErrBadRequest when n exceeds the pool and with
	// ErrClosed after Close. See HostBuffer for who gives it back.
	AllocHost(ctx context.Context, n int) (*HostBuffer, error)
	// CopyHost starts copying hb, filled by the caller, into layer `layer`
	// of dst with no staging copy. It takes hb in every case: hb goes back
	// to the pool when the copy completes or fails, or before CopyHost
	// returns an error; the caller must not touch hb's memory after the call.
	CopyHost(ctx context.Context, dst *Buffer, layer int, hb *HostBuffer) (*Transfer, error)
	// ReadLayer copies a layer back to host memory, for verification. Wait
	// for the layer's Transfer first.
	ReadLayer(ctx context.Context, src *Buffer, layer int, dst []byte) error
	// Free releases a buffer.
	Free(b *Buffer) error
	// Backend names the implementation ("sim", "cuda").
	Backend() string
	// Close stops the engine: CopyLayer, AllocHost and CopyHost fail with
	// ErrClosed from then on. What happens to transfers still in flight
	// depends on the backend. sim fails them with ErrClosed (their bytes
	// land at once). cuda waits for the device to finish them, since a DMA
	// that was started cannot be recalled, so they complete normally.
	// Either way every pool buffer a copy held is back before the pool's
	// memory is freed; a HostBuffer a caller still holds delays Close (up
	// to 10 s, then Close reports it and leaves the memory allocated rather
	// than free memory someone may still write).
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

// takeHost checks a CopyHost request and moves hb from the caller to the
// engine. On any failure hb goes back to its pool if the caller still held
// it, so that CopyHost takes hb in every case.
func takeHost(ctx context.Context, pool *HostPool, owner DMA, dst *Buffer, layer int, hb *HostBuffer) error {
	if hb == nil {
		return fmt.Errorf("nil host buffer: %w", ErrBadRequest)
	}
	if err := checkLayer(owner, dst, layer, hb.Len()); err != nil {
		hb.Release()
		return err
	}
	if err := ctx.Err(); err != nil {
		hb.Release()
		return err
	}
	if err := pool.handOver(hb); err != nil {
		hb.Release()
		return err
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
	device   time.Duration // device time from the first copy's start to the last's end (cuda)
	hasStart bool
	// cuda: the event recorded before the transfer's first copy, and what
	// gives it back once the transfer is over.
	ev     uintptr
	onDone func(*Transfer)
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
	default:
	}
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

// Elapsed is the time from the first byte moving to the last landing: on
// the sim backend's clock, or on the device's (CUDA, from an event recorded
// before the first copy and the one after the last; it includes any gap
// in which the stream waited for staging or ran other transfers' copies).
func (t *Transfer) Elapsed() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.device > 0 {
		return t.device
	}
	return t.finish - t.start
}

// addChunk counts a chunk handed to the device.
func (t *Transfer) addChunk(start time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending++
	if !t.hasStart {
		t.start, t.hasStart = start, true
	}
}

// chunkDone records one chunk's end: finish is the clock time (sim),
// device the device time since the transfer's first copy (cuda).
func (t *Transfer) chunkDone(finish, device time.Duration, err error) {
	t.mu.Lock()
	t.pending--
	t.finish = max(t.finish, finish)
	t.device = max(t.device, device)
	if err != nil && t.err == nil {
		t.err = fmt.Errorf("copy layer %d: %w", t.layer, err)
	}
	over := t.sealed && t.pending == 0
	t.mu.Unlock()
	if over {
		t.over()
	}
}

// seal says no more chunks follow; err (staging failed) fails the transfer.
func (t *Transfer) seal(err error) {
	t.mu.Lock()
	t.sealed = true
	if err != nil && t.err == nil {
		t.err = fmt.Errorf("copy layer %d: %w", t.layer, err)
	}
	over := t.pending == 0
	t.mu.Unlock()
	if over {
		t.over()
	}
}

// over runs once, when the last chunk is done and the transfer sealed.
func (t *Transfer) over() {
	if t.onDone != nil {
		t.onDone(t)
	}
	close(t.done)
}

// Staging defaults shared by both backends.
const (
	// DefaultPoolBytes is the pinned pool: a few layers for zero-copy
	// stitching, or the chunks the staging path keeps in flight.
	DefaultPoolBytes = 64 << 20
	// DefaultChunkBytes is the largest staging chunk. One
	// cuMemcpyHtoDAsync plus its event costs a few µs of driver time under
	// the submission lock; a 2 MiB chunk keeps that under a tenth of the
	// chunk's ~40 µs on a Gen5 x16 link.
	DefaultChunkBytes = 2 << 20
	// minChunk is the smallest chunk a layer is split into for parallel
	// staging: below it a helper's wake-up costs more than its copy saves.
	minChunk = 256 << 10
)

// DefaultStagingWorkers is GOMAXPROCS/2, between 1 and 8: how many
// goroutines (the caller's included) copy one layer's chunks at once. One
// CPU copy stream moves 6–12 GB/s, so a Gen5 x16 link (~55 GB/s) needs
// several; half the CPUs leaves the rest for the engine and the stitcher.
func DefaultStagingWorkers() int { return min(8, max(1, runtime.GOMAXPROCS(0)/2)) }

// staging copies pageable memory through a pool, chunk by chunk.
type staging struct {
	pool     *HostPool
	workers  int
	maxChunk int
}

// sink is the backend side of staging: bind readies a goroutine to
// submit copies (the CUDA backend locks the OS thread and makes its
// context current, once per goroutine and call, not once per chunk),
// unbind undoes it, and submit queues one staged chunk for offset off of
// the layer at target. On submit's error the buffer is still the stager's.
type sink interface {
	bind() error
	unbind()
	submit(t *Transfer, hb *HostBuffer, target layerTarget, off int) error
}

// layerTarget is where a layer goes: simulated device memory (sim) or a
// device address (cuda).
type layerTarget struct {
	mem []byte
	dev uint64
}

// pipelineChunks is how many chunks each staging worker gets of a layer
// (size permitting), so that a worker overlaps its copy of one chunk with
// the DMA of the one before, and the link starts moving after the first
// small chunk rather than after a worker's whole share: 16 MiB over 8
// workers goes as 32 chunks of 512 KiB, the first on the link after ~40 µs
// of copying instead of the ~200 µs one 2 MiB share would take.
const pipelineChunks = 4

// chunkFor splits n bytes into workers × pipelineChunks chunks of whole
// pool pages, no smaller than minChunk and no larger than maxChunk.
func (s *staging) chunkFor(n int) int {
	page := s.pool.Page()
	parts := s.workers * pipelineChunks
	c := (n + parts - 1) / parts
	c = (c + page - 1) / page * page
	return max(min(c, s.maxChunk), min(minChunk, s.maxChunk))
}

// stageRun is one layer's staging, shared by the goroutines doing it.
type stageRun struct {
	s      *staging
	ctx    context.Context
	src    []byte
	sink   sink
	t      *Transfer
	target layerTarget
	chunk  int
	chunks int
	next   atomic.Int64
	stop   atomic.Bool
	mu     sync.Mutex
	err    error
}

// stage copies src into pool buffers chunk by chunk and hands each to the
// sink as soon as it is copied, so that the device moves chunk i while the
// CPU copies chunk i+1. The caller's goroutine stages, helped by up to
// workers-1 goroutines when src spans several chunks; all end before stage
// returns. On a submit error, or when ctx ends, stage stops, gives back the
// buffers it holds, and returns the first error.
func (s *staging) stage(ctx context.Context, src []byte, k sink, t *Transfer, target layerTarget) error {
	if len(src) == 0 {
		return nil
	}
	chunk := s.chunkFor(len(src))
	r := &stageRun{s: s, ctx: ctx, src: src, sink: k, t: t, target: target, chunk: chunk, chunks: (len(src) + chunk - 1) / chunk}
	var wg sync.WaitGroup
	for range min(s.workers, r.chunks) - 1 {
		wg.Go(r.work)
	}
	r.work()
	wg.Wait()
	return r.err
}

func (r *stageRun) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
	r.stop.Store(true)
}

// work stages chunks until none is left or the run stops.
func (r *stageRun) work() {
	pool := r.s.pool
	bound := false
	defer func() {
		if bound {
			r.sink.unbind()
		}
	}()
	for !r.stop.Load() {
		i := int(r.next.Add(1) - 1)
		if i >= r.chunks {
			return
		}
		if err := r.ctx.Err(); err != nil {
			r.fail(err)
			return
		}
		off := i * r.chunk
		n := min(r.chunk, len(r.src)-off)
		hb := pool.tryAlloc(n)
		if hb == nil {
			// Waiting parks the goroutine: not with the OS thread locked,
			// which would cost a thread hand-off on every wake-up.
			if bound {
				r.sink.unbind()
				bound = false
			}
			var err error
			if hb, err = pool.alloc(r.ctx, n, bufEngine); err != nil {
				r.fail(err)
				return
			}
			if r.stop.Load() {
				pool.put(hb)
				return
			}
		}
		copy(hb.b, r.src[off:off+n])
		if !bound {
			if err := r.sink.bind(); err != nil {
				pool.put(hb)
				r.fail(err)
				return
			}
			bound = true
		}
		if err := r.sink.submit(r.t, hb, r.target, off); err != nil {
			pool.put(hb)
			r.fail(err)
			return
		}
	}
}
