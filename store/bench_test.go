package store

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/benchutil"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// benchSpec has Llama-3-8B's KV shape: 32 layers, 8 KV heads of 128, f16
// — 4 KiB per token per layer, 128 KiB per token.
func benchSpec(b *testing.B) *kvcache.ModelSpec {
	b.Helper()
	s, err := kvcache.Preset("llama-3-8b")
	if err != nil {
		b.Fatal(err)
	}
	return &s
}

// tokensFor is the token count of a chunk of size bytes.
func tokensFor(spec *kvcache.ModelSpec, size int) int { return size / spec.KVBytesPerToken() }

var benchSizes = []int{1 << 20, 8 << 20, 32 << 20}

func sizeName(n int) string { return strconv.Itoa(n>>20) + "MiB" }

// drain reads every layer of r into dst, as the stitcher or a DMA engine
// consumes it, and returns the bytes. With a nil dst it only asks for the
// layers (read, verified, in a buffer: what os.ReadFile and a GET give).
func drain(b *testing.B, r kvcache.ChunkReader, dst []byte) int {
	ctx := context.Background()
	off := 0
	for l := r.Available().Start; l < r.Available().End; l++ {
		p, err := r.Layer(ctx, l)
		if err != nil {
			b.Fatal(err)
		}
		if dst != nil {
			copy(dst[off:], p)
		}
		off += len(p)
	}
	return off
}

// Memory tier Get of 1–32 MiB chunks, every layer copied out, against
// copy() of the same bytes (issue 5: ≥ 80%).
func BenchmarkMemoryGet(b *testing.B) {
	spec := benchSpec(b)
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			m, err := NewMemory(MemoryOptions{BlobOptions: BlobOptions{Model: spec}, Capacity: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			c := makeChunk(b, spec, tokensFor(spec, size), 1)
			if err := m.Put(context.Background(), c); err != nil {
				b.Fatal(err)
			}
			n := int(chunkBytes(c))
			dst := make([]byte, n)
			for i := range dst {
				dst[i] = byte(i) | 1
			}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				r, err := m.Get(context.Background(), c.Key, kvcache.AllLayers)
				if err != nil {
					b.Fatal(err)
				}
				drain(b, r, dst)
				r.Close()
			}
			benchutil.ReportRatio(b, "x-vs-copy", float64(n), benchutil.CopyBaseline(n))
		})
	}
}

// Disk tier reads (header, every layer read and checksummed) against plain
// os.ReadFile of the same files (issue 5: ≥ 70%), page cache warm; and
// cold: both sides first drop the file's pages from the page cache
// (posix_fadvise DONTNEED on our own files, which leaves every other
// file's cache alone).
func BenchmarkDiskRead(b *testing.B) {
	spec := benchSpec(b)
	const files = 4
	for _, cold := range []bool{false, true} {
		for _, size := range benchSizes {
			name := sizeName(size)
			if cold {
				name = "cold/" + name
			}
			b.Run(name, func(b *testing.B) { benchDiskRead(b, spec, size, files, cold) })
		}
	}
}

