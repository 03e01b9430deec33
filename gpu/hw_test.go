//go:build hw && linux

package gpu

// Tests and benchmarks that need a real NVIDIA GPU, its driver
// (libnvidia-ml.so.1, libcuda.so.1) and nvidia-smi: `make test-hw`, and
// scripts/gpu-check.sh, which also runs BenchmarkHWHostToDevice and
// BenchmarkHWStagingSweep.

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/pciid"
	"github.com/kvloom/kvloom/internal/testutil"
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
		if err != nil || d.Vendor != pciid.VendorNVIDIA {
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
	compareNUMAWithNvidiaSMI(t, topo)
	if t.Failed() {
		t.Logf("log:\n%s", buf.String())
	}
}

// compareNUMAWithNvidiaSMI checks each GPU's NUMA affinity against the
// "NUMA Affinity" column of `nvidia-smi topo -m`, which comes from the
// same driver.
func compareNUMAWithNvidiaSMI(t *testing.T, topo *Topology) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "nvidia-smi", "topo", "-m").Output()
	if err != nil {
		t.Errorf("nvidia-smi topo -m (installed with the driver): %v", err)
		return
	}
	smi, err := parseSMINUMA(string(out))
	if err != nil {
		t.Errorf("%v in:\n%s", err, out)
		return
	}
	for _, g := range topo.GPUs {
		want, ok := smi["GPU"+strconv.Itoa(g.Index)]
		if !ok {
			t.Errorf("GPU%d: no row in nvidia-smi topo -m:\n%s", g.Index, out)
			continue
		}
		got := "N/A"
		if nodes := topo.NUMAAffinity(g.Addr); len(nodes) > 0 {
			got = CPUSet(nodes).String()
		}
		if got != want {
			t.Errorf("GPU%d NUMA affinity %s, nvidia-smi says %s (NVML %v from %q, sysfs numa_node of %s)", g.Index, got, want, g.NUMANodes, g.NUMASource, g.Addr)
		} else {
			t.Logf("GPU%d NUMA affinity %s (from %s), as nvidia-smi says", g.Index, got, g.NUMASource)
		}
	}
}

func openHWCUDA(t testing.TB, opts CUDAOptions) *CUDADMA {
	t.Helper()
	d, err := OpenCUDA(opts)
	if err != nil {
		t.Fatalf("OpenCUDA on a GPU machine: %v", err)
	}
	closeAtEnd(t, d)
	return d
}

// TestHWCUDACopyLayers copies pageable layers to the device and reads
// them back.
func TestHWCUDACopyLayers(t *testing.T) {
	ctx := t.Context()
	d := openHWCUDA(t, CUDAOptions{})
	t.Logf("device: %+v; pool %d MiB, chunks ≤ %d KiB, %d staging workers", d.Info(), d.Pool().Size()>>20, d.stage.maxChunk>>10, d.stage.workers)
	const layers, layerBytes = 8, 48<<20 + 4096
	buf := allocFreed(t, d, layers, layerBytes)
	want := make([][]byte, layers)
	ts := make([]*Transfer, layers)
	for l := range layers {
		want[l] = randomBytes(uint64(l), layerBytes)
		var err error
		if ts[l], err = d.CopyLayer(ctx, buf, l, want[l]); err != nil {
			t.Fatal(err)
		}
	}
	checkLanded(t, d, buf, ts, want)
	for l, tr := range ts {
		if tr.Elapsed() <= 0 {
			t.Errorf("layer %d: no device time recorded", l)
		}
	}
	if n := d.Events(); n > eventsAtOpen+d.Pool().Size()/minChunk+layers {
		t.Errorf("%d CUDA events for %d layers: not reused", n, layers)
	}
}

// TestHWCUDAZeroCopy: the stitcher's way in, on the GPU: layers written
// into pinned pool buffers from several goroutines while earlier ones are
// in flight, some abandoned, all handed-over ones intact; then the
// HostBuffer contract (every failed CopyHost gives the buffer back).
func TestHWCUDAZeroCopy(t *testing.T) {
	d := openHWCUDA(t, CUDAOptions{PoolBytes: 3 * 8 << 20})
	testStitchPipeline(t, d, 11, 8<<20)
	other := newSim(t, SimOptions{Clock: NewVirtualClock(), PoolBytes: 1 << 20})
	testHostBufferContract(t, d, other)
}

