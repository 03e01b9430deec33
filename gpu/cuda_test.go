//go:build linux

package gpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebitengine/purego"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/testutil"
)

// buildFakeCUDA compiles testdata/fakecuda/libcuda.c into a libcuda.so.1
// in a temporary directory and returns its path.
func buildFakeCUDA(t testing.TB) string {
	t.Helper()
	cc := testutil.RequireTool(t, "cc", "gcc") // cgo needs it too
	out := filepath.Join(t.TempDir(), "libcuda.so.1")
	cmd := exec.Command(cc, "-shared", "-fPIC", "-pthread", "-O1", "-o", out, filepath.Join("testdata", "fakecuda", "libcuda.c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fake libcuda: %v\n%s", err, b)
	}
	return out
}

// fakeDriver is the test's side door into the fake libcuda: what it still
// holds, what it was asked to do, and how fast its "device" copies.
type fakeDriver struct {
	live   func() int64
	stats  func(out *[5]int64)
	rate   func(bytesPerMs int64)
	inline func(on int32)
}

func openFake(t testing.TB, lib string) *fakeDriver {
	t.Helper()
	// dlopen of the path the engine opened returns the same instance.
	h, err := purego.Dlopen(lib, purego.RTLD_NOW)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = purego.Dlclose(h) })
	f := &fakeDriver{}
	purego.RegisterLibFunc(&f.live, h, "fake_cuda_live")
	purego.RegisterLibFunc(&f.stats, h, "fake_cuda_stats")
	purego.RegisterLibFunc(&f.rate, h, "fake_cuda_set_rate")
	purego.RegisterLibFunc(&f.inline, h, "fake_cuda_set_inline")
	return f
}

// fakeStats are the fake driver's counters.
type fakeStats struct {
	copies, pinnedBytes, pageableBytes, eventsCreated, eventRecords int64
}

func (f *fakeDriver) snapshot() fakeStats {
	var s [5]int64
	f.stats(&s)
	return fakeStats{s[0], s[1], s[2], s[3], s[4]}
}

func (a fakeStats) minus(b fakeStats) fakeStats {
	return fakeStats{a.copies - b.copies, a.pinnedBytes - b.pinnedBytes, a.pageableBytes - b.pageableBytes, a.eventsCreated - b.eventsCreated, a.eventRecords - b.eventRecords}
}

// fakeLive asks the fake driver how many objects it still holds.
func fakeLive(t *testing.T, lib string) int {
	t.Helper()
	return int(openFake(t, lib).live())
}

func openFakeCUDA(t testing.TB, lib string, opts CUDAOptions) *CUDADMA {
	t.Helper()
	opts.Library = lib
	d, err := OpenCUDA(opts)
	if err != nil {
		t.Fatalf("OpenCUDA on the fake driver: %v", err)
	}
	closeAtEnd(t, d)
	return d
}

