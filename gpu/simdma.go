package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"
)

// Staging defaults shared by both backends.
const (
	DefaultStagingBuffers = 8
	DefaultStagingBytes   = 4 << 20
)

// DefaultStagingWorkers is min(4, GOMAXPROCS): a few CPU copy streams
// together feed a PCIe Gen5 x16 link, where one cannot.
func DefaultStagingWorkers() int { return min(4, runtime.GOMAXPROCS(0)) }

// SimOptions configures the sim DMA backend. The zero value is a Gen4 x16
// link paced by the wall clock, 8 × 4 MiB staging buffers and 16 GiB of
// simulated device memory.
type SimOptions struct {
	// Link is the path the copies cross (Topology.LinkTo gives the one to a
	// discovered GPU). Zero fields take LinkModel's defaults.
	Link LinkModel
	// Clock paces completions. Nil means a wall clock, so transfers take as
	// long as the modelled link would; tests pass a VirtualClock.
	Clock Clock
	// StagingBuffers and StagingBytes size the staging pool (defaults
	// DefaultStagingBuffers, DefaultStagingBytes).
	StagingBuffers int
	StagingBytes   int
	// StagingWorkers is how many goroutines copy one layer's chunks into
	// staging at once; zero means DefaultStagingWorkers.
	StagingWorkers int
	// MemoryBytes is the simulated device memory; zero means 16 GiB.
	MemoryBytes int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// SimDMA is the sim backend: host memory stands in for GPU memory, and a
// link model times the copies. Like the CUDA backend it stages each layer
// through a bounded pool of host buffers, and a completion goroutine (the
// stand-in for the copy engine) lands each chunk in device memory at its
// modelled finish time, in submission order.
type SimDMA struct {
	link  LinkModel
	clock Clock
	pool  *HostPool
	mem   int64
	log   *slog.Logger
	// workers stage one layer's chunks in parallel.
	workers int

	mu        sync.Mutex
	closed    bool
	linkFree  time.Duration // when the modelled link is next idle
	allocated int64

	queue chan *simChunk
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

type simChunk struct {
	t      *Transfer
	hb     *HostBuffer
	n      int
	dst    []byte
	finish time.Duration
}

var _ DMA = (*SimDMA)(nil)

// NewSim starts a sim DMA engine. Close stops it.
func NewSim(opts SimOptions) (*SimDMA, error) {
	if err := opts.Link.Validate(); err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	if opts.StagingBuffers < 0 || opts.StagingBytes < 0 || opts.MemoryBytes < 0 {
		return nil, fmt.Errorf("sim DMA: staging %d × %d bytes, memory %d: must not be negative: %w", opts.StagingBuffers, opts.StagingBytes, opts.MemoryBytes, ErrBadRequest)
	}
	n, size := opts.StagingBuffers, opts.StagingBytes
	if n == 0 {
		n = DefaultStagingBuffers
	}
	if size == 0 {
		size = DefaultStagingBytes
	}
	d := &SimDMA{link: opts.Link.withDefaults(), clock: opts.Clock, mem: opts.MemoryBytes, log: opts.Logger, workers: opts.StagingWorkers}
	if d.workers <= 0 {
		d.workers = DefaultStagingWorkers()
	}
	if d.clock == nil {
		d.clock = NewWallClock()
	}
	if d.mem == 0 {
		d.mem = 16 << 30
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	pool, err := NewHostPool(n, size, func(sz int) ([]byte, error) { return make([]byte, sz), nil }, nil)
	if err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	d.pool = pool
	// Every queued chunk holds a staging buffer, so the queue never holds
	// more than the pool has: sends never block.
	d.queue = make(chan *simChunk, n)
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	d.wg.Add(1)
	go d.complete(ctx)
	return d, nil
}

// Backend is "sim".
func (d *SimDMA) Backend() string { return "sim" }

// Link is the model the engine times copies with.
func (d *SimDMA) Link() LinkModel { return d.link }

// Pool is the staging pool (for its InUse count).
func (d *SimDMA) Pool() *HostPool { return d.pool }

// Alloc reserves simulated device memory.
func (d *SimDMA) Alloc(ctx context.Context, layers int, layerBytes int64) (*Buffer, error) {
	if err := checkAlloc(layers, layerBytes); err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sim DMA alloc: %w", err)
	}
	size := int64(layers) * layerBytes
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("sim DMA alloc: %w", ErrClosed)
	}
	if d.allocated+size > d.mem {
		return nil, fmt.Errorf("sim DMA alloc %d bytes: %d of %d in use: %w", size, d.allocated, d.mem, ErrBadRequest)
	}
	d.allocated += size
	return &Buffer{owner: d, layers: layers, layerBytes: layerBytes, mem: make([]byte, size)}, nil
}

// Free releases a buffer.
func (d *SimDMA) Free(b *Buffer) error {
	if err := checkLayer(d, b, 0, 0); err != nil {
		return fmt.Errorf("sim DMA free: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	b.freed = true
	d.allocated -= int64(len(b.mem))
	b.mem = nil
	return nil
}

// CopyLayer stages src chunk by chunk and queues each chunk on the link.
func (d *SimDMA) CopyLayer(ctx context.Context, dst *Buffer, layer int, src []byte) (*Transfer, error) {
	if err := checkLayer(d, dst, layer, len(src)); err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	t := newTransfer(layer, int64(len(src)))
	base := int64(layer) * dst.layerBytes
	err := stage(ctx, d.pool, src, d.workers, func(hb *HostBuffer, off, n int) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed {
			return ErrClosed
		}
		start := max(d.clock.Now(), d.linkFree)
		finish := start + d.link.Duration(int64(n))
		d.linkFree = finish
		t.addChunk(start)
		d.queue <- &simChunk{t: t, hb: hb, n: n, dst: dst.mem[base+int64(off):], finish: finish}
		return nil
	})
	t.seal(err)
	if err != nil {
		return nil, fmt.Errorf("sim DMA layer %d: %w", layer, err)
	}
	return t, nil
}

// complete is the copy engine: it lands each chunk at its finish time and
// returns its staging buffer, whatever happens.
func (d *SimDMA) complete(ctx context.Context) {
	defer d.wg.Done()
	land := func(c *simChunk, err error) {
		copy(c.dst, c.hb.B[:c.n])
		d.pool.Put(c.hb)
		c.t.chunkDone(c.finish, 0, err)
	}
	for {
		select {
		case c := <-d.queue:
			if err := d.clock.SleepUntil(ctx, c.finish); err != nil {
				land(c, ErrClosed)
				continue
			}
			land(c, nil)
		case <-ctx.Done():
			for {
				select {
				case c := <-d.queue:
					land(c, ErrClosed)
				default:
					return
				}
			}
		}
	}
}

// ReadLayer copies a layer of simulated device memory out.
func (d *SimDMA) ReadLayer(ctx context.Context, src *Buffer, layer int, dst []byte) error {
	if err := checkLayer(d, src, layer, len(dst)); err != nil {
		return fmt.Errorf("sim DMA read: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sim DMA read: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(dst, src.mem[int64(layer)*src.layerBytes:])
	return nil
}

// Close fails the transfers still in flight with ErrClosed (their bytes
// land at once), stops the engine and frees the staging pool.
func (d *SimDMA) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.stop()
	d.wg.Wait()
	// The engine has drained the queue, so every buffer is back unless a
	// CopyLayer is between Get and its closed check; it returns its buffer
	// within microseconds.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.pool.Close(ctx); err != nil {
		return fmt.Errorf("close sim DMA: %w", err)
	}
	return nil
}
