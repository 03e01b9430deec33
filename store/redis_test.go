package store

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

func openRedis(t *testing.T, opts RedisOptions) *Redis {
	t.Helper()
	r, err := OpenRedis(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// The key layout of docs/storage.md: a metadata key and layer groups of at
// least 256 KiB (the last short group merged into the one before).
func TestRedisKeyLayoutAndRoundTrip(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 10, 4, 64) // 64 tokens: 64 KiB a layer
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	c := makeChunk(t, spec, 64, 1)
	if err := r.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	mustGet(t, r, c)
	hex := c.Key.String()
	if got := srv.Do(t, "EXISTS", "kvloom:{"+hex+"}:m"); got != ":1" {
		t.Fatalf("metadata key: EXISTS = %s", got)
	}
	// 10 layers of 64 KiB: groups of 4, 4, and the last 2 merged: 4+6.
	var sizes []int
	for g := 0; ; g++ {
		n, err := strconv.Atoi(srv.Do(t, "STRLEN", "kvloom:{"+hex+"}:"+strconv.Itoa(g))[1:])
		if err != nil || n == 0 {
			break
		}
		sizes = append(sizes, n)
	}
	if len(sizes) != 2 || sizes[0] < DefaultMinTransfer || sizes[1] < DefaultMinTransfer {
		t.Fatalf("layer group sizes %v, want 2 groups of at least %d bytes", sizes, DefaultMinTransfer)
	}
	// A chunk smaller than the minimum transfer is one group.
	small := makeChunk(t, smallSpec(t), 16, 2)
	r2 := openRedis(t, RedisOptions{URL: srv.URL(), Prefix: "p2"})
	if err := r2.Put(t.Context(), small); err != nil {
		t.Fatal(err)
	}
	if got := srv.Do(t, "EXISTS", "p2:{"+small.Key.String()+"}:1"); got != ":0" {
		t.Fatal("a small chunk was split into several groups")
	}
	mustGet(t, r2, small)

	has, err := r.Has(t.Context(), []matcher.ChunkKey{c.Key, small.Key})
	if err != nil || !has[0] || has[1] {
		t.Fatalf("Has = %v, %v; want [true false] (small is under another prefix)", has, err)
	}
	if err := r.Delete(t.Context(), c.Key); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, r, c.Key)
	if got := srv.Do(t, "DBSIZE"); got != ":2" {
		t.Fatalf("DBSIZE after delete = %s, want :2 (only the other prefix's chunk)", got)
	}
}

func TestRedisCluster(t *testing.T) {
	cl := testutil.StartRedisCluster(t)
	spec := testSpec(t, 6, 4, 64)
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, ClusterURL: cl.URL()})
	var cs []*kvcache.Chunk
	for i := range 12 {
		cs = append(cs, makeChunk(t, spec, 64, uint64(i)))
	}
	if err := r.PutBlobs(t.Context(), encodeAll(t, cs...)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		mustGet(t, r, c)
	}
	used := 0
	for _, n := range cl.Nodes {
		if n.Do(t, "DBSIZE") != ":0" {
			used++
		}
	}
	if used < 2 {
		t.Fatalf("12 chunks landed on %d of 3 masters, want them spread", used)
	}
	if err := r.Delete(t.Context(), cs[0].Key); err != nil {
		t.Fatal(err)
	}
	mustMiss(t, r, cs[0].Key)
}