// TestCUDABackendOnFakeDriver drives the CUDA backend through purego
// against the stand-in driver: device selection by bus id, staging through
// pinned memory only, per-layer completion, read-back, pinned baseline
// copies, host registration, and a Close that releases everything it took.
func TestCUDABackendOnFakeDriver(t *testing.T) {
	lib := buildFakeCUDA(t)
	fake := openFake(t, lib)
	ctx := t.Context()
	d, err := OpenCUDA(CUDAOptions{Library: lib, BusID: "00000000:3C:00.0", PoolBytes: 256 << 10, ChunkBytes: 64 << 10, StagingWorkers: 3})
	if err != nil {
		t.Fatalf("OpenCUDA on the fake driver: %v", err)
	}
	if info := d.Info(); info.Name != "Fake CUDA Device 1" || info.BusID != "0000:3c:00.0" || info.TotalMemory != 80<<30 || info.DriverVersion != 12040 {
		t.Fatalf("Info = %+v", info)
	}
	// A slow device, so that staging must recycle pool memory while
	// earlier chunks are still queued: reusing one too early would corrupt
	// the layer (the fake reads a copy's source when the copy ends).
	fake.rate(100 << 10) // 100 MB/s
	defer fake.rate(0)
	const layers, layerBytes = 3, 200<<10 + 5
	buf, err := d.Alloc(ctx, layers, layerBytes)
	if err != nil {
		t.Fatal(err)
	}
	before := fake.snapshot()
	var ts []*Transfer
	want := make([][]byte, layers)
	for l := range layers {
		want[l] = randomBytes(uint64(l)+100, layerBytes)
		src := bytes.Clone(want[l])
		tr, err := d.CopyLayer(ctx, buf, l, src)
		if err != nil {
			t.Fatalf("CopyLayer %d: %v", l, err)
		}
		clear(src) // the caller may reuse src as soon as CopyLayer returns
		ts = append(ts, tr)
	}
	checkLanded(t, d, buf, ts, want)
	for l, tr := range ts {
		if tr.Elapsed() <= 0 {
			t.Errorf("layer %d: no device time recorded", l)
		}
	}
	st := fake.snapshot().minus(before)
	if st.pageableBytes != 0 || st.pinnedBytes != layers*layerBytes {
		t.Errorf("async copies read %d pinned and %d pageable bytes, want %d and 0", st.pinnedBytes, st.pageableBytes, layers*layerBytes)
	}
	// 200 KiB in 64 KiB chunks: 4 copies a layer, each followed by one
	// event, and one event before each layer.
	if st.copies != 4*layers || st.eventRecords != 5*layers {
		t.Errorf("%d async copies and %d event records, want %d and %d", st.copies, st.eventRecords, 4*layers, 5*layers)
	}
	// A copy cancelled before it starts takes nothing from the pool.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.CopyLayer(cctx, buf, 0, want[0]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled CopyLayer: %v", err)
	}
	testutil.Eventually(t, "pool buffers return", func() bool { return d.Pool().InUse() == 0 })
	// The baseline path.
	p, err := d.AllocPinned(layerBytes)
	if err != nil {
		t.Fatal(err)
	}
	copy(p.B, want[2])
	if err := d.CopyPinned(buf, 0, p); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, layerBytes)
	if err := d.ReadLayer(ctx, buf, 0, got); err != nil || !bytes.Equal(got, want[2]) {
		t.Fatalf("pinned copy did not land: %v", err)
	}
	if err := d.FreePinned(p); err != nil {
		t.Fatal(err)
	}
	unpin, err := d.PinHost(want[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := unpin(); err != nil {
		t.Fatal(err)
	}
	if err := d.Free(buf); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fake.live(); n != 0 {
		t.Fatalf("the driver still holds %d objects after Close", n)
	}
	if _, err := d.CopyLayer(ctx, buf, 0, []byte{1}); err == nil {
		t.Fatal("CopyLayer after Close succeeded")
	}
	if _, err := d.AllocHost(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("AllocHost after Close: %v, want ErrClosed", err)
	}
}

// TestCUDAZeroCopy: a layer written into a pool buffer goes to the device
// as exactly one async copy from pinned memory, with one event after it
// and one before, and nothing staged.
func TestCUDAZeroCopy(t *testing.T) {
	lib := buildFakeCUDA(t)
	fake := openFake(t, lib)
	ctx := t.Context()
	d := openFakeCUDA(t, lib, CUDAOptions{PoolBytes: 4 << 20})
	const n = 3<<20 + 17
	buf, err := d.Alloc(ctx, 1, n)
	if err != nil {
		t.Fatal(err)
	}
	want := randomBytes(8, n)
	events := d.Events()
	for i := range 20 {
		hb, err := d.AllocHost(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		copy(hb.Bytes(), want)
		before := fake.snapshot()
		tr, err := d.CopyHost(ctx, buf, 0, hb)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		st := fake.snapshot().minus(before)
		if st.copies != 1 || st.pinnedBytes != n || st.pageableBytes != 0 || st.eventRecords != 2 {
			t.Fatalf("round %d: %+v, want one pinned copy of %d bytes and two event records", i, st, n)
		}
	}
	if d.Events() != events {
		t.Errorf("events grew from %d to %d over 20 copies: they are not reused", events, d.Events())
	}
	got := make([]byte, n)
	if err := d.ReadLayer(ctx, buf, 0, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("zero-copy layer did not land: %v", err)
	}
	if err := d.Free(buf); err != nil {
		t.Fatal(err)
	}
}

func TestCUDAHostBufferContract(t *testing.T) {
	lib := buildFakeCUDA(t)
	d := openFakeCUDA(t, lib, CUDAOptions{PoolBytes: 1 << 20})
	other := newSim(t, SimOptions{Clock: NewVirtualClock(), PoolBytes: 1 << 20})
	testHostBufferContract(t, d, other)
}

func TestCUDAStitchPipeline(t *testing.T) {
	lib := buildFakeCUDA(t)
	fake := openFake(t, lib)
	fake.rate(200 << 10)
	defer fake.rate(0)
	d := openFakeCUDA(t, lib, CUDAOptions{PoolBytes: 3 * 128 << 10})
	testStitchPipeline(t, d, 11, 128<<10)
}

// TestCUDAStagingUnderPressure: several goroutines copy pageable layers
// through a pool far smaller than what they move, into a slow device, with
// some of them cancelled; every layer that was accepted lands intact, the
// pool ends empty, and the events stay few.
func TestCUDAStagingUnderPressure(t *testing.T) {
	lib := buildFakeCUDA(t)
	fake := openFake(t, lib)
	fake.rate(1 << 20) // 1 GB/s
	defer fake.rate(0)
	ctx := t.Context()
	d := openFakeCUDA(t, lib, CUDAOptions{PoolBytes: 512 << 10, ChunkBytes: 128 << 10, StagingWorkers: 4})
	const layers, layerBytes = 6, 700 << 10
	buf, err := d.Alloc(ctx, layers, layerBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Free(buf) }()
	var wg sync.WaitGroup
	for l := range layers {
		wg.Go(func() {
			for round := range 4 {
				want := randomBytes(uint64(l*10+round), layerBytes)
				cctx, cancel := context.WithCancel(ctx)
				if round == 2 {
					time.AfterFunc(200*time.Microsecond, cancel)
				}
				tr, err := d.CopyLayer(cctx, buf, l, want)
				cancel()
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("layer %d round %d: %v", l, round, err)
					}
					continue
				}
				if err := tr.Wait(ctx); err != nil {
					t.Errorf("layer %d round %d: %v", l, round, err)
					continue
				}
				got := make([]byte, layerBytes)
				if err := d.ReadLayer(ctx, buf, l, got); err != nil {
					t.Error(err)
				} else if !bytes.Equal(got, want) {
					t.Errorf("layer %d round %d differs on the device", l, round)
				}
			}
		})
	}
	wg.Wait()
	testutil.Eventually(t, "pool buffers return", func() bool { return d.Pool().InUse() == 0 })
	// At most one event per chunk in flight (the pool holds 4 chunks) plus
	// one per transfer in flight (6) plus the ones made at open.
	if n := d.Events(); n > eventsAtOpen+4+layers {
		t.Errorf("%d events created for 24 layers: they are not reused", n)
	}
}

