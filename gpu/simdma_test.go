package gpu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64()|0x0101010101010101) // no zero bytes: never-written pages read unrealistically fast
	}
	return b[:n:n]
}

func newSim(t testing.TB, opts SimOptions) *SimDMA {
	t.Helper()
	d, err := NewSim(opts)
	if err != nil {
		t.Fatalf("NewSim: %v", err)
	}
	closeAtEnd(t, d)
	return d
}

func TestSimDMACopiesBytes(t *testing.T) {
	ctx := t.Context()
	d := newSim(t, SimOptions{Clock: NewVirtualClock(), PoolBytes: 3 << 20, ChunkBytes: 1 << 20})
	const layers, layerBytes = 4, 3<<20 + 13 // not a multiple of the staging size
	buf, err := d.Alloc(ctx, layers, layerBytes)
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]byte, layers)
	ts := make([]*Transfer, layers)
	for l := range layers {
		want[l] = randomBytes(uint64(l), layerBytes)
		src := bytes.Clone(want[l])
		if ts[l], err = d.CopyLayer(ctx, buf, l, src); err != nil {
			t.Fatalf("CopyLayer %d: %v", l, err)
		}
		clear(src) // the caller may reuse src as soon as CopyLayer returns
	}
	checkLanded(t, d, buf, ts, want)
	if err := d.Free(buf); err != nil {
		t.Fatal(err)
	}
}

// TestSimDMATiming checks the model's numbers on a virtual clock: 256 MiB
// over Gen4 x16 at 83% efficiency in 4 MiB chunks.
func TestSimDMATiming(t *testing.T) {
	ctx := t.Context()
	clock := NewVirtualClock()
	link := LinkModel{Speed: 16000, Width: 16}
	d := newSim(t, SimOptions{Clock: clock, Link: link, PoolBytes: 32 << 20, ChunkBytes: 4 << 20})
	const size = 256 << 20
	buf, err := d.Alloc(ctx, 1, size)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := d.CopyLayer(ctx, buf, 0, bytes.Repeat([]byte{0x5a}, size))
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// By hand: 16 GT/s × 16 lanes / 8 × 128/130 × 0.83 = 26.15 GB/s, so
	// 256 MiB takes 10.265 ms, plus 64 chunks × 2 µs of setup.
	want := 10265*time.Microsecond + 64*2*time.Microsecond
	if got := tr.Finished(); got < want-10*time.Microsecond || got > want+10*time.Microsecond {
		t.Fatalf("256 MiB finished at %v on the virtual clock, want %v", got, want)
	}
	if tr.Elapsed() != tr.Finished() {
		t.Fatalf("elapsed %v, finished %v: the first byte moves at time zero", tr.Elapsed(), tr.Finished())
	}
	// Gen3 x16 behind the same copy takes twice as long (8 vs 16 GT/s, same encoding).
	if r := (LinkModel{Speed: 16000, Width: 16}).Bandwidth() / (LinkModel{Speed: 8000, Width: 16}).Bandwidth(); r != 2 {
		t.Fatalf("Gen4/Gen3 bandwidth ratio %v, want 2", r)
	}
}

