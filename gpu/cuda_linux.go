//go:build linux

package gpu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"
)

// DefaultCUDALibrary is the CUDA driver library (not the toolkit's runtime).
const DefaultCUDALibrary = "libcuda.so.1"

// CUDA driver constants (cuda.h).
const (
	cuStreamNonBlocking  = 0x1
	cuEventDefault       = 0x0
	cuMemHostRegPortable = 0x1
)

// cudaLib holds the driver functions, bound through purego. CUresult is a
// C enum: int32.
type cudaLib struct {
	handle uintptr

	cuInit                    func(flags uint32) int32
	cuDriverGetVersion        func(v *int32) int32
	cuGetErrorName            func(code int32, name **byte) int32
	cuDeviceGetCount          func(n *int32) int32
	cuDeviceGet               func(dev *int32, ordinal int32) int32
	cuDeviceGetName           func(name *byte, n int32, dev int32) int32
	cuDeviceGetPCIBusId       func(bus *byte, n int32, dev int32) int32
	cuDeviceTotalMem          func(bytes *uint64, dev int32) int32
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuMemAlloc                func(dptr *uint64, size uint64) int32
	cuMemFree                 func(dptr uint64) int32
	cuMemHostAlloc            func(pp *unsafe.Pointer, size uint64, flags uint32) int32
	cuMemFreeHost             func(p unsafe.Pointer) int32
	cuMemHostRegister         func(p unsafe.Pointer, size uint64, flags uint32) int32
	cuMemHostUnregister       func(p unsafe.Pointer) int32
	cuMemcpyHtoD              func(dst uint64, src unsafe.Pointer, n uint64) int32
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, n uint64, stream uintptr) int32
	cuMemcpyDtoH              func(dst unsafe.Pointer, src uint64, n uint64) int32
	cuStreamCreate            func(s *uintptr, flags uint32) int32
	cuStreamDestroy           func(s uintptr) int32
	cuStreamSynchronize       func(s uintptr) int32
	cuEventCreate             func(e *uintptr, flags uint32) int32
	cuEventRecord             func(e uintptr, s uintptr) int32
	cuEventSynchronize        func(e uintptr) int32
	cuEventElapsedTime        func(ms *float32, start, end uintptr) int32
	cuEventDestroy            func(e uintptr) int32
}

// cudaSymbols lists, for each function, the symbol names to try in order.
// cuda.h #defines most API names to versioned symbols (cuMemAlloc →
// cuMemAlloc_v2), and libcuda keeps the unversioned ones for old binaries
// with the old ABI, so we must ask for the versioned name.
func (l *cudaLib) symbols() []struct {
	fptr  any
	names []string
} {
	type sym = struct {
		fptr  any
		names []string
	}
	return []sym{
		{&l.cuInit, []string{"cuInit"}},
		{&l.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&l.cuGetErrorName, []string{"cuGetErrorName"}},
		{&l.cuDeviceGetCount, []string{"cuDeviceGetCount"}},
		{&l.cuDeviceGet, []string{"cuDeviceGet"}},
		{&l.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&l.cuDeviceGetPCIBusId, []string{"cuDeviceGetPCIBusId"}},
		{&l.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}},
		{&l.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&l.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
		{&l.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&l.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&l.cuMemFree, []string{"cuMemFree_v2"}},
		{&l.cuMemHostAlloc, []string{"cuMemHostAlloc"}},
		{&l.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&l.cuMemHostRegister, []string{"cuMemHostRegister_v2"}},
		{&l.cuMemHostUnregister, []string{"cuMemHostUnregister"}},
		{&l.cuMemcpyHtoD, []string{"cuMemcpyHtoD_v2"}},
		{&l.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&l.cuMemcpyDtoH, []string{"cuMemcpyDtoH_v2"}},
		{&l.cuStreamCreate, []string{"cuStreamCreate"}},
		{&l.cuStreamDestroy, []string{"cuStreamDestroy_v2"}},
		{&l.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&l.cuEventCreate, []string{"cuEventCreate"}},
		{&l.cuEventRecord, []string{"cuEventRecord"}},
		{&l.cuEventSynchronize, []string{"cuEventSynchronize"}},
		{&l.cuEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}},
		{&l.cuEventDestroy, []string{"cuEventDestroy_v2"}},
	}
}