// TestCUDACloseWaitsForDevice: Close with copies in flight lets the device
// finish them (they complete without error: a DMA cannot be recalled),
// fails a CopyLayer still staging with ErrClosed, and leaves nothing
// allocated in the driver.
func TestCUDACloseWaitsForDevice(t *testing.T) {
	lib := buildFakeCUDA(t)
	fake := openFake(t, lib)
	fake.rate(10 << 10) // 10 MB/s: 256 KiB take 25 ms
	defer fake.rate(0)
	ctx := t.Context()
	d, err := OpenCUDA(CUDAOptions{Library: lib, PoolBytes: 512 << 10, ChunkBytes: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	buf, err := d.Alloc(ctx, 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := randomBytes(12, 256<<10)
	hb, err := d.AllocHost(ctx, len(want))
	if err != nil {
		t.Fatal(err)
	}
	copy(hb.Bytes(), want)
	tr, err := d.CopyHost(ctx, buf, 0, hb)
	if err != nil {
		t.Fatal(err)
	}
	// A pageable 1 MiB layer needs more pool than is left: it is staging
	// when Close begins.
	staged := make(chan error, 1)
	go func() { _, err := d.CopyLayer(ctx, buf, 1, randomBytes(13, 1<<20)); staged <- err }()
	testutil.Eventually(t, "the pool fills", func() bool { return d.Pool().InUseBytes() == 512<<10 })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tr.Done():
	default:
		t.Fatal("Close returned before the device finished a copy in flight")
	}
	if err := tr.Err(); err != nil {
		t.Fatalf("a copy in flight at Close: %v, want it to complete", err)
	}
	if err := <-staged; !errors.Is(err, ErrClosed) {
		t.Fatalf("CopyLayer staging at Close: %v, want ErrClosed", err)
	}
	if n := fake.live(); n != 1 { // the device buffer, never freed
		t.Fatalf("the driver holds %d objects after Close, want only the device buffer", n)
	}
}

func TestCUDAUnavailable(t *testing.T) {
	if _, err := OpenCUDA(CUDAOptions{Library: "/nonexistent/libcuda.so.1"}); !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("missing library: %v, want ErrNoCUDA", err)
	}
	// libc loads but has none of the driver's symbols: a clear error, no
	// panic from purego.
	_, err := OpenCUDA(CUDAOptions{Library: "libc.so.6"})
	if !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "cuInit") || !strings.Contains(err.Error(), "cuMemcpyHtoDAsync_v2") {
		t.Fatalf("library without CUDA symbols: %v, want ErrNoCUDA naming cuInit and cuMemcpyHtoDAsync_v2", err)
	}
	lib := buildFakeCUDA(t)
	if _, err := OpenCUDA(CUDAOptions{Library: lib, Device: 5}); !errors.Is(err, ErrNoCUDA) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("device 5 of 2: %v, want ErrNoCUDA and ErrNotFound", err)
	}
	if n := fakeLive(t, lib); n != 0 {
		t.Fatalf("a failed open left %d driver objects behind", n)
	}
}

