package gpu

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
)

// pooledDMA is a backend with its pool in view, which both are.
type pooledDMA interface {
	DMA
	Pool() *HostPool
}

// layerCopy is the DMA benchmarks' operation: a layer moved to layer 0 of
// buf and waited for, by path: "pageable" copies src with CopyLayer,
// "pinned-pool" hands over a pool buffer of size bytes (fillPool wrote
// them, as a stitcher would) with CopyHost.
type layerCopy struct {
	d    pooledDMA
	buf  *Buffer
	path string
	src  []byte
	size int
}

func (c layerCopy) run(ctx context.Context) error {
	var tr *Transfer
	var err error
	if c.path == "pageable" {
		tr, err = c.d.CopyLayer(ctx, c.buf, 0, c.src)
	} else {
		var hb *HostBuffer
		if hb, err = c.d.AllocHost(ctx, c.size); err != nil {
			return err
		}
		tr, err = c.d.CopyHost(ctx, c.buf, 0, hb)
	}
	if err != nil {
		return err
	}
	return tr.Wait(ctx)
}

// closeAtEnd closes d when the test ends and checks that every pool
// buffer came back.
func closeAtEnd(t testing.TB, d pooledDMA) {
	t.Helper()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := d.Pool().InUse(); n != 0 {
			t.Errorf("%d pool buffers not returned", n)
		}
	})
}

// allocFreed allocates a device buffer that is freed when the test ends
// (before closeAtEnd's Close, which was registered first).
func allocFreed(t testing.TB, d DMA, layers int, layerBytes int64) *Buffer {
	t.Helper()
	buf, err := d.Alloc(t.Context(), layers, layerBytes)
	if err != nil {
		t.Fatalf("Alloc %d × %d bytes: %v", layers, layerBytes, err)
	}
	t.Cleanup(func() {
		if err := d.Free(buf); err != nil {
			t.Errorf("Free: %v", err)
		}
	})
	return buf
}

// checkLanded waits for each transfer (nil where none was made) and checks
// that its layer reads back from the device as want[l].
func checkLanded(t testing.TB, d DMA, buf *Buffer, ts []*Transfer, want [][]byte) {
	t.Helper()
	ctx := t.Context()
	for l, tr := range ts {
		if tr == nil {
			continue
		}
		if err := tr.Wait(ctx); err != nil {
			t.Fatalf("layer %d: %v", l, err)
		}
		got := make([]byte, len(want[l]))
		if err := d.ReadLayer(ctx, buf, l, got); err != nil {
			t.Fatalf("read back layer %d: %v", l, err)
		}
		if !bytes.Equal(got, want[l]) {
			t.Fatalf("layer %d differs on the device", l)
		}
	}
}

// testHostBufferContract checks the zero-copy path's promises on any
// backend: the bytes land, CopyHost takes the buffer in every case (it is
// back in the pool after a failed call, and after the copy), a buffer is
// handed over once, and Release is idempotent and harmless once handed.
// d's pool must hold at least 3 × 64 KiB.
func testHostBufferContract(t *testing.T, d, other pooledDMA) {
	ctx := t.Context()
	const n = 64<<10 + 3
	buf := allocFreed(t, d, 2, n)
	back := func(what string) {
		t.Helper()
		testutil.Eventually(t, what, func() bool { return d.Pool().InUse() == 0 })
	}

	// The bytes land, and the buffer returns once they have.
	want := randomBytes(21, n)
	hb, err := d.AllocHost(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	copy(hb.Bytes(), want)
	tr, err := d.CopyHost(ctx, buf, 1, hb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CopyHost(ctx, buf, 0, hb); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("the same buffer handed over twice: %v, want ErrBadRequest", err)
	}
	hb.Release() // the copy owns it: no effect
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if tr.Bytes() != n || tr.Layer() != 1 {
		t.Fatalf("transfer of %d bytes to layer %d", tr.Bytes(), tr.Layer())
	}
	got := make([]byte, n)
	if err := d.ReadLayer(ctx, buf, 1, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the layer handed over with CopyHost differs on the device")
	}
	back("the buffer of a finished CopyHost returns")

	// Every failed CopyHost gives the buffer back.
	for _, c := range []struct {
		name  string
		size  int
		call  func(hb *HostBuffer) error
		isErr error
	}{
		{"layer out of range", n, func(hb *HostBuffer) error { _, err := d.CopyHost(ctx, buf, 2, hb); return err }, ErrBadRequest},
		{"buffer larger than the layer", n + 1, func(hb *HostBuffer) error { _, err := d.CopyHost(ctx, buf, 0, hb); return err }, ErrBadRequest},
		{"cancelled context", n, func(hb *HostBuffer) error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := d.CopyHost(cctx, buf, 0, hb)
			return err
		}, context.Canceled},
		{"another engine's device buffer", n, func(hb *HostBuffer) error {
			ob, err := other.Alloc(ctx, 1, n)
			if err != nil {
				return err
			}
			defer func() { _ = other.Free(ob) }()
			_, err = d.CopyHost(ctx, ob, 0, hb)
			return err
		}, ErrBadRequest},
	} {
		hb, err := d.AllocHost(ctx, c.size)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.call(hb); !errors.Is(err, c.isErr) {
			t.Errorf("%s: %v, want %v", c.name, err, c.isErr)
		}
		if hb.Bytes() != nil {
			t.Errorf("%s: the buffer is still the caller's after a failed CopyHost", c.name)
		}
		back(c.name + ": the buffer returns")
	}

	// A released buffer, another engine's buffer and no buffer are refused.
	hb, err = d.AllocHost(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	hb.Release()
	if _, err := d.CopyHost(ctx, buf, 0, hb); !errors.Is(err, ErrBadRequest) {
		t.Errorf("CopyHost of a released buffer: %v, want ErrBadRequest", err)
	}
	ohb, err := other.AllocHost(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.CopyHost(ctx, buf, 0, ohb); !errors.Is(err, ErrBadRequest) {
		t.Errorf("CopyHost of another engine's buffer: %v, want ErrBadRequest", err)
	}
	if other.Pool().InUse() != 0 {
		t.Errorf("the refused buffer did not go back to its own pool")
	}
	if _, err := d.CopyHost(ctx, buf, 0, nil); !errors.Is(err, ErrBadRequest) {
		t.Errorf("CopyHost(nil): %v, want ErrBadRequest", err)
	}
	if _, err := d.AllocHost(ctx, d.Pool().Size()+1); !errors.Is(err, ErrBadRequest) {
		t.Errorf("AllocHost larger than the pool: %v, want ErrBadRequest", err)
	}
	back("nothing left out")
}

// testStitchPipeline is how an engine uses the zero-copy path: layers are
// written into pool buffers while earlier ones are in flight, from several
// goroutines at once, with some writers cancelled half-way; every layer
// that was handed over lands intact and the pool ends empty.
func testStitchPipeline(t *testing.T, d pooledDMA, layers, layerBytes int) {
	ctx := t.Context()
	buf := allocFreed(t, d, layers, int64(layerBytes))
	want := make([][]byte, layers)
	for l := range want {
		want[l] = randomBytes(uint64(l)+300, layerBytes)
	}
	ts := make([]*Transfer, layers)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for l := w; l < layers; l += 3 {
				lctx, cancel := context.WithCancel(ctx)
				hb, err := d.AllocHost(lctx, layerBytes)
				if err != nil {
					cancel()
					t.Errorf("layer %d: %v", l, err)
					return
				}
				copy(hb.Bytes(), want[l])
				if l%5 == 4 {
					// A stitch abandoned after filling: the deferred
					// Release in a real stitcher gives the buffer back.
					cancel()
					hb.Release()
					continue
				}
				ts[l], err = d.CopyHost(lctx, buf, l, hb)
				cancel()
				if err != nil {
					t.Errorf("layer %d: %v", l, err)
				}
			}
		})
	}
	wg.Wait()
	checkLanded(t, d, buf, ts, want)
	testutil.Eventually(t, "every pool buffer returns", func() bool { return d.Pool().InUse() == 0 })
}

