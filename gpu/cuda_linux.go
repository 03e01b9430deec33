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

	"github.com/kvloom/kvloom/internal/pciid"
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
	cuMemAlloc                func(dptr *uint64, size uint64) int32
	cuMemFree                 func(dptr uint64) int32
	cuMemHostAlloc            func(pp *unsafe.Pointer, size uint64, flags uint32) int32
	cuMemFreeHost             func(p unsafe.Pointer) int32
	cuMemHostRegister         func(p unsafe.Pointer, size uint64, flags uint32) int32
	cuMemHostUnregister       func(p unsafe.Pointer) int32
	cuMemcpyDtoH              func(dst unsafe.Pointer, src uint64, n uint64) int32
	cuStreamCreate            func(s *uintptr, flags uint32) int32
	cuStreamDestroy           func(s uintptr) int32
	cuEventCreate             func(e *uintptr, flags uint32) int32
	cuEventDestroy            func(e uintptr) int32

	// The functions on the per-chunk path are called through
	// purego.SyscallN on their raw addresses: a RegisterFunc'd function
	// goes through reflect (about 270 ns and 3 allocations a call against
	// 95 ns and 1, measured against the fake driver).
	fnCtxSetCurrent     uintptr
	fnMemcpyHtoD        uintptr
	fnMemcpyHtoDAsync   uintptr
	fnStreamSynchronize uintptr
	fnEventRecord       uintptr
	fnEventSynchronize  uintptr
	fnEventElapsedTime  uintptr
}

func (l *cudaLib) ctxSetCurrent(ctx uintptr) int32 {
	r, _, _ := purego.SyscallN(l.fnCtxSetCurrent, ctx)
	return int32(r)
}

func (l *cudaLib) memcpyHtoD(dst uint64, src unsafe.Pointer, n uint64) int32 {
	r, _, _ := purego.SyscallN(l.fnMemcpyHtoD, uintptr(dst), uintptr(src), uintptr(n))
	return int32(r)
}

func (l *cudaLib) memcpyHtoDAsync(dst uint64, src unsafe.Pointer, n uint64, stream uintptr) int32 {
	r, _, _ := purego.SyscallN(l.fnMemcpyHtoDAsync, uintptr(dst), uintptr(src), uintptr(n), stream)
	return int32(r)
}

func (l *cudaLib) streamSynchronize(stream uintptr) int32 {
	r, _, _ := purego.SyscallN(l.fnStreamSynchronize, stream)
	return int32(r)
}

func (l *cudaLib) eventRecord(e, stream uintptr) int32 {
	r, _, _ := purego.SyscallN(l.fnEventRecord, e, stream)
	return int32(r)
}

func (l *cudaLib) eventSynchronize(e uintptr) int32 {
	r, _, _ := purego.SyscallN(l.fnEventSynchronize, e)
	return int32(r)
}

