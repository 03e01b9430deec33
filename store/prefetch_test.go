package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// observed wraps a real store to record (and optionally gate or pace) the
// prefetcher's calls. It changes nothing that is read.
type observed struct {
	Store
	gate      chan struct{} // Get waits for it when set
	waiting   int           // Gets that reached the gate
	perLayer  time.Duration // each Layer sleeps this long
	mu        sync.Mutex
	gets      int
	events    []string
	chunkName map[matcher.ChunkKey]string
}

func (o *observed) Get(ctx context.Context, key matcher.ChunkKey, layers kvcache.LayerRange) (kvcache.ChunkReader, error) {
	if err := o.wait(ctx); err != nil {
		return nil, err
	}
	return o.get(ctx, key, layers)
}

// wait passes the gate, if there is one.
func (o *observed) wait(ctx context.Context) error {
	if o.gate == nil {
		return nil
	}
	o.mu.Lock()
	o.waiting++
	o.mu.Unlock()
	select {
	case <-o.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (o *observed) get(ctx context.Context, key matcher.ChunkKey, layers kvcache.LayerRange) (kvcache.ChunkReader, error) {
	o.mu.Lock()
	o.gets++
	o.events = append(o.events, "open "+o.chunkName[key])
	o.mu.Unlock()
	r, err := o.Store.Get(ctx, key, layers)
	if err != nil {
		return nil, err
	}
	return &observedReader{ChunkReader: r, o: o, name: o.chunkName[key]}, nil
}

// batchObserved is observed as a BatchGetter: GetMany passes the gate
// once for the whole batch and records it, then opens each chunk as
// observed does.
type batchObserved struct {
	*observed
	batches []string
	ended   int // GetMany calls that returned
}

var _ BatchGetter = (*batchObserved)(nil)

func (b *batchObserved) GetMany(ctx context.Context, keys []matcher.ChunkKey, layers kvcache.LayerRange, ready func(int, kvcache.ChunkReader, error)) {
	b.mu.Lock()
	var names []string
	for _, k := range keys {
		names = append(names, b.chunkName[k])
	}
	b.batches = append(b.batches, strings.Join(names, " "))
	b.mu.Unlock()
	err := b.wait(ctx)
	for i, k := range keys {
		if err != nil {
			ready(i, nil, err)
			continue
		}
		r, err := b.get(ctx, k, layers)
		ready(i, r, err)
	}
	b.mu.Lock()
	b.ended++
	b.mu.Unlock()
}

// sources are the two ways the prefetcher opens chunks: one Get per chunk
// from its workers, or batches through a BatchGetter.
func sources(o *observed) []struct {
	name string
	src  Store
	b    *batchObserved
} {
	b := &batchObserved{observed: o}
	return []struct {
		name string
		src  Store
		b    *batchObserved
	}{{"get", o, nil}, {"batch", b, b}}
}

type observedReader struct {
	kvcache.ChunkReader
	o    *observed
	name string
}

func (r *observedReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if r.o.perLayer > 0 {
		select {
		case <-time.After(r.o.perLayer):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.o.mu.Lock()
	r.o.events = append(r.o.events, fmt.Sprintf("L%d %s", l, r.name))
	r.o.mu.Unlock()
	return r.ChunkReader.Layer(ctx, l)
}

// memWith returns a memory tier holding n chunks of spec, and the chunks.
func memWith(t *testing.T, spec *kvcache.ModelSpec, n, tokens int) (*Memory, []*kvcache.Chunk, *observed) {
	t.Helper()
	m := newMem(t, spec, 256<<20, MemoryOptions{})
	o := &observed{Store: m, chunkName: map[matcher.ChunkKey]string{}}
	var cs []*kvcache.Chunk
	for i := range n {
		c := makeChunk(t, spec, tokens, uint64(i+1))
		if err := m.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		o.chunkName[c.Key] = string(rune('a' + i))
		cs = append(cs, c)
	}
	return m, cs, o
}

func keysOf(cs []*kvcache.Chunk) []matcher.ChunkKey {
	var ks []matcher.ChunkKey
	for _, c := range cs {
		ks = append(ks, c.Key)
	}
	return ks
}

func newPrefetcher(t *testing.T, s Store, opts PrefetchOptions) *Prefetcher {
	t.Helper()
	p, err := NewPrefetcher(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// checkFetched compares every arrived chunk's layers with what was stored.
func checkFetched(t *testing.T, f *Fetch, res Result, cs []*kvcache.Chunk) {
	t.Helper()
	for i, ok := range res.Arrived {
		if !ok {
			continue
		}
		r := f.Reader(i)
		if r == nil {
			t.Fatalf("chunk %d arrived but has no reader", i)
		}
		checkReader(t, r, cs[i])
	}
}

// Layer 0 of every chunk is read before layer 1 of any, and so on; with a
// BatchGetter, the request's chunks are opened in one batch.
func TestPrefetchLayerMajorOrder(t *testing.T) {
	spec := smallSpec(t)
	_, cs, o := memWith(t, spec, 3, 64)
	for _, src := range sources(o) {
		t.Run(src.name, func(t *testing.T) {
			o.events = nil
			p := newPrefetcher(t, src.src, PrefetchOptions{Workers: 1})
			f, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.WaitLayer(t.Context(), 0); err != nil {
				t.Fatal(err)
			}
			res := f.Wait(t.Context())
			if !res.Complete || res.FirstLayer <= 0 || res.Elapsed < res.FirstLayer {
				t.Fatalf("result %+v", res)
			}
			checkFetched(t, f, res, cs)
			want := []string{"open a", "open b", "open c",
				"L0 a", "L0 b", "L0 c", "L1 a", "L1 b", "L1 c", "L2 a", "L2 b", "L2 c", "L3 a", "L3 b", "L3 c"}
			if fmt.Sprint(o.events) != fmt.Sprint(want) {
				t.Fatalf("read order\n got %v\nwant %v", o.events, want)
			}
			if src.b != nil && fmt.Sprint(src.b.batches) != "[a b c]" {
				t.Fatalf("batches %q, want one of a, b and c", src.b.batches)
			}
		})
	}
}

// Two requests for the same chunks at once: each chunk is fetched once.
// Cancelling one request does not fail the other, also when the chunks
// are opened in one batch that both requests share.
func TestPrefetchDedupAndCancel(t *testing.T) {
	spec := smallSpec(t)
	_, cs, o := memWith(t, spec, 4, 64)
	for _, src := range sources(o) {
		t.Run(src.name, func(t *testing.T) {
			o.gets = 0
			o.gate = make(chan struct{})
			p := newPrefetcher(t, src.src, PrefetchOptions{Workers: 4})
			ctxA, cancelA := context.WithCancel(t.Context())
			a, err := p.Fetch(ctxA, keysOf(cs), FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			cancelA()
			resA := a.Wait(t.Context())
			close(o.gate)
			resB := b.Wait(t.Context())
			if !resB.Complete {
				t.Fatalf("request B after A was cancelled: %+v", resB)
			}
			checkFetched(t, b, resB, cs)
			for i, err := range resA.Errs {
				if resA.Arrived[i] || !errors.Is(err, ErrDeadline) || !errors.Is(err, context.Canceled) {
					t.Fatalf("cancelled request A chunk %d: arrived %v err %v", i, resA.Arrived[i], err)
				}
			}
			if o.gets != len(cs) {
				t.Fatalf("%d store reads for %d chunks wanted twice, want one each", o.gets, len(cs))
			}
			if src.b != nil && len(src.b.batches) != 1 {
				t.Fatalf("batches %q, want one", src.b.batches)
			}
			if st := p.Stats(); st.Joined != int64(len(cs)) || st.Requests != 2 {
				t.Fatalf("stats %+v", st)
			}
			// A third request joins the completed, still held flights.
			c, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res := c.Wait(t.Context()); !res.Complete {
				t.Fatalf("request joining completed flights: %+v", res)
			}
			c.Close()
			if o.gets != len(cs) {
				t.Fatalf("%d store reads after a third request, want %d", o.gets, len(cs))
			}
		})
	}
}

// A batch whose every request gave up stops: its context ends, the
// worker holding it is free for the next request, and nothing leaks.
func TestPrefetchAbandonedBatchStops(t *testing.T) {
	spec := smallSpec(t)
	_, cs, o := memWith(t, spec, 4, 64)
	o.gate = make(chan struct{}) // never opened: the batch waits until cancelled
	b := &batchObserved{observed: o}
	p := newPrefetcher(t, b, PrefetchOptions{Workers: 1})
	ctx, cancel := context.WithCancel(t.Context())
	f, err := p.Fetch(ctx, keysOf(cs[:2]), FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the batch to start", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.batches) == 1
	})
	cancel()
	if res := f.Wait(t.Context()); len(res.Recompute) != 2 {
		t.Fatalf("cancelled request: %+v", res)
	}
	f.Close()
	testutil.Eventually(t, "the abandoned batch to end", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.ended == 1
	})
	o.mu.Lock()
	o.gate = nil
	o.mu.Unlock()
	g, err := p.Fetch(t.Context(), keysOf(cs[2:]), FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	res := g.Wait(t.Context())
	if !res.Complete {
		t.Fatalf("the next request on the only worker: %+v", res)
	}
	checkFetched(t, g, res, cs[2:])
}

// A request's first layers (and opens) go before the later layers of a
// request due earlier: its stitcher can start while the other finishes.
// Within each class, earliest deadline first.
func TestPrefetchFirstLayersBeforeLaterLayers(t *testing.T) {
	spec := smallSpec(t)
	_, cs, o := memWith(t, spec, 3, 64)
	o.gate = make(chan struct{})
	p := newPrefetcher(t, o, PrefetchOptions{Workers: 1})
	a, err := p.Fetch(t.Context(), keysOf(cs[:2]), FetchOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := p.Fetch(t.Context(), keysOf(cs[2:]), FetchOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	close(o.gate)
	if ra, rb := a.Wait(t.Context()), b.Wait(t.Context()); !ra.Complete || !rb.Complete {
		t.Fatalf("results %+v %+v", ra, rb)
	}
	want := "[open a open b L0 a L0 b open c L0 c L1 a L1 b L2 a L2 b L3 a L3 b L1 c L2 c L3 c]"
	if got := fmt.Sprint(o.events); got != want {
		t.Fatalf("order\n got %s\nwant %s", got, want)
	}
}

// A request due earlier that joins a chunk another request is fetching
// makes that chunk's work due by its own deadline.
func TestPrefetchJoinEarlierDeadline(t *testing.T) {
	spec := smallSpec(t)
	_, cs, o := memWith(t, spec, 2, 64)
	o.gate = make(chan struct{})
	p := newPrefetcher(t, o, PrefetchOptions{Workers: 1})
	a, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	testutil.Eventually(t, "the open of chunk a to start", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.waiting == 1
	})
	b, err := p.Fetch(t.Context(), keysOf(cs[1:]), FetchOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	close(o.gate)
	if ra, rb := a.Wait(t.Context()), b.Wait(t.Context()); !ra.Complete || !rb.Complete {
		t.Fatalf("results %+v %+v", ra, rb)
	}
	// Chunk b is due by B's deadline: its layers go first in each class.
	want := "[open a open b L0 b L0 a L1 b L1 a L2 b L2 a L3 b L3 a]"
	if got := fmt.Sprint(o.events); got != want {
		t.Fatalf("order\n got %s\nwant %s", got, want)
	}
}

// Rounds over many chunks, duplicates and a miss among them: when
// WaitLayer(l) returns, layer l of every chunk still in the running is
// there without waiting, and a chunk that failed holds no round back.
func TestPrefetchRoundsManyChunks(t *testing.T) {
	spec := smallSpec(t)
	_, cs, o := memWith(t, spec, 20, 16)
	want := append(cs[:len(cs):len(cs)], cs[3], nil, cs[7]) // nil: not stored
	var keys []matcher.ChunkKey
	for _, c := range want {
		k := matcher.ChunkKey{0xee}
		if c != nil {
			k = c.Key
		}
		keys = append(keys, k)
	}
	for _, src := range sources(o) {
		t.Run(src.name, func(t *testing.T) {
			p := newPrefetcher(t, src.src, PrefetchOptions{Workers: 4})
			f, err := p.Fetch(t.Context(), keys, FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			done, cancel := context.WithCancel(t.Context())
			cancel() // Layer must answer without waiting
			for l := range spec.Layers {
				if err := f.WaitLayer(t.Context(), l); err != nil {
					t.Fatal(err)
				}
				for i, c := range want {
					r := f.Reader(i)
					if c == nil {
						continue
					}
					if r == nil {
						t.Fatalf("layer %d: chunk %d has no reader", l, i)
					}
					if _, err := r.Layer(done, l); err != nil {
						t.Fatalf("after WaitLayer(%d), chunk %d: %v", l, i, err)
					}
				}
			}
			res := f.Wait(t.Context())
			if fmt.Sprint(res.Recompute) != "[21]" || res.FirstLayer <= 0 || res.Elapsed < res.FirstLayer {
				t.Fatalf("result %+v", res)
			}
			for i, c := range want {
				if c != nil {
					checkReader(t, f.Reader(i), c)
				}
			}
		})
	}
}

// Misses and failures mark chunks for recompute; the rest arrive.
func TestPrefetchMisses(t *testing.T) {
	spec := smallSpec(t)
	m, cs, _ := memWith(t, spec, 3, 64)
	p := newPrefetcher(t, m, PrefetchOptions{})
	keys := []matcher.ChunkKey{cs[0].Key, {0xee}, cs[2].Key}
	f, err := p.Fetch(t.Context(), keys, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res := f.Wait(t.Context())
	if !res.Arrived[0] || res.Arrived[1] || !res.Arrived[2] || !errors.Is(res.Errs[1], ErrNotFound) || fmt.Sprint(res.Recompute) != "[1]" {
		t.Fatalf("result %+v", res)
	}
	if f.Reader(1) != nil {
		t.Fatal("a missing chunk has a reader")
	}
}

// A slow tier past the deadline: the request returns at its deadline with
// every unfinished chunk marked for recompute, and the prefetcher serves
// the next request when the tier is back. Redis is made slow for real with
// CLIENT PAUSE.
func TestPrefetchSlowTierPastDeadline(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 4, 4, 64)
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	var cs []*kvcache.Chunk
	for i := range 4 {
		c := makeChunk(t, spec, 64, uint64(i))
		if err := r.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	p := newPrefetcher(t, r, PrefetchOptions{})
	srv.Do(t, "CLIENT", "PAUSE", "1500", "ALL")
	start := time.Now()
	f, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res := f.Wait(t.Context())
	el := time.Since(start)
	f.Close()
	if el > 700*time.Millisecond {
		t.Fatalf("fetch past its 200ms deadline returned after %v", el)
	}
	if len(res.Recompute) != len(cs) {
		t.Fatalf("result %+v, want every chunk for recompute", res)
	}
	for _, err := range res.Errs {
		if !errors.Is(err, ErrDeadline) {
			t.Fatalf("chunk error %v, want ErrDeadline", err)
		}
	}
	time.Sleep(time.Until(start.Add(1600 * time.Millisecond)))
	start = time.Now()
	g, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	res = g.Wait(t.Context())
	t.Logf("next fetch took %v", time.Since(start))
	if !res.Complete {
		t.Fatalf("after the pause: %+v", res)
	}
	checkFetched(t, g, res, cs)
}

// When the rest cannot arrive by the deadline at the rate seen so far,
// chunks are given up from the end of the prompt so that a prefix arrives
// whole; without shedding, layer-major order would leave every chunk
// incomplete.
func TestPrefetchShedsTailForPrefix(t *testing.T) {
	spec := testSpec(t, 8, 2, 16)
	_, cs, o := memWith(t, spec, 8, 64)
	// A medium of known, slow speed: 64 layer reads of 10ms one at a time
	// take 640ms, twice the deadline, and in layer-major order no chunk
	// is whole before the last round.
	o.perLayer = 10 * time.Millisecond
	p := newPrefetcher(t, o, PrefetchOptions{Workers: 1})
	for _, shed := range []bool{true, false} {
		t.Run(fmt.Sprintf("shed=%v", shed), func(t *testing.T) {
			start := time.Now()
			f, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{Timeout: 350 * time.Millisecond, NoShed: !shed})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res := f.Wait(t.Context())
			if el := time.Since(start); el > 900*time.Millisecond {
				t.Fatalf("returned after %v, deadline 350ms", el)
			}
			n := 0
			for n < len(cs) && res.Arrived[n] {
				n++
			}
			for i := n; i < len(cs); i++ {
				if res.Arrived[i] {
					t.Fatalf("arrived %v is not a prefix", res.Arrived)
				}
				if !errors.Is(res.Errs[i], ErrDeadline) {
					t.Fatalf("chunk %d: %v, want ErrDeadline", i, res.Errs[i])
				}
			}
			checkFetched(t, f, res, cs)
			if shed && n == 0 {
				t.Fatalf("with shedding no chunk arrived: %+v", res)
			}
			if !shed && n != 0 {
				t.Fatalf("without shedding %d chunks arrived; layer-major order should leave none whole", n)
			}
		})
	}
}

func TestPrefetcherClosed(t *testing.T) {
	m := newMem(t, smallSpec(t), 1<<20, MemoryOptions{})
	p := newPrefetcher(t, m, PrefetchOptions{})
	p.Close()
	if _, err := p.Fetch(t.Context(), []matcher.ChunkKey{{1}}, FetchOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("fetch after close: %v", err)
	}
	if _, err := NewPrefetcher(nil, PrefetchOptions{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("nil store: %v", err)
	}
}

// Redis killed in the middle of a prefetch over a tiered store: the fetch
// ends promptly, the Redis chunks that did not make it are marked for
// recompute with the tier failure, the memory chunks arrive, nothing
// wrong is delivered, and the store serves the next request from what is
// left.
func TestPrefetchRedisKilledMidFetch(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 16, 8, 64) // 64 tokens: 128 KiB a layer, 2 MiB a chunk
	st, _ := openStack(t, spec, srv, 64<<20)
	rds := st.tiers[2]
	var cs []*kvcache.Chunk
	for i := range 8 {
		c := makeChunk(t, spec, 64, uint64(i))
		var err error
		if i%2 == 0 {
			err = st.tiers[0].Put(t.Context(), c) // memory
		} else {
			err = rds.Put(t.Context(), c)
		}
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	o := &observed{Store: st, chunkName: map[matcher.ChunkKey]string{}, perLayer: 2 * time.Millisecond}
	p := newPrefetcher(t, o, PrefetchOptions{Workers: 4})
	f, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{Timeout: 5 * time.Second, NoShed: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.WaitLayer(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)
	start := time.Now()
	res := f.Wait(t.Context())
	el := time.Since(start)
	t.Logf("fetch ended %v after the kill", el)
	if el > 3*time.Second {
		t.Fatalf("fetch took %v after the kill", el)
	}
	checkFetched(t, f, res, cs)
	for i := range cs {
		if i%2 == 0 && !res.Arrived[i] {
			t.Fatalf("memory chunk %d did not arrive: %v", i, res.Errs[i])
		}
	}
	failed := 0
	for _, i := range res.Recompute {
		if i%2 == 0 {
			t.Fatalf("memory chunk %d marked for recompute", i)
		}
		if !errors.Is(res.Errs[i], ErrUnavailable) && !errors.Is(res.Errs[i], ErrNotFound) {
			t.Fatalf("redis chunk %d: %v, want the tier failure", i, res.Errs[i])
		}
		failed++
	}
	if failed == 0 {
		t.Fatal("every redis chunk arrived although the server was killed mid-fetch")
	}
	start = time.Now()
	g, err := p.Fetch(t.Context(), keysOf(cs), FetchOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	res = g.Wait(t.Context())
	t.Logf("next fetch took %v", time.Since(start))
	for i := range cs {
		if i%2 == 0 && !res.Arrived[i] {
			t.Fatalf("after the kill, memory chunk %d: %v", i, res.Errs[i])
		}
	}
	checkFetched(t, g, res, cs)
}