// loadCUDA opens the driver library and binds every function. Each symbol
// is looked up with Dlsym before it is registered, because purego's
// RegisterLibFunc panics on a missing one; a library without them all is
// ErrNoCUDA, naming what is missing.
func loadCUDA(path string) (*cudaLib, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("open %s: %v: %w", path, err, ErrNoCUDA)
	}
	l := &cudaLib{handle: h}
	var missing []string
	addrs := make([]uintptr, 0, 32)
	syms := l.symbols()
	for _, s := range syms {
		var addr uintptr
		for _, n := range s.names {
			if a, err := purego.Dlsym(h, n); err == nil && a != 0 {
				addr = a
				break
			}
		}
		if addr == 0 {
			missing = append(missing, strings.Join(s.names, "|"))
		}
		addrs = append(addrs, addr)
	}
	if len(missing) > 0 {
		_ = purego.Dlclose(h)
		return nil, fmt.Errorf("%s lacks %s: %w", path, strings.Join(missing, ", "), ErrNoCUDA)
	}
	for i, s := range syms {
		purego.RegisterFunc(s.fptr, addrs[i])
	}
	return l, nil
}

// check turns a CUresult into an error.
func (l *cudaLib) check(call string, r int32) error {
	if r == 0 {
		return nil
	}
	name := "unknown"
	var p *byte
	if l.cuGetErrorName(r, &p) == 0 && p != nil {
		name = cString(p, 64)
	}
	return &CUDAError{Call: call, Code: r, Name: name}
}