func (l *cudaLib) eventElapsedTime(ms *float32, start, end uintptr) int32 {
	r, _, _ := purego.SyscallN(l.fnEventElapsedTime, uintptr(unsafe.Pointer(ms)), start, end)
	return int32(r)
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
		{&l.fnCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&l.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&l.cuMemFree, []string{"cuMemFree_v2"}},
		{&l.cuMemHostAlloc, []string{"cuMemHostAlloc"}},
		{&l.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&l.cuMemHostRegister, []string{"cuMemHostRegister_v2"}},
		{&l.cuMemHostUnregister, []string{"cuMemHostUnregister"}},
		{&l.fnMemcpyHtoD, []string{"cuMemcpyHtoD_v2"}},
		{&l.fnMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&l.cuMemcpyDtoH, []string{"cuMemcpyDtoH_v2"}},
		{&l.cuStreamCreate, []string{"cuStreamCreate"}},
		{&l.cuStreamDestroy, []string{"cuStreamDestroy_v2"}},
		{&l.fnStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&l.cuEventCreate, []string{"cuEventCreate"}},
		{&l.fnEventRecord, []string{"cuEventRecord"}},
		{&l.fnEventSynchronize, []string{"cuEventSynchronize"}},
		{&l.fnEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}},
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
		if raw, ok := s.fptr.(*uintptr); ok {
			*raw = addrs[i]
			continue
		}
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
// through libcuda.so.1 with a 64 MiB pinned pool, 2 MiB staging chunks
// and DefaultStagingWorkers.
type CUDAOptions struct {
	// Library is the driver library path; empty means DefaultCUDALibrary.
	Library string
	// Device is the CUDA ordinal, used when BusID is empty.
	Device int
	// BusID selects the device by PCI address (any form pciid.ParseBDF takes).
	BusID string
	// PoolBytes sizes the pinned pool (one cuMemHostAlloc) that AllocHost
	// and the staging path draw on; zero means DefaultPoolBytes. Size it
	// for the layers a stitcher fills at once when it uses AllocHost.
	PoolBytes int
	// ChunkBytes is the largest staging chunk (at most PoolBytes); zero
	// means DefaultChunkBytes.
	ChunkBytes int
	// StagingWorkers is how many goroutines, the caller's included, copy
	// one pageable layer's chunks into pinned memory at once; zero means
	// DefaultStagingWorkers.
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
// non-blocking stream, one pinned pool from cuMemHostAlloc, and reused
// events: one recorded after each copy (its buffer is free when it
// completes) and one before each transfer's first copy (for Elapsed).
//
// A pageable layer is staged by the caller's goroutine and helpers, each
// locking its OS thread and making the context current once per call; a
// CopyHost is one cuMemcpyHtoDAsync_v2 and one event on the caller's
// goroutine. A completion goroutine, not locked to a thread while it
// waits for work (parking a locked goroutine costs a thread hand-off on
// every wake-up), synchronises on each copy's event in stream order,
// gives the buffer back and completes the transfer.
type CUDADMA struct {
	lib    *cudaLib
	dev    int32
	ctx    uintptr
	stream uintptr
	info   CUDAInfo
	pool   *HostPool
	stage  staging
	log    *slog.Logger

	// mu orders submissions: queue order is stream order, which the
	// completion goroutine relies on.
	mu     sync.Mutex
	closed bool
	queue  chan *HostBuffer
	wg     sync.WaitGroup

	evMu   sync.Mutex
	evFree []uintptr
	evAll  []uintptr
	// onDone is transferDone, bound once rather than once per transfer.
	onDone func(*Transfer)
}

var (
	_ DMA  = (*CUDADMA)(nil)
	_ sink = (*CUDADMA)(nil)
)

// onThread runs f on a locked OS thread with the engine's context
// current: CUDA contexts are per thread, goroutines are not.
func (d *CUDADMA) onThread(f func() error) error {
	if err := d.bind(); err != nil {
		return err
	}
	defer d.unbind()
	return f()
}

// bind locks the calling goroutine to its OS thread and makes the
// engine's context current there; unbind lets the goroutine move again.
func (d *CUDADMA) bind() error {
	runtime.LockOSThread()
	if err := d.lib.check("cuCtxSetCurrent", d.lib.ctxSetCurrent(d.ctx)); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	return nil
}

func (d *CUDADMA) unbind() { runtime.UnlockOSThread() }

// eventsAtOpen are created up front, so that the first copies do not pay
// for cuEventCreate; more are made as concurrency asks (at most one per
// chunk in flight, which the pool bounds, plus one per transfer) and all
// are reused.
const eventsAtOpen = 8

// OpenCUDA opens the CUDA backend. Without a usable driver (no library, a
// missing symbol, cuInit failing, no such device) the error wraps
// ErrNoCUDA; callers fall back to the sim backend.
func OpenCUDA(opts CUDAOptions) (*CUDADMA, error) {
	if opts.Library == "" {
		opts.Library = DefaultCUDALibrary
	}
	poolBytes, chunk, workers, err := poolSizes(opts.PoolBytes, opts.ChunkBytes, opts.StagingWorkers)
	if err != nil {
		return nil, fmt.Errorf("CUDA DMA: %w", err)
	}
	lib, err := loadCUDA(opts.Library)
	if err != nil {
		return nil, err
	}
	d := &CUDADMA{lib: lib, log: opts.Logger}
	d.onDone = d.transferDone
	if d.log == nil {
		d.log = slog.Default()
	}
	if err := d.open(opts, poolBytes); err != nil {
		_ = d.release()
		return nil, err
	}
	d.stage = staging{pool: d.pool, workers: workers, maxChunk: chunk}
	d.queue = make(chan *HostBuffer, d.pool.Size()/d.pool.Page())
	d.wg.Add(1)
	go d.complete()
	return d, nil
}

func (d *CUDADMA) open(opts CUDAOptions, poolBytes int) error {
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
	want := ""
	if opts.BusID != "" {
		var err error
		if want, err = pciid.Normalize(opts.BusID); err != nil {
			return fmt.Errorf("CUDA bus id option: %w", err)
		}
	}
	found := false
	var bus [32]byte
	for i := range n {
		var dev int32
		if err := l.check("cuDeviceGet", l.cuDeviceGet(&dev, i)); err != nil {
			return err
		}
		if err := l.check("cuDeviceGetPCIBusId", l.cuDeviceGetPCIBusId(&bus[0], int32(len(bus)), dev)); err != nil {
			return err
		}
		addr, err := pciid.Normalize(cString(&bus[0], len(bus)))
		if err != nil {
			return fmt.Errorf("CUDA device %d: %w", i, err)
		}
		match := int(i) == opts.Device
		if want != "" {
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
	var name [256]byte
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
	if err := l.check("cuCtxSetCurrent", l.ctxSetCurrent(d.ctx)); err != nil {
		return err
	}
	if err := l.check("cuStreamCreate", l.cuStreamCreate(&d.stream, cuStreamNonBlocking)); err != nil {
		return err
	}
	pool, err := NewHostPool(poolBytes, 0, func(size int) ([]byte, error) {
		var p unsafe.Pointer
		if err := l.check("cuMemHostAlloc", l.cuMemHostAlloc(&p, uint64(size), 0)); err != nil {
			return nil, err
		}
		return unsafe.Slice((*byte)(p), size), nil
	}, func(b []byte) error {
		return l.check("cuMemFreeHost", l.cuMemFreeHost(unsafe.Pointer(unsafe.SliceData(b))))
	})
	if err != nil {
		return err
	}
	d.pool = pool
	for range eventsAtOpen {
		e, err := d.newEvent()
		if err != nil {
			return err
		}
		d.evFree = append(d.evFree, e)
	}
	return nil
}

// newEvent creates an event; the context must be current.
func (d *CUDADMA) newEvent() (uintptr, error) {
	var e uintptr
	if err := d.lib.check("cuEventCreate", d.lib.cuEventCreate(&e, cuEventDefault)); err != nil {
		return 0, err
	}
	d.evMu.Lock()
	d.evAll = append(d.evAll, e)
	d.evMu.Unlock()
	return e, nil
}

// event takes a free event, creating one if none is; the context must be
// current.
func (d *CUDADMA) event() (uintptr, error) {
	d.evMu.Lock()
	if n := len(d.evFree); n > 0 {
		e := d.evFree[n-1]
		d.evFree = d.evFree[:n-1]
		d.evMu.Unlock()
		return e, nil
	}
	d.evMu.Unlock()
	return d.newEvent()
}

func (d *CUDADMA) putEvent(e uintptr) {
	d.evMu.Lock()
	d.evFree = append(d.evFree, e)
	d.evMu.Unlock()
}

// Events is how many CUDA events the engine has created: a handful, not
// one per copy.
func (d *CUDADMA) Events() int {
	d.evMu.Lock()
	defer d.evMu.Unlock()
	return len(d.evAll)
}

// release frees what open acquired, in reverse order; used on a failed
// open and by Close. If a pool buffer is still out after 10 s (a caller
// kept a HostBuffer), the pinned memory and the context stay allocated:
// freeing memory someone may still write would corrupt the process.
func (d *CUDADMA) release() error {
	l := d.lib
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if d.ctx != 0 {
		_ = l.ctxSetCurrent(d.ctx)
	}
	// The pool first: once every buffer is back no submit is running, so
	// no event can be taken or made after they are destroyed.
	var err error
	if d.pool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = d.pool.Close(ctx)
		cancel()
	}
	d.evMu.Lock()
	for _, e := range d.evAll {
		_ = l.cuEventDestroy(e)
	}
	d.evAll, d.evFree = nil, nil
	d.evMu.Unlock()
	if d.stream != 0 {
		_ = l.cuStreamDestroy(d.stream)
		d.stream = 0
	}
	if err != nil {
		d.log.Error("cuda_pool_not_freed", "error", err)
		return fmt.Errorf("close CUDA DMA: %w", err)
	}
	if d.ctx != 0 {
		_ = l.cuDevicePrimaryCtxRelease(d.dev)
		d.ctx = 0
	}
	return nil
}

// Backend is "cuda".
func (d *CUDADMA) Backend() string { return "cuda" }

// Info describes the device.
func (d *CUDADMA) Info() CUDAInfo { return d.info }

// Pool is the pinned pool.
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

// CopyLayer stages src into pinned chunks and queues one
// cuMemcpyHtoDAsync_v2 and one event per chunk as soon as it is staged.
func (d *CUDADMA) CopyLayer(ctx context.Context, dst *Buffer, layer int, src []byte) (*Transfer, error) {
	if err := checkLayer(d, dst, layer, len(src)); err != nil {
		return nil, fmt.Errorf("CUDA DMA: %w", err)
	}
	t := newTransfer(layer, int64(len(src)))
	err := d.stage.stage(ctx, src, d, t, layerTarget{dev: dst.dev + uint64(layer)*uint64(dst.layerBytes)})
	t.seal(err)
	if err != nil {
		return nil, fmt.Errorf("CUDA DMA layer %d: %w", layer, err)
	}
	return t, nil
}

// AllocHost takes n bytes of pinned memory from the pool for the caller
// to fill.
func (d *CUDADMA) AllocHost(ctx context.Context, n int) (*HostBuffer, error) {
	hb, err := d.pool.Alloc(ctx, n)
	if err != nil {
		return nil, fmt.Errorf("CUDA DMA: %w", err)
	}
	return hb, nil
}

// CopyHost queues one cuMemcpyHtoDAsync_v2 straight from hb.
func (d *CUDADMA) CopyHost(ctx context.Context, dst *Buffer, layer int, hb *HostBuffer) (*Transfer, error) {
	if err := takeHost(ctx, d.pool, d, dst, layer, hb); err != nil {
		return nil, fmt.Errorf("CUDA DMA: %w", err)
	}
	t := newTransfer(layer, int64(hb.Len()))
	err := d.bind()
	if err == nil {
		err = d.submit(t, hb, layerTarget{dev: dst.dev + uint64(layer)*uint64(dst.layerBytes)}, 0)
		d.unbind()
	}
	if err != nil {
		d.pool.put(hb)
	}
	t.seal(err)
	if err != nil {
		return nil, fmt.Errorf("CUDA DMA layer %d: %w", layer, err)
	}
	return t, nil
}

// submit enqueues one copy of hb to dst and the event after it, and the
// transfer's start event before its first copy. The calling goroutine is
// bound. On error hb is still the caller's and nothing of it is queued.
func (d *CUDADMA) submit(t *Transfer, hb *HostBuffer, target layerTarget, off int) error {
	l := d.lib
	dst := target.dev + uint64(off)
	ev, err := d.event()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		d.putEvent(ev)
		return ErrClosed
	}
	if t.ev == 0 {
		start, err := d.event()
		if err == nil {
			err = l.check("cuEventRecord", l.eventRecord(start, d.stream))
			if err != nil {
				d.putEvent(start)
			}
		}
		if err != nil {
			d.putEvent(ev)
			return err
		}
		t.ev, t.onDone = start, d.onDone
	}
	if err := l.check("cuMemcpyHtoDAsync_v2", l.memcpyHtoDAsync(dst, unsafe.Pointer(unsafe.SliceData(hb.b)), uint64(len(hb.b)), d.stream)); err != nil {
		d.putEvent(ev)
		return err
	}
	if err := l.check("cuEventRecord", l.eventRecord(ev, d.stream)); err != nil {
		// The copy is queued with nothing to say when it ends: wait for the
		// whole stream, so that hb is free when the caller gives it back.
		_ = l.streamSynchronize(d.stream)
		d.putEvent(ev)
		return err
	}
	hb.t, hb.ev = t, ev
	t.addChunk(0)
	d.queue <- hb
	return nil
}

// transferDone gives back the transfer's start event once its last copy
// has been timed against it.
func (d *CUDADMA) transferDone(t *Transfer) {
	if t.ev != 0 {
		d.putEvent(t.ev)
		t.ev = 0
	}
}

// complete waits for each copy's event in stream order, times it against
// its transfer's start event, and gives its buffer back, until Close
// closes the queue. It locks its OS thread (and makes the context current)
// once per burst of ready work, never while it waits for more.
func (d *CUDADMA) complete() {
	defer d.wg.Done()
	for hb := range d.queue {
		bound := d.bind() == nil
		d.finish(hb)
		for more := true; more; {
			select {
			case next, ok := <-d.queue:
				if !ok {
					more = false
					break
				}
				d.finish(next)
			default:
				more = false
			}
		}
		if bound {
			d.unbind()
		}
	}
}

// finish ends one copy. It waits for the copy's event and, failing that,
// for the whole stream, before the pinned buffer can be reused: handing
// out memory a DMA may still read would corrupt a layer. (If the context
// could not be made current, the event's handle still names its context;
// a failure there fails the transfer.)
func (d *CUDADMA) finish(hb *HostBuffer) {
	l := d.lib
	t, ev := hb.t, hb.ev
	err := l.check("cuEventSynchronize", l.eventSynchronize(ev))
	var device time.Duration
	if err == nil {
		var ms float32
		if l.eventElapsedTime(&ms, t.ev, ev) == 0 {
			device = time.Duration(float64(ms) * float64(time.Millisecond))
		}
	} else {
		_ = l.streamSynchronize(d.stream)
	}
	d.pool.put(hb) // hb may be reused from here on
	d.putEvent(ev)
	t.chunkDone(0, device, err)
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
		return d.lib.check("cuMemcpyHtoD_v2", d.lib.memcpyHtoD(dst.dev+uint64(layer)*uint64(dst.layerBytes), unsafe.Pointer(unsafe.SliceData(p.B)), uint64(len(p.B))))
	})
}

// PinHost page-locks caller memory with cuMemHostRegister_v2; the returned
// function unregisters it. The memory stays pinned in Go's heap meanwhile.
// It costs a page-table walk and an IOMMU mapping per call, so it suits
// long-lived buffers; for per-layer zero-copy use AllocHost.
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
// complete normally), then frees events, the pinned pool, the stream and
// the context. A CopyLayer still staging fails with ErrClosed.
func (d *CUDADMA) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.queue)
	d.mu.Unlock()
	d.pool.shut()
	d.wg.Wait()
	return d.release()
}

func openCUDA(opts CUDAOptions) (DMA, error) { return OpenCUDA(opts) }