// TestOpenDMAFallsBack: "auto" without a driver logs once and runs sim;
// "cuda" without one is an error.
func TestOpenDMAFallsBack(t *testing.T) {
	log, buf := logBuffer()
	d, err := OpenDMA(DMAOptions{CUDA: CUDAOptions{Library: "/nonexistent/libcuda.so.1"}, Sim: SimOptions{Clock: NewVirtualClock()}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	}()
	if d.Backend() != "sim" || strings.Count(buf.String(), "cuda_unavailable") != 1 {
		t.Fatalf("backend %s, log:\n%s", d.Backend(), buf.String())
	}
	if _, err := OpenDMA(DMAOptions{Backend: "cuda", CUDA: CUDAOptions{Library: "/nonexistent/libcuda.so.1"}}); !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("backend cuda without a driver: %v, want ErrNoCUDA", err)
	}
	if _, err := OpenDMA(DMAOptions{Backend: "tpu"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown backend: %v", err)
	}
	lib := buildFakeCUDA(t)
	c, err := OpenDMA(DMAOptions{CUDA: CUDAOptions{Library: lib}})
	if err != nil || c.Backend() != "cuda" {
		t.Fatalf("auto with a driver present: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCUDAPathOverhead measures what the CUDA backend itself costs
// per layer, on the fake driver in inline mode (copies and events complete
// inside the call, so no device time and no fake threads): one CopyHost +
// Wait (zero-copy) or CopyLayer + Wait (pageable, which adds the staging
// copy) against one CopyPinned (lock the thread, make the context current,
// one synchronous cuMemcpyHtoD) of the same size, x-vs-pinned-memcpy. The
// difference in ns/op is the backend's per-call overhead: purego calls,
// pool, events, the completion goroutine's hand-offs. On a GPU the same
// overhead adds to the DMA time.
func BenchmarkCUDAPathOverhead(b *testing.B) {
	lib := buildFakeCUDA(b)
	fake := openFake(b, lib)
	fake.inline(1)
	defer fake.inline(0)
	for _, size := range []int{4 << 10, 1 << 20} {
		for _, path := range []string{"pinned-pool", "pageable"} {
			b.Run(byteSize(size)+"/"+path, func(b *testing.B) {
				ctx := b.Context()
				d := openFakeCUDA(b, lib, CUDAOptions{})
				buf, err := d.Alloc(ctx, 1, int64(size))
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = d.Free(buf) }()
				pinned, err := d.AllocPinned(size)
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = d.FreePinned(pinned) }()
				src := randomBytes(4, size)
				copy(pinned.B, src)
				fillPool(b, d, src)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				op := layerCopy{d: d, buf: buf, path: path, src: src, size: size}
				for b.Loop() {
					if err := op.run(ctx); err != nil {
						b.Fatal(err)
					}
				}
				benchutil.ReportRatio(b, "x-vs-pinned-memcpy", float64(size), benchutil.Baseline{
					Op: func() {
						if err := d.CopyPinned(buf, 0, pinned); err != nil {
							panic(fmt.Sprintf("pinned baseline copy: %v", err))
						}
					},
					PerOp: float64(size),
				})
			})
		}
	}
}