func benchDiskRead(b *testing.B, spec *kvcache.ModelSpec, size, files int, cold bool) {
	dir := b.TempDir()
	// PackBytes 1: one chunk per pack file, so each chunk is one file that
	// os.ReadFile can read for the baseline.
	d, err := OpenDisk(context.Background(), DiskOptions{BlobOptions: BlobOptions{Model: spec}, Dir: dir, Capacity: 1 << 30, PackBytes: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var keys []matcher.ChunkKey
	for i := range files {
		c := makeChunk(b, spec, tokensFor(spec, size), uint64(i))
		if err := d.Put(context.Background(), c); err != nil {
			b.Fatal(err)
		}
		keys = append(keys, c.Key)
	}
	d.mu.Lock()
	paths := make([]string, files)
	for i, k := range keys {
		paths[i] = d.index[k].pack.path
	}
	d.mu.Unlock()
	handles := make([]*os.File, files)
	for i, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		handles[i] = f
	}
	drop := func(i int) {
		if cold {
			dropCache(handles[i%files])
		}
	}
	var n int
	for _, k := range keys { // warm the page cache and the buffer pool
		r, err := d.Get(context.Background(), k, kvcache.AllLayers)
		if err != nil {
			b.Fatal(err)
		}
		n = drain(b, r, nil)
		r.Close()
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		drop(i)
		r, err := d.Get(context.Background(), keys[i%files], kvcache.AllLayers)
		if err != nil {
			b.Fatal(err)
		}
		drain(b, r, nil)
		r.Close()
		i++
	}
	fi, err := os.Stat(paths[0])
	if err != nil {
		b.Fatal(err)
	}
	j := 0
	benchutil.ReportRatio(b, "x-vs-readfile", float64(n), benchutil.Baseline{
		PerOp: float64(fi.Size()),
		Op: func() {
			drop(j)
			if _, err := os.ReadFile(paths[j%files]); err != nil {
				b.Fatal(err)
			}
			j++
		},
	})
}

// Restart: OpenDisk rebuilding the index of 2,000 chunks in 32 MiB packs
// from their blob headers.
func BenchmarkDiskReopen(b *testing.B) {
	spec := smallSpec(b)
	dir := b.TempDir()
	d, err := OpenDisk(context.Background(), DiskOptions{Dir: dir, Capacity: 1 << 30, PackBytes: 32 << 20})
	if err != nil {
		b.Fatal(err)
	}
	const chunks = 2000
	var blobs [][]byte
	for i := range chunks {
		blob, err := kvcache.AppendBlob(nil, makeChunk(b, spec, 64, uint64(i)), nil)
		if err != nil {
			b.Fatal(err)
		}
		blobs = append(blobs, blob)
	}
	if err := d.PutBlobs(context.Background(), blobs); err != nil {
		b.Fatal(err)
	}
	d.Close()
	b.ReportAllocs()
	for b.Loop() {
		d, err := OpenDisk(context.Background(), DiskOptions{Dir: dir, Capacity: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		if st := d.Stats(); st.Entries != chunks {
			b.Fatalf("%d entries after reopen, want %d", st.Entries, chunks)
		}
		d.Close()
	}
	benchutil.ReportRate(b, "chunks/s", chunks)
}

// Redis tier Get (metadata and every layer group, checksummed) against a
// raw go-redis GET loop over values of the groups' sizes on the same
// server (issue 5: ≥ 80%).
func BenchmarkRedisGet(b *testing.B) {
	srv := testutil.StartRedis(b)
	spec := benchSpec(b)
	for _, size := range []int{1 << 20, 8 << 20, 32 << 20} {
		b.Run(sizeName(size), func(b *testing.B) {
			ctx := context.Background()
			r, err := OpenRedis(ctx, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			c := makeChunk(b, spec, tokensFor(spec, size), 1)
			if err := r.Put(ctx, c); err != nil {
				b.Fatal(err)
			}
			blob, err := kvcache.AppendBlob(nil, c, nil)
			if err != nil {
				b.Fatal(err)
			}
			h, err := kvcache.ParseHeader(blob, kvcache.DecodeOptions{})
			if err != nil {
				b.Fatal(err)
			}
			groups := groupLayers(h, DefaultMinTransfer)
			// The raw loop uses the tier's own go-redis client (same pool,
			// same settings), so the ratio measures the tier's work:
			// metadata, grouping, checksums, layer bookkeeping.
			raw := r.client
			var rawKeys []string
			var rawBytes int
			for i, g := range groups {
				k := fmt.Sprintf("raw:%d:%d", size, i)
				if err := raw.Set(ctx, k, blob[g.off:g.off+g.len], 0).Err(); err != nil {
					b.Fatal(err)
				}
				rawKeys = append(rawKeys, k)
				rawBytes += int(g.len)
			}
			n := int(chunkBytes(c))
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				rd, err := r.Get(ctx, c.Key, kvcache.AllLayers)
				if err != nil {
					b.Fatal(err)
				}
				drain(b, rd, nil)
				rd.Close()
			}
			b.ReportMetric(float64(len(groups)), "groups")
			benchutil.ReportRatio(b, "x-vs-raw-get", float64(n), benchutil.Baseline{
				PerOp: float64(rawBytes),
				Op: func() {
					for _, k := range rawKeys {
						if _, err := raw.Get(ctx, k).Bytes(); err != nil {
							b.Fatal(err)
						}
					}
				},
			})
		})
	}
}

// The prefetcher over a mixed cover — a third of the chunks only in
// memory, a third only on disk, a third only in Redis — against the raw
// throughput of its slowest tier (a go-redis GET loop over the same Redis
// groups), issue 5: ≥ 80%; and the time until layer 0 of every chunk is in,
// as a fraction of the whole load times the layer count L (1 is exactly
// 1/L of the load), issue 5: ≤ 1 + noise.
//
// This VM has 2 cores shared with other test suites, and redis-server
// shares them too, so besides the usual figures (the b.Loop mean, and
// benchutil's baseline timed after it) the benchmark alternates prefetches
// and raw loops and reports each figure two more ways:
//
//	x-vs-slowest-raw         b.Loop mean ÷ raw loop timed after it (benchutil)
//	x-vs-slowest-raw-alt     mean of alternating runs of each
//	x-vs-slowest-raw-min     fastest of the alternating runs of each
//	first-layer-L-ratio      mean over every fetch of first layer ÷ (total/L)
//	first-layer-L-ratio-med  median of the same
//	first-layer-L-ratio-min  fastest first layer ÷ (fastest total / L)
//
// The fastest of interleaved runs is what each side does undisturbed; the
// median shrugs off the fetches a burst of load landed on.
func BenchmarkPrefetchMixed(b *testing.B) {
	srv := testutil.StartRedis(b)
	spec := benchSpec(b)
	ctx := context.Background()
	const chunks, size = 12, 8 << 20 // 32 layers of 256 KiB each
	mem, err := NewMemory(MemoryOptions{BlobOptions: BlobOptions{Model: spec}, Capacity: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	disk, err := OpenDisk(ctx, DiskOptions{BlobOptions: BlobOptions{Model: spec}, Dir: b.TempDir(), Capacity: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	rds, err := OpenRedis(ctx, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	if err != nil {
		b.Fatal(err)
	}
	st, err := NewTiered(TieredOptions{BlobOptions: BlobOptions{Model: spec}, NoPromote: true}, mem, disk, rds)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	raw := rds.client // the slowest tier's own client, raw GETs
	var keys []matcher.ChunkKey
	var rawKeys []string
	var total, rawBytes int64
	for i := range chunks {
		c := makeChunk(b, spec, tokensFor(spec, size), uint64(i))
		tier := []BlobStore{mem, disk, rds}[i%3]
		if err := tier.Put(ctx, c); err != nil {
			b.Fatal(err)
		}
		keys = append(keys, c.Key)
		total += chunkBytes(c)
		if i%3 == 2 {
			blob, err := kvcache.AppendBlob(nil, c, nil)
			if err != nil {
				b.Fatal(err)
			}
			h, err := kvcache.ParseHeader(blob, kvcache.DecodeOptions{})
			if err != nil {
				b.Fatal(err)
			}
			for g, lg := range groupLayers(h, DefaultMinTransfer) {
				k := fmt.Sprintf("rawmix:%d:%d", i, g)
				if err := raw.Set(ctx, k, blob[lg.off:lg.off+lg.len], 0).Err(); err != nil {
					b.Fatal(err)
				}
				rawKeys = append(rawKeys, k)
				rawBytes += lg.len
			}
		}
	}
	p, err := NewPrefetcher(st, PrefetchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var fl firstLayers
	fetch := func() {
		f, err := p.Fetch(ctx, keys, FetchOptions{})
		if err != nil {
			b.Fatal(err)
		}
		res := f.Wait(ctx)
		if !res.Complete {
			b.Fatalf("prefetch incomplete: %v", res.Errs)
		}
		f.Close()
		fl.add(res)
	}
	rawLoop := func() {
		for _, k := range rawKeys {
			if _, err := raw.Get(ctx, k).Bytes(); err != nil {
				b.Fatal(err)
			}
		}
	}
	// One fetch before timing fills the buffer pools and the connection
	// pools, as on a host that has been serving (the disk benchmark warms
	// its page cache the same way).
	fetch()
	fl = firstLayers{}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		fetch()
	}
	loopRatios := len(fl.ratios)
	benchutil.ReportRatio(b, "x-vs-slowest-raw", float64(total), benchutil.Baseline{PerOp: float64(rawBytes), Op: rawLoop})
	subj, base := alternate(20, fetch, rawLoop)
	b.ReportMetric(float64(total)/mean(subj).Seconds()/(float64(rawBytes)/mean(base).Seconds()), "x-vs-slowest-raw-alt")
	b.ReportMetric(float64(total)/slices.Min(subj).Seconds()/(float64(rawBytes)/slices.Min(base).Seconds()), "x-vs-slowest-raw-min")
	fl.report(b, spec.Layers, loopRatios)
}

// firstLayers collects, fetch by fetch, when layer 0 of every chunk was
// in and when the whole load was.
type firstLayers struct {
	ratios             []float64 // first ÷ (total / L), per fetch, as fractions of total
	bestFirst, bestAll time.Duration
}

func (fl *firstLayers) add(res Result) {
	fl.ratios = append(fl.ratios, float64(res.FirstLayer)/float64(res.Elapsed))
	if fl.bestAll == 0 || res.Elapsed < fl.bestAll {
		fl.bestAll = res.Elapsed
	}
	if fl.bestFirst == 0 || res.FirstLayer < fl.bestFirst {
		fl.bestFirst = res.FirstLayer
	}
}

// report reports first-layer-L-ratio as the mean over the first loopN
// fetches (the b.Loop ones, as before), and -med and -min over all.
func (fl *firstLayers) report(b *testing.B, layers, loopN int) {
	L := float64(layers)
	b.ReportMetric(meanF(fl.ratios[:loopN])*L, "first-layer-L-ratio")
	sorted := slices.Sorted(slices.Values(fl.ratios))
	b.ReportMetric(sorted[len(sorted)/2]*L, "first-layer-L-ratio-med")
	b.ReportMetric(float64(fl.bestFirst)/float64(fl.bestAll)*L, "first-layer-L-ratio-min")
}

// alternate runs subject and baseline in turn, rounds times each, and
// returns each one's run times: both meet the same load.
func alternate(rounds int, subject, baseline func()) (subj, base []time.Duration) {
	for range rounds {
		start := time.Now()
		subject()
		subj = append(subj, time.Since(start))
		start = time.Now()
		baseline()
		base = append(base, time.Since(start))
	}
	return subj, base
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}

func meanF(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// "How much of this prompt is cached and where", without reading KV: a
// 64-chunk plan located across three tiers.
func BenchmarkCoverage(b *testing.B) {
	spec := smallSpec(b)
	ctx := context.Background()
	mem, err := NewMemory(MemoryOptions{Capacity: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	disk, err := OpenDisk(ctx, DiskOptions{Dir: b.TempDir(), Capacity: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	rds, err := OpenRedis(ctx, RedisOptions{URL: "redis://127.0.0.1:1"}) // index only: never contacted
	if err != nil {
		b.Fatal(err)
	}
	st, err := NewTiered(TieredOptions{}, mem, disk, rds)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	plan := &kvcache.Plan{Prompt: make([]matcher.Token, 64*256)}
	var blobs [][]byte
	for i := range 64 {
		c := makeChunk(b, spec, 16, uint64(i))
		plan.Keys = append(plan.Keys, c.Key)
		plan.Segments = append(plan.Segments, kvcache.Segment{Source: i, SrcEnd: 16, Dst: i * 256})
		if i%2 == 0 {
			blob, _ := kvcache.AppendBlob(nil, c, nil)
			blobs = append(blobs, blob)
		}
	}
	if err := mem.PutBlobs(ctx, blobs[:16]); err != nil {
		b.Fatal(err)
	}
	if err := disk.PutBlobs(ctx, blobs[16:]); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		cov := st.Coverage(plan)
		if cov.CachedChunks != 32 {
			b.Fatalf("coverage %+v", cov)
		}
	}
	benchutil.ReportRate(b, "chunks/s", 64)
}

// The prefetcher's own cost: a fetch of 12 chunks × 32 layers from the
// memory tier, whose reads are free (the layers alias the stored blobs),
// so what is timed is the scheduling, bookkeeping and hand-offs.
func BenchmarkPrefetchOverhead(b *testing.B) {
	spec := benchSpec(b)
	ctx := context.Background()
	mem, err := NewMemory(MemoryOptions{BlobOptions: BlobOptions{Model: spec}, Capacity: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	st, err := NewTiered(TieredOptions{BlobOptions: BlobOptions{Model: spec}, NoPromote: true}, mem)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var keys []matcher.ChunkKey
	for i := range 12 {
		c := makeChunk(b, spec, 8, uint64(i))
		if err := mem.Put(ctx, c); err != nil {
			b.Fatal(err)
		}
		keys = append(keys, c.Key)
	}
	p, err := NewPrefetcher(st, PrefetchOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	b.ReportAllocs()
	for b.Loop() {
		f, err := p.Fetch(ctx, keys, FetchOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if res := f.Wait(ctx); !res.Complete {
			b.Fatalf("prefetch incomplete: %v", res.Errs)
		}
		f.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(keys)*spec.Layers), "ns/layer")
}