// cString reads a NUL-terminated C string of at most max bytes.
func cString(p *byte, max int) string {
	var b []byte
	for i := range max {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// CUDAOptions configures the CUDA backend. The zero value opens device 0
// through libcuda.so.1 with 8 × 4 MiB pinned staging buffers.
type CUDAOptions struct {
	// Library is the driver library path; empty means DefaultCUDALibrary.
	Library string
	// Device is the CUDA ordinal, used when BusID is empty.
	Device int
	// BusID selects the device by PCI address (any form ParseBusID takes).
	BusID string
	// StagingBuffers and StagingBytes size the pinned staging pool;
	// StagingWorkers goroutines fill it for one layer (zero means
	// DefaultStagingWorkers).
	StagingBuffers int
	StagingBytes   int
	StagingWorkers int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// CUDAInfo describes the device a CUDA engine drives.
type CUDAInfo struct {
	Name          string
	BusID         string // sysfs form
	TotalMemory   uint64
	DriverVersion int // e.g. 12040 for 12.4
}

// CUDADMA is the CUDA backend: libcuda through purego (no cgo), one
// non-blocking stream, pinned staging buffers from cuMemHostAlloc, and an
// event pair per staging buffer that times each chunk and tells the
// completion goroutine when the buffer is free again.
type CUDADMA struct {
	lib    *cudaLib
	dev    int32
	ctx    uintptr
	stream uintptr
	info   CUDAInfo
	pool   *HostPool
	ptrs   []unsafe.Pointer // staging buffer id → pinned address
	evA    []uintptr        // staging buffer id → event recorded before its copy
	evB    []uintptr        // … and after it
	log    *slog.Logger
	// workers stage one layer's chunks in parallel.
	workers int

	mu     sync.Mutex
	closed bool
	queue  chan *cudaChunk
	wg     sync.WaitGroup
}

type cudaChunk struct {
	t  *Transfer
	hb *HostBuffer
}

var _ DMA = (*CUDADMA)(nil)

// onThread runs f on a locked OS thread with the engine's context
// current: CUDA contexts are per thread, goroutines are not.
func (d *CUDADMA) onThread(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.lib.check("cuCtxSetCurrent", d.lib.cuCtxSetCurrent(d.ctx)); err != nil {
		return err
	}
	return f()
}

// OpenCUDA opens the CUDA backend. Without a usable driver (no library, a
// missing symbol, cuInit failing, no such device) the error wraps
// ErrNoCUDA; callers fall back to the sim backend.
func OpenCUDA(opts CUDAOptions) (*CUDADMA, error) {
	if opts.Library == "" {
		opts.Library = DefaultCUDALibrary
	}
	if opts.StagingBuffers < 0 || opts.StagingBytes < 0 {
		return nil, fmt.Errorf("CUDA DMA: negative staging size: %w", ErrBadRequest)
	}
	if opts.StagingBuffers == 0 {
		opts.StagingBuffers = DefaultStagingBuffers
	}
	if opts.StagingBytes == 0 {
		opts.StagingBytes = DefaultStagingBytes
	}
	lib, err := loadCUDA(opts.Library)
	if err != nil {
		return nil, err
	}
	d := &CUDADMA{lib: lib, log: opts.Logger, workers: opts.StagingWorkers}
	if d.workers <= 0 {
		d.workers = DefaultStagingWorkers()
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if err := d.open(opts); err != nil {
		d.release()
		return nil, err
	}
	d.queue = make(chan *cudaChunk, opts.StagingBuffers)
	d.wg.Add(1)
	go d.complete()
	return d, nil
}

func (d *CUDADMA) open(opts CUDAOptions) error {
	l := d.lib
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := l.check("cuInit", l.cuInit(0)); err != nil {
		return fmt.Errorf("%w: %w", ErrNoCUDA, err)
	}
	var v int32
	if err := l.check("cuDriverGetVersion", l.cuDriverGetVersion(&v)); err != nil {
		return err
	}
	d.info.DriverVersion = int(v)
	var n int32
	if err := l.check("cuDeviceGetCount", l.cuDeviceGetCount(&n)); err != nil {
		return fmt.Errorf("%w: %w", ErrNoCUDA, err)
	}
	found := false
	for i := range n {
		var dev int32
		if err := l.check("cuDeviceGet", l.cuDeviceGet(&dev, i)); err != nil {
			return err
		}
		bus := make([]byte, 32)
		if err := l.check("cuDeviceGetPCIBusId", l.cuDeviceGetPCIBusId(&bus[0], int32(len(bus)), dev)); err != nil {
			return err
		}
		addr, err := NormalizeBusID(cString(&bus[0], len(bus)))
		if err != nil {
			return fmt.Errorf("CUDA device %d: %w", i, err)
		}
		match := int(i) == opts.Device
		if opts.BusID != "" {
			want, err := NormalizeBusID(opts.BusID)
			if err != nil {
				return fmt.Errorf("CUDA bus id option: %w", err)
			}
			match = addr == want
		}
		if match {
			d.dev, d.info.BusID, found = dev, addr, true
			break
		}
	}
	if !found {
		return fmt.Errorf("CUDA device %d / bus %q among %d devices: %w", opts.Device, opts.BusID, n, errors.Join(ErrNoCUDA, ErrNotFound))
	}
	name := make([]byte, 256)
	if err := l.check("cuDeviceGetName", l.cuDeviceGetName(&name[0], int32(len(name)), d.dev)); err != nil {
		return err
	}
	d.info.Name = cString(&name[0], len(name))
	if err := l.check("cuDeviceTotalMem_v2", l.cuDeviceTotalMem(&d.info.TotalMemory, d.dev)); err != nil {
		return err
	}
	if err := l.check("cuDevicePrimaryCtxRetain", l.cuDevicePrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return err
	}
	if err := l.check("cuCtxSetCurrent", l.cuCtxSetCurrent(d.ctx)); err != nil {
		return err
	}
	if err := l.check("cuStreamCreate", l.cuStreamCreate(&d.stream, cuStreamNonBlocking)); err != nil {
		return err
	}
	pool, err := NewHostPool(opts.StagingBuffers, opts.StagingBytes, func(size int) ([]byte, error) {
		var p unsafe.Pointer
		if err := l.check("cuMemHostAlloc", l.cuMemHostAlloc(&p, uint64(size), 0)); err != nil {
			return nil, err
		}
		d.ptrs = append(d.ptrs, p)
		return unsafe.Slice((*byte)(p), size), nil
	}, func(b []byte) error {
		return l.check("cuMemFreeHost", l.cuMemFreeHost(unsafe.Pointer(unsafe.SliceData(b))))
	})
	if err != nil {
		return err
	}
	d.pool = pool
	for range opts.StagingBuffers {
		var a, b uintptr
		if err := l.check("cuEventCreate", l.cuEventCreate(&a, cuEventDefault)); err != nil {
			return err
		}
		d.evA = append(d.evA, a)
		if err := l.check("cuEventCreate", l.cuEventCreate(&b, cuEventDefault)); err != nil {
			return err
		}
		d.evB = append(d.evB, b)
	}
	return nil
}

// release frees what open acquired, in reverse order; used on a failed
// open and by Close.
func (d *CUDADMA) release() {
	l := d.lib
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if d.ctx != 0 {
		_ = l.cuCtxSetCurrent(d.ctx)
	}
	for _, e := range append(d.evA, d.evB...) {
		_ = l.cuEventDestroy(e)
	}
	d.evA, d.evB = nil, nil
	if d.pool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := d.pool.Close(ctx); err != nil {
			d.log.Error("cuda_staging_not_freed", "error", err)
		}
		cancel()
	}
	if d.stream != 0 {
		_ = l.cuStreamDestroy(d.stream)
		d.stream = 0
	}
	if d.ctx != 0 {
		_ = l.cuDevicePrimaryCtxRelease(d.dev)
		d.ctx = 0
	}
}

// Backend is "cuda".
func (d *CUDADMA) Backend() string { return "cuda" }

// Info describes the device.
func (d *CUDADMA) Info() CUDAInfo { return d.info }

// Pool is the pinned staging pool.
func (d *CUDADMA) Pool() *HostPool { return d.pool }

// Alloc reserves device memory with cuMemAlloc_v2.
func (d *CUDADMA) Alloc(ctx context.Context, layers int, layerBytes int64) (*Buffer, error) {
	if err := checkAlloc(layers, layerBytes); err != nil {
		return nil, fmt.Errorf("CUDA DMA: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("CUDA DMA alloc: %w", err)
	}
	b := &Buffer{owner: d, layers: layers, layerBytes: layerBytes}
	err := d.onThread(func() error {
		return d.lib.check("cuMemAlloc_v2", d.lib.cuMemAlloc(&b.dev, uint64(layers)*uint64(layerBytes)))
	})
	if err != nil {
		return nil, fmt.Errorf("CUDA DMA alloc %d × %d bytes: %w", layers, layerBytes, err)
	}
	return b, nil
}

// Free releases device memory (cuMemFree_v2 waits for copies into it).
func (d *CUDADMA) Free(b *Buffer) error {
	if err := checkLayer(d, b, 0, 0); err != nil {
		return fmt.Errorf("CUDA DMA free: %w", err)
	}
	b.freed = true
	return d.onThread(func() error { return d.lib.check("cuMemFree_v2", d.lib.cuMemFree(b.dev)) })
}

// CopyLayer stages src into pinned buffers and queues one
// cuMemcpyHtoDAsync_v2 per buffer on the engine's stream, bracketed by events.
func (d *CUDADMA) CopyLayer(ctx context.Context, dst *Buffer, layer int, src []byte) (*Transfer, error) {
	if err := checkLayer(d, dst, layer, len(src)); err != nil {
		return nil, fmt.Errorf("CUDA DMA: %w", err)
	}
	t := newTransfer(layer, int64(len(src)))
	base := dst.dev + uint64(layer)*uint64(dst.layerBytes)
	err := stage(ctx, d.pool, src, d.workers, func(hb *HostBuffer, off, n int) error {
		return d.submit(t, hb, base+uint64(off), n)
	})
	t.seal(err)
	if err != nil {
		return nil, fmt.Errorf("CUDA DMA layer %d: %w", layer, err)
	}
	return t, nil
}

// submit enqueues one chunk; the lock keeps queue order equal to stream
// order, which the completion goroutine relies on.
func (d *CUDADMA) submit(t *Transfer, hb *HostBuffer, dst uint64, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	l := d.lib
	err := d.onThread(func() error {
		if err := l.check("cuEventRecord", l.cuEventRecord(d.evA[hbID(hb)], d.stream)); err != nil {
			return err
		}
		if err := l.check("cuMemcpyHtoDAsync_v2", l.cuMemcpyHtoDAsync(dst, d.ptrs[hbID(hb)], uint64(n), d.stream)); err != nil {
			return err
		}
		return l.check("cuEventRecord", l.cuEventRecord(d.evB[hbID(hb)], d.stream))
	})
	if err != nil {
		return err
	}
	t.addChunk(0)
	d.queue <- &cudaChunk{t: t, hb: hb}
	return nil
}

func hbID(b *HostBuffer) int { return b.id }

// complete waits for each chunk's closing event in stream order, times it,
// and returns its staging buffer, until Close closes the queue.
func (d *CUDADMA) complete() {
	defer d.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	l := d.lib
	ctxErr := l.check("cuCtxSetCurrent", l.cuCtxSetCurrent(d.ctx))
	for c := range d.queue {
		id := hbID(c.hb)
		err := ctxErr
		if err == nil {
			err = l.check("cuEventSynchronize", l.cuEventSynchronize(d.evB[id]))
		}
		var busy time.Duration
		var ms float32
		if err == nil && l.cuEventElapsedTime(&ms, d.evA[id], d.evB[id]) == 0 {
			busy = time.Duration(float64(ms) * float64(time.Millisecond))
		}
		if err != nil {
			// The copy's fate is unknown; wait for the whole stream before
			// the pinned buffer can be reused.
			_ = l.cuStreamSynchronize(d.stream)
		}
		d.pool.Put(c.hb)
		c.t.chunkDone(0, busy, err)
	}
}

// ReadLayer copies a layer back with cuMemcpyDtoH_v2.
func (d *CUDADMA) ReadLayer(ctx context.Context, src *Buffer, layer int, dst []byte) error {
	if err := checkLayer(d, src, layer, len(dst)); err != nil {
		return fmt.Errorf("CUDA DMA read: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("CUDA DMA read: %w", err)
	}
	if len(dst) == 0 {
		return nil
	}
	return d.onThread(func() error {
		return d.lib.check("cuMemcpyDtoH_v2", d.lib.cuMemcpyDtoH(unsafe.Pointer(unsafe.SliceData(dst)), src.dev+uint64(layer)*uint64(src.layerBytes), uint64(len(dst))))
	})
}

// Pinned is host memory from cuMemHostAlloc, for the plain pinned-copy
// baseline the gpu-check script compares the DMA path with.
type Pinned struct {
	B []byte
}

// AllocPinned allocates size bytes of pinned host memory.
func (d *CUDADMA) AllocPinned(size int) (*Pinned, error) {
	var p unsafe.Pointer
	err := d.onThread(func() error { return d.lib.check("cuMemHostAlloc", d.lib.cuMemHostAlloc(&p, uint64(size), 0)) })
	if err != nil {
		return nil, err
	}
	return &Pinned{B: unsafe.Slice((*byte)(p), size)}, nil
}

// FreePinned releases memory from AllocPinned.
func (d *CUDADMA) FreePinned(p *Pinned) error {
	return d.onThread(func() error {
		return d.lib.check("cuMemFreeHost", d.lib.cuMemFreeHost(unsafe.Pointer(unsafe.SliceData(p.B))))
	})
}

// CopyPinned is the baseline: one synchronous cuMemcpyHtoD_v2 of p into a
// layer, no staging, no chunking.
func (d *CUDADMA) CopyPinned(dst *Buffer, layer int, p *Pinned) error {
	if err := checkLayer(d, dst, layer, len(p.B)); err != nil {
		return fmt.Errorf("CUDA pinned copy: %w", err)
	}
	return d.onThread(func() error {
		return d.lib.check("cuMemcpyHtoD_v2", d.lib.cuMemcpyHtoD(dst.dev+uint64(layer)*uint64(dst.layerBytes), unsafe.Pointer(unsafe.SliceData(p.B)), uint64(len(p.B))))
	})
}

// PinHost page-locks caller memory with cuMemHostRegister_v2 (so that a
// stitcher can write straight into DMA-able memory); the returned function
// unregisters it. The memory stays pinned in Go's heap meanwhile.
func (d *CUDADMA) PinHost(b []byte) (unpin func() error, err error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("pin empty buffer: %w", ErrBadRequest)
	}
	var pin runtime.Pinner
	pin.Pin(unsafe.SliceData(b))
	p := unsafe.Pointer(unsafe.SliceData(b))
	err = d.onThread(func() error {
		return d.lib.check("cuMemHostRegister_v2", d.lib.cuMemHostRegister(p, uint64(len(b)), cuMemHostRegPortable))
	})
	if err != nil {
		pin.Unpin()
		return nil, err
	}
	return func() error {
		defer pin.Unpin()
		return d.onThread(func() error { return d.lib.check("cuMemHostUnregister", d.lib.cuMemHostUnregister(p)) })
	}, nil
}

// Close waits for the copies in flight (a DMA cannot be recalled; they
// complete normally), then frees events, staging memory, the stream and
// the context.
func (d *CUDADMA) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.queue)
	d.mu.Unlock()
	d.wg.Wait()
	d.release()
	return nil
}

func openCUDA(opts CUDAOptions) (DMA, error) { return OpenCUDA(opts) }