// TestSimDMALayersCompleteInOrder shows the per-layer pipeline: with the
// clock stopped between layers, layer 0 is done while layer 1 is in flight.
func TestSimDMALayersCompleteInOrder(t *testing.T) {
	ctx := t.Context()
	clock := NewManualClock()
	link := LinkModel{Speed: 32000, Width: 16, Latency: time.Microsecond}
	d := newSim(t, SimOptions{Clock: clock, Link: link, PoolBytes: 4 << 20, ChunkBytes: 1 << 20})
	buf, err := d.Alloc(ctx, 3, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*Transfer
	for l := range 3 {
		tr, err := d.CopyLayer(ctx, buf, l, randomBytes(uint64(l), 1<<20))
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tr)
	}
	// A 1 MiB layer goes out as pipelineChunks chunks of 256 KiB, each
	// paying the link's per-copy latency.
	per := pipelineChunks * link.Duration(1<<20/pipelineChunks)
	clock.Advance(per)
	if err := ts[0].Wait(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ts[1].Done():
		t.Fatal("layer 1 completed before its modelled finish")
	default:
	}
	clock.Advance(2 * per)
	for _, tr := range ts[1:] {
		if err := tr.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if ts[2].Finished() != 3*per {
		t.Fatalf("layer 2 finished at %v, want %v (the link is serial)", ts[2].Finished(), 3*per)
	}
}

// TestStagingReturnedOnCancellation: a CopyLayer cancelled while waiting
// for staging, a Wait that times out, and a Close with copies in flight
// all leave every staging buffer back in the pool.
func TestStagingReturnedOnCancellation(t *testing.T) {
	clock := NewManualClock()
	d, err := NewSim(SimOptions{Clock: clock, PoolBytes: 2 << 20, ChunkBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	buf, err := d.Alloc(t.Context(), 2, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	// 1. Cancelled while staging: two chunks go out, the third waits for a
	// buffer that the stopped clock never frees.
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := d.CopyLayer(ctx, buf, 0, randomBytes(2, 4<<20))
		errc <- err
	}()
	for d.Pool().InUse() < 2 {
		time.Sleep(time.Millisecond) // waiting for the goroutine to stage, not asserting time
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled CopyLayer returned %v, want context.Canceled", err)
	}
	if n := d.Pool().InUse(); n != 2 {
		t.Fatalf("%d buffers in use, want the 2 chunks in flight", n)
	}
	clock.Advance(time.Second)
	testutil.Eventually(t, "in-flight chunks of a cancelled copy return their buffers", func() bool { return d.Pool().InUse() == 0 })

	// 2. A Wait that times out leaves the transfer running; its buffers come back.
	tr, err := d.CopyLayer(t.Context(), buf, 1, randomBytes(3, 2<<20))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
	defer wcancel()
	if err := tr.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with a deadline: %v, want DeadlineExceeded", err)
	}
	// 3. Close with those chunks still in flight fails them and takes the buffers back.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("transfer in flight at Close: %v, want ErrClosed", err)
	}
	if n := d.Pool().InUse(); n != 0 {
		t.Fatalf("%d buffers in use after Close", n)
	}
	if _, err := d.CopyLayer(t.Context(), buf, 0, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("CopyLayer after Close: %v, want ErrClosed", err)
	}
}

// TestStagingUnderConcurrentCancellation hammers one engine from several
// goroutines that cancel at random points.
func TestStagingUnderConcurrentCancellation(t *testing.T) {
	d, err := NewSim(SimOptions{Clock: NewVirtualClock(), PoolBytes: 192 << 10, ChunkBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	buf, err := d.Alloc(t.Context(), 8, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	src := randomBytes(4, 1<<20)
	var wg sync.WaitGroup
	var completed, failed sync.Map
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 20 {
				ctx, cancel := context.WithCancel(t.Context())
				if r.IntN(3) == 0 {
					cancel()
				}
				tr, err := d.CopyLayer(ctx, buf, g, src[:r.IntN(len(src))+1])
				cancel()
				if err != nil {
					failed.Store([2]int{g, i}, err)
					continue
				}
				if err := tr.Wait(t.Context()); err != nil {
					t.Errorf("transfer %d/%d: %v", g, i, err)
				}
				completed.Store([2]int{g, i}, true)
			}
		}()
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := d.Pool().InUse(); n != 0 {
		t.Fatalf("%d staging buffers leaked", n)
	}
	nf := 0
	failed.Range(func(_, v any) bool {
		nf++
		if !errors.Is(v.(error), context.Canceled) {
			t.Errorf("failed copy: %v, want context.Canceled", v)
		}
		return true
	})
	if nf == 0 {
		t.Fatal("no copy was cancelled; the test did not exercise cancellation")
	}
}

func TestSimDMAErrors(t *testing.T) {
	ctx := t.Context()
	d := newSim(t, SimOptions{Clock: NewVirtualClock(), MemoryBytes: 1 << 20})
	other := newSim(t, SimOptions{Clock: NewVirtualClock()})
	buf, err := d.Alloc(ctx, 2, 1024)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Alloc(ctx, 1, 16)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"layer past the end", func() error { _, err := d.CopyLayer(ctx, buf, 2, []byte{1}); return err }()},
		{"negative layer", func() error { _, err := d.CopyLayer(ctx, buf, -1, []byte{1}); return err }()},
		{"source larger than a layer", func() error { _, err := d.CopyLayer(ctx, buf, 0, make([]byte, 1025)); return err }()},
		{"another engine's buffer", func() error { _, err := d.CopyLayer(ctx, foreign, 0, []byte{1}); return err }()},
		{"over capacity", func() error { _, err := d.Alloc(ctx, 2, 1<<20); return err }()},
		{"zero layers", func() error { _, err := d.Alloc(ctx, 0, 1); return err }()},
	} {
		if !errors.Is(c.err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", c.name, c.err)
		}
	}
	if err := d.Free(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CopyLayer(ctx, buf, 0, []byte{1}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("copy into a freed buffer: %v, want ErrBadRequest", err)
	}
	for _, o := range []SimOptions{
		{Link: LinkModel{Efficiency: 2}},
		{PoolBytes: 1 << 20, ChunkBytes: 2 << 20},
		{PoolBytes: -1},
		{StagingWorkers: -1},
		{MemoryBytes: -1},
	} {
		if _, err := NewSim(o); !errors.Is(err, ErrBadRequest) {
			t.Errorf("options %+v: %v, want ErrBadRequest", o, err)
		}
	}
	tr, err := d.CopyLayer(ctx, mustAlloc(t, d), 0, nil)
	if err != nil || tr.Wait(ctx) != nil {
		t.Errorf("empty copy: %v", err)
	}
}

func mustAlloc(t *testing.T, d DMA) *Buffer {
	t.Helper()
	b, err := d.Alloc(t.Context(), 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLinkToGPU derives the link from discovered topology: the V100s of
// the dual-socket server sit behind Gen3 x16 switches.
func TestLinkToGPU(t *testing.T) {
	topo := discoverFake(t, testutil.DualSocketGPUServer(t), noNVML())
	l, err := topo.LinkTo("GPU0")
	if err == nil {
		t.Fatalf("LinkTo takes a PCI address; GPU0 gave %+v", l)
	}
	l, err = topo.LinkTo("0000:1a:00.0")
	if err != nil {
		t.Fatal(err)
	}
	if l.Speed.Gen() != 3 || l.Width != 16 {
		t.Fatalf("link to GPU0 = %v, want Gen3 x16", l)
	}
	// The BlueField box's NVMe is Gen4 x4 behind a Gen4 x4 root port.
	box := discoverFake(t, testutil.BlueFieldBox(t), noNVML())
	if l, err := box.LinkTo("0000:05:00.0"); err != nil || l.Width != 4 || l.Speed.Gen() != 4 {
		t.Fatalf("link to the NVMe = %v, %v; want Gen4 x4", l, err)
	}
}

// BenchmarkSimDMA measures the sim path's own cost (staging or not,
// queueing, the stand-in copy engine) on a virtual clock, as a ratio to
// copy() of the same bytes, for both ways in: a pageable layer through
// CopyLayer (two copies per byte: staging and landing), and a layer
// written into pool memory and handed over with CopyHost (one copy: the
// landing, the stand-in for the device reading pinned memory).
func BenchmarkSimDMA(b *testing.B) {
	for _, size := range []int{1 << 20, 16 << 20} {
		for _, path := range []string{"pageable", "pinned-pool"} {
			b.Run(byteSize(size)+"/"+path, func(b *testing.B) {
				ctx := b.Context()
				d := newSim(b, SimOptions{Clock: NewVirtualClock(), PoolBytes: 2 * size})
				buf, err := d.Alloc(ctx, 1, int64(size))
				if err != nil {
					b.Fatal(err)
				}
				src := randomBytes(9, size)
				fillPool(b, d, src)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				op := layerCopy{d: d, buf: buf, path: path, src: src, size: size}
				for b.Loop() {
					if err := op.run(ctx); err != nil {
						b.Fatal(err)
					}
				}
				benchutil.ReportRatio(b, "x-vs-copy", float64(size), benchutil.CopyBaseline(size))
			})
		}
	}
}

// fillPool writes non-zero bytes over the whole pool, so that the
// zero-copy benchmarks move real data (a stitcher would have written it).
func fillPool(tb testing.TB, d interface {
	AllocHost(context.Context, int) (*HostBuffer, error)
	Pool() *HostPool
}, pattern []byte) {
	tb.Helper()
	hb, err := d.AllocHost(tb.Context(), d.Pool().Size())
	if err != nil {
		tb.Fatal(err)
	}
	for b := hb.Bytes(); len(b) > 0; {
		b = b[copy(b, pattern):]
	}
	hb.Release()
}

// BenchmarkSimDMAPipelined submits a whole model's layers (32 × 512 KiB)
// before waiting for any, as an engine does, and reports the same ratio.
func BenchmarkSimDMAPipelined(b *testing.B) {
	const layers, layerBytes = 32, 512 << 10
	ctx := b.Context()
	d := newSim(b, SimOptions{Clock: NewVirtualClock()})
	buf, err := d.Alloc(ctx, layers, layerBytes)
	if err != nil {
		b.Fatal(err)
	}
	src := make([][]byte, layers)
	for l := range src {
		src[l] = randomBytes(uint64(l), layerBytes)
	}
	ts := make([]*Transfer, layers)
	b.SetBytes(layers * layerBytes)
	b.ReportAllocs()
	for b.Loop() {
		for l := range layers {
			if ts[l], err = d.CopyLayer(ctx, buf, l, src[l]); err != nil {
				b.Fatal(err)
			}
		}
		for _, tr := range ts {
			if err := tr.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	benchutil.ReportRatio(b, "x-vs-copy", layers*layerBytes, benchutil.CopyBaseline(layers*layerBytes))
}

func byteSize(n int) string {
	switch {
	case n >= 1<<30:
		return strconv.Itoa(n>>30) + "GiB"
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	}
	return strconv.Itoa(n>>10) + "KiB"
}