// What Redis evicts key by key, or what is corrupted in it, is a miss.
func TestRedisPartialAndCorrupt(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 10, 4, 64)
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	c := makeChunk(t, spec, 64, 1)
	hex := c.Key.String()
	for _, tc := range []struct {
		name    string
		mangle  []string
		corrupt bool
	}{
		{"group evicted", []string{"DEL", "kvloom:{" + hex + "}:1"}, false},
		{"group corrupted", []string{"SETRANGE", "kvloom:{" + hex + "}:1", "100", "XYZ"}, true},
		{"group truncated", []string{"SET", "kvloom:{" + hex + "}:1", "short"}, true},
		{"group lengthened", []string{"APPEND", "kvloom:{" + hex + "}:1", "XYZ"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.Put(t.Context(), c); err != nil {
				t.Fatal(err)
			}
			srv.Do(t, tc.mangle...)
			rd, err := r.Get(t.Context(), c.Key, kvcache.AllLayers)
			if err != nil {
				t.Fatalf("get (group 0 intact): %v", err)
			}
			var lerr error
			for l := range spec.Layers {
				b, err := rd.Layer(t.Context(), l)
				if err != nil {
					lerr = err
					break
				}
				if string(b) != string(c.Layers[l]) {
					t.Fatalf("layer %d: wrong bytes", l)
				}
			}
			rd.Close()
			if !errors.Is(lerr, ErrNotFound) || tc.corrupt != errors.Is(lerr, ErrCorrupt) {
				t.Fatalf("layers: %v, want ErrNotFound (corrupt: %v)", lerr, tc.corrupt)
			}
			mustMiss(t, r, c.Key) // what was left was dropped
		})
	}
	// A first group longer than the metadata says: the tier wrote the
	// chunk, so it reads that group into a buffer of the size it knows,
	// which the value does not fit; read again plainly, it is corrupt.
	if err := r.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	srv.Do(t, "APPEND", "kvloom:{"+hex+"}:0", "XYZ")
	if err := mustMiss(t, r, c.Key); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("first group lengthened: %v, want ErrCorrupt", err)
	}
	mustMiss(t, r, c.Key) // what was left was dropped
	// A chunk written for another model is a miss for this one.
	other := testSpec(t, 10, 4, 64)
	other.WeightsID = "other"
	ro := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: other}, URL: srv.URL()})
	oc := makeChunk(t, other, 64, 5)
	if err := ro.Put(t.Context(), oc); err != nil {
		t.Fatal(err)
	}
	if err := mustMiss(t, r, oc.Key); !errors.Is(err, kvcache.ErrModelMismatch) {
		t.Fatalf("another model's chunk: %v, want ErrModelMismatch", err)
	}
}

// Redis killed in the middle of a fetch: the read fails with
// ErrUnavailable within the deadline, never with wrong bytes, and the tier
// recovers when the server is back.
func TestRedisKilledMidFetch(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 10, 4, 64)
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	c := makeChunk(t, spec, 64, 1)
	if err := r.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	rd, err := r.Get(t.Context(), c.Key, kvcache.AllLayers)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if _, err := rd.Layer(t.Context(), 0); err != nil { // group 0 came with the metadata
		t.Fatal(err)
	}
	srv.Kill(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = rd.Layer(ctx, 9) // group 1: needs the server
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("layer after the kill: %v, want ErrUnavailable", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("failing took %v, past the deadline", el)
	}
	if r.Stats().Up {
		t.Fatal("tier still reports up")
	}
	srv.Restart(t)
	c2 := makeChunk(t, spec, 64, 2)
	testutil.Eventually(t, "the redis tier to accept writes again", func() bool { return r.Put(t.Context(), c2) == nil })
	mustGet(t, r, c2)
	if !r.Stats().Up {
		t.Fatal("tier not up after the server came back")
	}
}

func TestRedisOptionErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts RedisOptions
	}{
		{"no url", RedisOptions{}},
		{"both", RedisOptions{URL: "redis://a:1", ClusterURL: "redis://b:2"}},
		{"bad url", RedisOptions{URL: "http://x"}},
		{"brace prefix", RedisOptions{URL: "redis://127.0.0.1:1", Prefix: "a{b"}},
		{"negative ttl", RedisOptions{URL: "redis://127.0.0.1:1", TTL: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := OpenRedis(t.Context(), tc.opts); !errors.Is(err, ErrConfig) {
				t.Fatalf("%+v: %v, want ErrConfig", tc.opts, err)
			}
		})
	}
	// A server that is not there: the tier opens down and fails fast.
	r := openRedis(t, RedisOptions{URL: "redis://127.0.0.1:1"})
	if r.Stats().Up {
		t.Fatal("tier to a closed port reports up")
	}
	_, err := r.Get(t.Context(), matcher.ChunkKey{1}, kvcache.AllLayers)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("get from a down tier: %v, want ErrUnavailable", err)
	}
}

