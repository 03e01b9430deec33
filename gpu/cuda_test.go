//go:build linux

package gpu

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebitengine/purego"
)

// buildFakeCUDA compiles testdata/fakecuda/libcuda.c into a libcuda.so.1
// in a temporary directory and returns its path.
func buildFakeCUDA(t *testing.T) string {
	t.Helper()
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Fatalf("the fake libcuda needs a C compiler (cgo needs one too): install gcc: %v", err)
	}
	out := filepath.Join(t.TempDir(), "libcuda.so.1")
	cmd := exec.Command(cc, "-shared", "-fPIC", "-O1", "-o", out, filepath.Join("testdata", "fakecuda", "libcuda.c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build fake libcuda: %v\n%s", err, b)
	}
	return out
}

// fakeLive asks the fake driver how many objects it still holds.
func fakeLive(t *testing.T, lib string) int {
	t.Helper()
	h, err := purego.Dlopen(lib, purego.RTLD_NOW)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = purego.Dlclose(h) }()
	var live func() int64
	purego.RegisterLibFunc(&live, h, "fake_cuda_live")
	return int(live())
}

// TestCUDABackendOnFakeDriver drives the CUDA backend through purego
// against the stand-in driver: device selection by bus id, staging,
// per-layer completion, read-back, pinned baseline copies, host
// registration, and a Close that releases everything it took.
func TestCUDABackendOnFakeDriver(t *testing.T) {
	lib := buildFakeCUDA(t)
	ctx := t.Context()
	d, err := OpenCUDA(CUDAOptions{Library: lib, BusID: "00000000:3C:00.0", StagingBuffers: 2, StagingBytes: 64 << 10})
	if err != nil {
		t.Fatalf("OpenCUDA on the fake driver: %v", err)
	}
	if info := d.Info(); info.Name != "Fake CUDA Device 1" || info.BusID != "0000:3c:00.0" || info.TotalMemory != 80<<30 || info.DriverVersion != 12040 {
		t.Fatalf("Info = %+v", info)
	}
	const layers, layerBytes = 3, 200<<10 + 5
	buf, err := d.Alloc(ctx, layers, layerBytes)
	if err != nil {
		t.Fatal(err)
	}
	var ts []*Transfer
	want := make([][]byte, layers)
	for l := range layers {
		want[l] = randomBytes(uint64(l)+100, layerBytes)
		tr, err := d.CopyLayer(ctx, buf, l, want[l])
		if err != nil {
			t.Fatalf("CopyLayer %d: %v", l, err)
		}
		ts = append(ts, tr)
	}
	for l, tr := range ts {
		if err := tr.Wait(ctx); err != nil {
			t.Fatalf("layer %d: %v", l, err)
		}
		got := make([]byte, layerBytes)
		if err := d.ReadLayer(ctx, buf, l, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[l]) {
			t.Fatalf("layer %d differs after the round trip through the driver", l)
		}
	}
	// A copy cancelled before it starts takes nothing from the pool.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.CopyLayer(cctx, buf, 0, want[0]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled CopyLayer: %v", err)
	}
	waitFor(t, func() bool { return d.Pool().InUse() == 0 }, "staging buffers return")
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
	if n := fakeLive(t, lib); n != 0 {
		t.Fatalf("the driver still holds %d objects after Close", n)
	}
	if _, err := d.CopyLayer(ctx, buf, 0, []byte{1}); err == nil {
		t.Fatal("CopyLayer after Close succeeded")
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
