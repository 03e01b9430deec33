//go:build hw && linux

package gpu

// Tests and benchmarks that need a real NVIDIA GPU, its driver
// (libnvidia-ml.so.1, libcuda.so.1): `make test-hw`, and
// scripts/gpu-check.sh, which also runs BenchmarkHWHostToDevice.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/benchutil"
)

// TestHWNVMLDiscovery: NVML answers, every GPU it names sits in the sysfs
// tree, and NVML's common ancestor agrees with the sysfs paths for every
// pair.
func TestHWNVMLDiscovery(t *testing.T) {
	log, buf := logBuffer()
	topo, err := Discover(t.Context(), Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !topo.NVML.Available {
		t.Fatalf("NVML unavailable on a GPU machine: %s", topo.NVML.Reason)
	}
	if len(topo.GPUs) == 0 {
		t.Fatal("NVML reports no GPU")
	}
	for _, g := range topo.GPUs {
		d, err := topo.Device(g.Addr)
		if err != nil || d.Vendor != VendorNVIDIA {
			t.Errorf("GPU %d (%s) at %s: not an NVIDIA function in sysfs: %v", g.Index, g.Name, g.Addr, err)
		}
		if g.UUID == "" || g.MemoryBytes == 0 {
			t.Errorf("GPU %d: UUID %q, memory %d", g.Index, g.UUID, g.MemoryBytes)
		}
	}
	desc, err := topo.Describe()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("topology:\n%s", desc)
	for _, w := range topo.Warnings {
		if strings.Contains(w, "NVML says") || strings.Contains(w, "sysfs function") {
			t.Errorf("NVML and sysfs disagree: %s", w)
		} else {
			t.Logf("discovery warning: %s", w)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", buf.String())
	}
}

func openHWCUDA(t testing.TB, opts CUDAOptions) *CUDADMA {
	t.Helper()
	d, err := OpenCUDA(opts)
	if err != nil {
		t.Fatalf("OpenCUDA on a GPU machine: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if n := d.Pool().InUse(); n != 0 {
			t.Errorf("%d pinned staging buffers not returned", n)
		}
	})
	return d
}

// TestHWCUDACopyLayers copies layers to the device and reads them back.
func TestHWCUDACopyLayers(t *testing.T) {
	ctx := t.Context()
	d := openHWCUDA(t, CUDAOptions{})
	t.Logf("device: %+v", d.Info())
	const layers, layerBytes = 8, 48<<20 + 4096
	buf, err := d.Alloc(ctx, layers, layerBytes)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Free(buf); err != nil {
			t.Error(err)
		}
	}()
	want := make([][]byte, layers)
	ts := make([]*Transfer, layers)
	for l := range layers {
		want[l] = randomBytes(uint64(l), layerBytes)
		if ts[l], err = d.CopyLayer(ctx, buf, l, want[l]); err != nil {
			t.Fatal(err)
		}
	}
	for l, tr := range ts {
		if err := tr.Wait(ctx); err != nil {
			t.Fatalf("layer %d: %v", l, err)
		}
		if tr.Elapsed() <= 0 {
			t.Errorf("layer %d: no device time recorded", l)
		}
		got := make([]byte, layerBytes)
		if err := d.ReadLayer(ctx, buf, l, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[l]) {
			t.Fatalf("layer %d differs after the round trip through the GPU", l)
		}
	}
}

// TestHWCUDACancellation: a copy cancelled while it waits for pinned
// staging gives every buffer back once the device finishes what it had.
func TestHWCUDACancellation(t *testing.T) {
	d := openHWCUDA(t, CUDAOptions{StagingBuffers: 2, StagingBytes: 1 << 20})
	buf, err := d.Alloc(t.Context(), 1, 512<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Free(buf); err != nil {
			t.Error(err)
		}
	}()
	src := randomBytes(7, 512<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Millisecond)
	defer cancel()
	_, err = d.CopyLayer(ctx, buf, 0, src)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CopyLayer under a 2 ms deadline: %v", err)
	}
	waitFor(t, func() bool { return d.Pool().InUse() == 0 }, "pinned buffers return after a cancelled copy")
	tr, err := d.CopyLayer(t.Context(), buf, 0, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestHWCUDAPinHost(t *testing.T) {
	d := openHWCUDA(t, CUDAOptions{})
	b := randomBytes(3, 8<<20)
	unpin, err := d.PinHost(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := unpin(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkHWHostToDevice times host→device copies of 1 MiB to 1 GiB
// through the CUDA DMA path (pageable source, pinned staging, async copies,
// completion per layer) against one plain cuMemcpyHtoD of the same size
// from pinned memory (x-vs-pinned-memcpy), and against the sim backend's
// link model for the GPU's PCIe link as sysfs reports it (x-vs-model).
func BenchmarkHWHostToDevice(b *testing.B) {
	topo, err := Discover(b.Context(), Options{DisableNVML: true})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30} {
		b.Run(byteSize(size), func(b *testing.B) {
			ctx := b.Context()
			d := openHWCUDA(b, CUDAOptions{})
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
			copy(pinned.B, randomBytes(5, size))
			src := randomBytes(6, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				tr, err := d.CopyLayer(ctx, buf, 0, src)
				if err != nil {
					b.Fatal(err)
				}
				if err := tr.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			rate := float64(size) * float64(b.N) / b.Elapsed().Seconds()
			benchutil.ReportRatio(b, "x-vs-pinned-memcpy", float64(size), benchutil.Baseline{
				Op: func() {
					if err := d.CopyPinned(buf, 0, pinned); err != nil {
						panic(fmt.Sprintf("pinned baseline copy: %v", err))
					}
				},
				PerOp: float64(size),
			})
			if link, err := topo.LinkTo(d.Info().BusID); err == nil {
				b.ReportMetric(rate/link.Bandwidth(), "x-vs-model")
			}
			b.ReportMetric(rate/1e9, "path-GB/s")
		})
	}
}