// GetMany opens many chunks in one pipeline and answers every key on its
// own: hits read back verified, a missing key and a chunk that lost its
// first group are misses, and neither disturbs the others. A tier that
// knows a chunk's group sizes (it wrote or read its metadata) reads the
// first group into a pooled buffer; one that does not (another host's
// chunk) reads it into a fresh value and learns the sizes.
func TestRedisGetMany(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 10, 4, 64) // 64 KiB layers: groups of 4 layers
	writer := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	other := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	var cs []*kvcache.Chunk
	for i := range 4 {
		cs = append(cs, makeChunk(t, spec, 64, uint64(i)))
	}
	if err := writer.PutBlobs(t.Context(), encodeAll(t, cs...)); err != nil {
		t.Fatal(err)
	}
	srv.Do(t, "DEL", "kvloom:{"+cs[2].Key.String()+"}:0") // evicted in part
	keys := []matcher.ChunkKey{cs[0].Key, {9, 9}, cs[1].Key, cs[2].Key, cs[3].Key}
	want := []*kvcache.Chunk{cs[0], nil, cs[1], nil, cs[3]}
	for _, tc := range []struct {
		name   string
		r      *Redis
		pooled bool
	}{{"writer", writer, true}, {"other host", other, false}, {"other host again", other, true}} {
		t.Run(tc.name, func(t *testing.T) {
			got := make([]kvcache.ChunkReader, len(keys))
			errs := make([]error, len(keys))
			calls := 0
			tc.r.GetMany(t.Context(), keys, kvcache.AllLayers, func(i int, rd kvcache.ChunkReader, err error) {
				calls++
				got[i], errs[i] = rd, err
			})
			if calls != len(keys) {
				t.Fatalf("ready called %d times for %d keys", calls, len(keys))
			}
			for i, c := range want {
				if c == nil {
					if got[i] != nil || !errors.Is(errs[i], ErrNotFound) {
						t.Fatalf("key %d: reader %v, err %v; want a miss", i, got[i], errs[i])
					}
					continue
				}
				if errs[i] != nil {
					t.Fatalf("key %d: %v", i, errs[i])
				}
				if p := got[i].(*redisReader).gslots[0].pooled; p != tc.pooled {
					t.Fatalf("key %d: first group pooled = %v, want %v", i, p, tc.pooled)
				}
				checkReader(t, got[i], c)
				got[i].Close()
			}
			if st := tc.r.Stats(); !st.Up || st.Errors != 0 {
				t.Fatalf("stats after the batch: %+v", st)
			}
		})
	}
}

// A first-group size the tier remembers can be stale: the chunk was
// rewritten by a tier with a larger MinTransfer, so its first group no
// longer fits the pooled buffer. go-redis stops reading the pipeline at
// that reply; every chunk of the batch still opens, reads its first group
// again at the size its metadata gives, and reads back right, and the
// tier is not marked down for it.
func TestRedisGetManyStaleFirstGroupSize(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 10, 4, 64)
	small := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL(), MinTransfer: 128 << 10})
	large := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	var cs []*kvcache.Chunk
	for i := range 3 {
		cs = append(cs, makeChunk(t, spec, 64, uint64(i)))
	}
	if err := small.PutBlobs(t.Context(), encodeAll(t, cs...)); err != nil {
		t.Fatal(err)
	}
	if err := large.Put(t.Context(), cs[0]); err != nil { // 256 KiB first group now
		t.Fatal(err)
	}
	n := 0
	small.GetMany(t.Context(), keysOf(cs), kvcache.AllLayers, func(i int, rd kvcache.ChunkReader, err error) {
		n++
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		checkReader(t, rd, cs[i])
		rd.Close()
	})
	if st := small.Stats(); n != len(cs) || !st.Up || st.Errors != 0 || st.Corrupt != 0 {
		t.Fatalf("%d answers; stats %+v", n, st)
	}
	if got, _ := small.firstLen(cs[0].Key); got != 256<<10 {
		t.Fatalf("first group size learnt: %d, want %d", got, 256<<10)
	}
}