func TestSimHostBufferContract(t *testing.T) {
	d := newSim(t, SimOptions{Clock: NewVirtualClock(), PoolBytes: 1 << 20})
	other := newSim(t, SimOptions{Clock: NewVirtualClock(), PoolBytes: 1 << 20})
	testHostBufferContract(t, d, other)
}

func TestSimStitchPipeline(t *testing.T) {
	// A pool of three layers for eleven: writers wait for the copies.
	d := newSim(t, SimOptions{Clock: NewVirtualClock(), PoolBytes: 3 * 128 << 10})
	testStitchPipeline(t, d, 11, 128<<10)
}

// TestSimZeroCopyIsOneCopy: a layer handed over with CopyHost crosses the
// link as one copy (one per-copy latency), where the same layer staged by
// CopyLayer goes in chunks.
func TestSimZeroCopyIsOneCopy(t *testing.T) {
	ctx := t.Context()
	clock := NewManualClock()
	link := LinkModel{Speed: 32000, Width: 16}
	d := newSim(t, SimOptions{Clock: clock, Link: link, PoolBytes: 8 << 20, StagingWorkers: 1})
	const n = 4 << 20
	buf, err := d.Alloc(ctx, 2, n)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := d.AllocHost(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	copy(hb.Bytes(), randomBytes(5, n))
	zc, err := d.CopyHost(ctx, buf, 0, hb)
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.CopyLayer(ctx, buf, 1, randomBytes(6, n))
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	for _, tr := range []*Transfer{zc, st} {
		if err := tr.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := zc.Elapsed(), link.Duration(n); got != want {
		t.Errorf("CopyHost of 4 MiB took %v on the link, want one copy's %v", got, want)
	}
	if got, want := st.Elapsed(), pipelineChunks*link.Duration(n/pipelineChunks); got != want {
		t.Errorf("CopyLayer of 4 MiB took %v on the link, want %d chunks' %v", got, pipelineChunks, want)
	}
}

// TestSimCloseWithHostBuffers: Close fails a CopyHost in flight with
// ErrClosed and takes its buffer back; a buffer the caller still holds
// delays Close until it is released; AllocHost after Close fails.
func TestSimCloseWithHostBuffers(t *testing.T) {
	ctx := t.Context()
	clock := NewManualClock()
	d, err := NewSim(SimOptions{Clock: clock, PoolBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	buf, err := d.Alloc(ctx, 1, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := d.AllocHost(ctx, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := d.CopyHost(ctx, buf, 0, hb)
	if err != nil {
		t.Fatal(err)
	}
	held, err := d.AllocHost(ctx, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	if err := tr.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("CopyHost in flight at Close: %v, want ErrClosed", err)
	}
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a caller held a pool buffer", err)
	case <-time.After(20 * time.Millisecond):
	}
	held.Release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := d.AllocHost(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("AllocHost after Close: %v, want ErrClosed", err)
	}
}
