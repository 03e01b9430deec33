package gpu

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SimOptions configures the sim DMA backend. The zero value is a Gen4 x16
// link paced by the wall clock, a 64 MiB pool, 2 MiB staging chunks,
// DefaultStagingWorkers and 16 GiB of simulated device memory.
type SimOptions struct {
	// Link is the path the copies cross (Topology.LinkTo gives the one to a
	// discovered GPU). Zero fields take LinkModel's defaults.
	Link LinkModel
	// Clock paces completions. Nil means a wall clock, so transfers take as
	// long as the modelled link would; tests pass a VirtualClock.
	Clock Clock
	// PoolBytes sizes the host pool that AllocHost and the staging path
	// draw on; zero means DefaultPoolBytes.
	PoolBytes int
	// ChunkBytes is the largest staging chunk (at most PoolBytes); zero
	// means DefaultChunkBytes.
	ChunkBytes int
	// StagingWorkers is how many goroutines, the caller's included, copy
	// one layer's chunks at once; zero means DefaultStagingWorkers.
	StagingWorkers int
	// MemoryBytes is the simulated device memory; zero means 16 GiB.
	MemoryBytes int64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// poolSizes applies the defaults shared by both backends and checks them.
func poolSizes(pool, chunk, workers int) (int, int, int, error) {
	if pool < 0 || chunk < 0 || workers < 0 {
		return 0, 0, 0, fmt.Errorf("pool %d bytes, chunk %d bytes, %d workers: must not be negative: %w", pool, chunk, workers, ErrBadRequest)
	}
	if pool == 0 {
		pool = DefaultPoolBytes
	}
	if chunk == 0 {
		chunk = min(DefaultChunkBytes, pool)
	}
	if workers == 0 {
		workers = DefaultStagingWorkers()
	}
	if chunk > pool {
		return 0, 0, 0, fmt.Errorf("staging chunk of %d bytes exceeds the pool's %d: %w", chunk, pool, ErrBadRequest)
	}
	return pool, chunk, workers, nil
}

// SimDMA is the sim backend: host memory stands in for GPU memory, and a
// link model times the copies. Like the CUDA backend it stages pageable
// layers through its bounded pool, chunk by chunk, and lands buffers from
// AllocHost as they are; a completion goroutine (the stand-in for the copy
// engine) lands each chunk in device memory at its modelled finish time,
// in submission order.
type SimDMA struct {
	link  LinkModel
	clock Clock
	pool  *HostPool
	stage staging
	mem   int64
	log   *slog.Logger

	mu        sync.Mutex
	closed    bool
	linkFree  time.Duration // when the modelled link is next idle
	allocated int64

	queue chan *HostBuffer
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

var (
	_ DMA  = (*SimDMA)(nil)
	_ sink = (*SimDMA)(nil)
)

// NewSim starts a sim DMA engine. Close stops it.
func NewSim(opts SimOptions) (*SimDMA, error) {
	if err := opts.Link.Validate(); err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	if opts.MemoryBytes < 0 {
		return nil, fmt.Errorf("sim DMA: memory %d bytes: must not be negative: %w", opts.MemoryBytes, ErrBadRequest)
	}
	poolBytes, chunk, workers, err := poolSizes(opts.PoolBytes, opts.ChunkBytes, opts.StagingWorkers)
	if err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	d := &SimDMA{link: opts.Link.withDefaults(), clock: opts.Clock, mem: opts.MemoryBytes, log: opts.Logger}
	if d.clock == nil {
		d.clock = NewWallClock()
	}
	if d.mem == 0 {
		d.mem = 16 << 30
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	pool, err := NewHostPool(poolBytes, 0, func(sz int) ([]byte, error) { return make([]byte, sz), nil }, nil)
	if err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	d.pool = pool
	d.stage = staging{pool: pool, workers: workers, maxChunk: chunk}
	// Every queued buffer holds at least one page, so the queue never
	// holds more than the pool has pages: sends never block.
	d.queue = make(chan *HostBuffer, pool.Size()/pool.Page())
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
	err := d.stage.stage(ctx, src, d, t, layerTarget{mem: dst.mem[int64(layer)*dst.layerBytes:]})
	t.seal(err)
	if err != nil {
		return nil, fmt.Errorf("sim DMA layer %d: %w", layer, err)
	}
	return t, nil
}

// AllocHost takes n bytes from the pool for the caller to fill.
func (d *SimDMA) AllocHost(ctx context.Context, n int) (*HostBuffer, error) {
	hb, err := d.pool.Alloc(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	return hb, nil
}

// CopyHost queues hb on the link as one copy, with no staging.
func (d *SimDMA) CopyHost(ctx context.Context, dst *Buffer, layer int, hb *HostBuffer) (*Transfer, error) {
	if err := takeHost(ctx, d.pool, d, dst, layer, hb); err != nil {
		return nil, fmt.Errorf("sim DMA: %w", err)
	}
	t := newTransfer(layer, int64(hb.Len()))
	err := d.submit(t, hb, layerTarget{mem: dst.mem[int64(layer)*dst.layerBytes:]}, 0)
	if err != nil {
		d.pool.put(hb)
	}
	t.seal(err)
	if err != nil {
		return nil, fmt.Errorf("sim DMA layer %d: %w", layer, err)
	}
	return t, nil
}

func (d *SimDMA) bind() error { return nil }
func (d *SimDMA) unbind()     {}

// submit puts one buffer on the modelled link after everything before it.
func (d *SimDMA) submit(t *Transfer, hb *HostBuffer, target layerTarget, off int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	start := max(d.clock.Now(), d.linkFree)
	finish := start + d.link.Duration(int64(len(hb.b)))
	d.linkFree = finish
	t.addChunk(start)
	hb.t, hb.dst, hb.finish = t, target.mem[off:], finish
	d.queue <- hb
	return nil
}

// complete is the copy engine: it lands each buffer at its finish time and
// returns it to the pool, whatever happens.
func (d *SimDMA) complete(ctx context.Context) {
	defer d.wg.Done()
	land := func(hb *HostBuffer, err error) {
		copy(hb.dst, hb.b)
		t, finish := hb.t, hb.finish
		d.pool.put(hb) // hb may be reused from here on
		t.chunkDone(finish, 0, err)
	}
	for {
		select {
		case hb := <-d.queue:
			if err := d.clock.SleepUntil(ctx, hb.finish); err != nil {
				land(hb, ErrClosed)
				continue
			}
			land(hb, nil)
		case <-ctx.Done():
			for {
				select {
				case hb := <-d.queue:
					land(hb, ErrClosed)
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
// land at once), stops the engine and frees the pool once every buffer is
// back.
func (d *SimDMA) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.pool.shut()
	d.stop()
	d.wg.Wait()
	// The engine has drained the queue, so every buffer is back unless a
	// stager is between taking one and its closed check (microseconds), or
	// a caller still holds one from AllocHost.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.pool.Close(ctx); err != nil {
		return fmt.Errorf("close sim DMA: %w", err)
	}
	return nil
}