// TestHWCUDACancellation: a copy cancelled while it waits for pinned
// memory gives every buffer back once the device finishes what it had.
func TestHWCUDACancellation(t *testing.T) {
	d := openHWCUDA(t, CUDAOptions{PoolBytes: 2 << 20, ChunkBytes: 1 << 20})
	buf := allocFreed(t, d, 1, 512<<20)
	src := randomBytes(7, 512<<20)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Millisecond)
	defer cancel()
	_, err := d.CopyLayer(ctx, buf, 0, src)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CopyLayer under a 2 ms deadline: %v", err)
	}
	testutil.Eventually(t, "pinned buffers return after a cancelled copy", func() bool { return d.Pool().InUse() == 0 })
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

// hwSizes are the layer sizes the bandwidth benchmark covers.
var hwSizes = []int{1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30}

// BenchmarkHWHostToDevice times host→device copies of 1 MiB to 1 GiB
// through both ways into the CUDA DMA path, each against one plain
// synchronous cuMemcpyHtoD_v2 of the same size from pinned memory, timed
// in the same sub-benchmark (x-vs-pinned-memcpy), and against the sim
// backend's link model for the GPU's PCIe link as sysfs reports it
// (x-vs-model):
//
//   - pinned-pool: the zero-copy path. Each iteration takes a layer-sized
//     buffer from the pinned pool (AllocHost), hands it to CopyHost and
//     waits; the pool was filled with non-zero bytes first, as a stitcher
//     would have written them (the baseline does not time the writing
//     either).
//   - pageable: CopyLayer from an ordinary Go slice, staged through the
//     pool with the default chunking and workers, and waited for.
func BenchmarkHWHostToDevice(b *testing.B) {
	topo, err := Discover(b.Context(), Options{DisableNVML: true})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range hwSizes {
		for _, path := range []string{"pinned-pool", "pageable"} {
			b.Run(byteSize(size)+"/"+path, func(b *testing.B) {
				opts := CUDAOptions{}
				if path == "pinned-pool" {
					opts.PoolBytes = max(DefaultPoolBytes, size)
				}
				d := openHWCUDA(b, opts)
				benchHostToDevice(b, d, topo, size, path)
			})
		}
	}
}

// BenchmarkHWStagingSweep times the pageable path at 4 MiB and 256 MiB
// across staging workers and chunk sizes, so that one run on the GPU
// machine shows where the defaults (DefaultStagingWorkers,
// DefaultChunkBytes) should sit for it.
func BenchmarkHWStagingSweep(b *testing.B) {
	topo, err := Discover(b.Context(), Options{DisableNVML: true})
	if err != nil {
		b.Fatal(err)
	}
	type point struct{ size, workers, chunk int }
	var points []point
	for _, w := range []int{1, 2, 4, 8} {
		points = append(points, point{4 << 20, w, DefaultChunkBytes})
	}
	for _, w := range []int{4, 8, 12} {
		for _, c := range []int{1 << 20, 2 << 20, 4 << 20} {
			points = append(points, point{256 << 20, w, c})
		}
	}
	for _, p := range points {
		b.Run(fmt.Sprintf("%s/workers=%d/chunk=%s", byteSize(p.size), p.workers, byteSize(p.chunk)), func(b *testing.B) {
			d := openHWCUDA(b, CUDAOptions{StagingWorkers: p.workers, ChunkBytes: p.chunk})
			benchHostToDevice(b, d, topo, p.size, "pageable")
		})
	}
}

func benchHostToDevice(b *testing.B, d *CUDADMA, topo *Topology, size int, path string) {
	ctx := b.Context()
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
	pattern := randomBytes(5, 1<<20)
	for p := pinned.B; len(p) > 0; {
		p = p[copy(p, pattern):]
	}
	var src []byte
	if path == "pageable" {
		src = randomBytes(6, size)
	} else {
		fillPool(b, d, pattern)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	op := layerCopy{d: d, buf: buf, path: path, src: src, size: size}
	for b.Loop() {
		if err := op.run(ctx); err != nil {
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
}
