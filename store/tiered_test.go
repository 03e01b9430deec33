package store

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

func TestParse(t *testing.T) {
	good := []struct {
		spec string
		want string // Config.String()
		n    int
	}{
		{"mem:8GiB,disk:/var/lib/kvloom:200GiB,redis://127.0.0.1:6379", "mem:8.0GiB,disk:/var/lib/kvloom:200GiB,redis://127.0.0.1:6379", 3},
		{"mem:512MiB:policy=s3fifo", "mem:512MiB:policy=s3fifo", 1},
		{"disk:/a:b:1GiB:admit=2:pack=16MiB", "disk:/a:b:1.0GiB:admit=2:pack=16MiB", 1},
		{"redis://:secret@h:1/2?ttl=1h&prefix=kv&min_transfer=1MiB&dial_timeout=3", "redis://:xxxxx@h:1/2?dial_timeout=3&min_transfer=1048576&prefix=kv&ttl=1h0m0s", 1},
		{"redis-cluster://10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000", "redis-cluster://10.0.0.1:7000?addr=10.0.0.2%3A7000&addr=10.0.0.3%3A7000", 1},
		{" mem:1GB , disk:/d:2GB ", "mem:954MiB,disk:/d:1.9GiB", 2},
	}
	for _, tc := range good {
		cfg, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if len(cfg.Tiers) != tc.n || cfg.String() != tc.want {
			t.Errorf("Parse(%q) = %d tiers %q, want %d %q", tc.spec, len(cfg.Tiers), cfg.String(), tc.n, tc.want)
		}
	}
	cfg, _ := Parse("disk:/a:b:1GiB:admit=2")
	if cfg.Tiers[0].Path != "/a:b" || cfg.Tiers[0].AdmitAfter != 2 {
		t.Errorf("disk with a colon in its path: %+v", cfg.Tiers[0])
	}
	bad := []struct {
		spec string
		want []string
	}{
		{"", []string{"empty"}},
		{"mem:8XB", []string{`tier 1 "mem:8XB"`, `size "8XB"`}},
		{"mem:0", []string{"want > 0"}},
		{"mem:1GiB,mem:2GiB", []string{"tier 2", "second mem tier"}},
		{"disk:/x", []string{"want disk:PATH:SIZE"}},
		{"disk:/x:1GiB:admit=99", []string{"admit=\"99\""}},
		{"disk:/x:1GiB:fast=yes", []string{`unknown option "fast=yes"`}},
		{"ftp://x", []string{"unknown tier kind"}},
		{"mem:1GiB,,disk:/x:1GiB", []string{"tier 2", "empty tier"}},
		{"redis://h:1?ttl=soon", []string{`ttl="soon"`}},
		{"redis://h:1?prefix={x}", []string{"prefix="}},
		{"mem:1:policy=", []string{"policy= needs a name"}},
		// every problem at once
		{"mem:x,disk:/y", []string{"tier 1", "tier 2"}},
	}
	for _, tc := range bad {
		_, err := Parse(tc.spec)
		if !errors.Is(err, ErrConfig) {
			t.Errorf("Parse(%q): %v, want ErrConfig", tc.spec, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Parse(%q): %q does not mention %q", tc.spec, err, w)
			}
		}
	}
}

// openStack opens mem → disk → redis from a spec string.
func openStack(t *testing.T, spec *kvcache.ModelSpec, srv *testutil.Redis, memBytes int64) (*Tiered, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	cfg, err := Parse("mem:" + strconv.FormatInt(memBytes, 10) + "B,disk:" + dir + ":64MiB," + srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(t.Context(), cfg, OpenOptions{BlobOptions: BlobOptions{Model: spec}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, dir
}

// Put writes through; a chunk found only in a lower tier is served and
// promoted; Locate and Coverage answer from local state.
func TestTieredPromotionAndLocate(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 4, 4, 64)
	st, _ := openStack(t, spec, srv, 8<<20)
	mem, disk, rds := st.tiers[0].(*Memory), st.tiers[1].(*Disk), st.tiers[2].(*Redis)
	a, b := makeChunk(t, spec, 64, 1), makeChunk(t, spec, 64, 2)
	for _, c := range []*kvcache.Chunk{a, b} {
		if err := st.Put(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	locs := st.Locate([]matcher.ChunkKey{a.Key, b.Key, {7}}, nil)
	if locs[0] != 0b111 || locs[1] != 0b111 || locs[2] != 0 {
		t.Fatalf("Locate after put = %03b %03b %03b, want 111 111 000", locs[0], locs[1], locs[2])
	}
	// a only in redis, b only on disk.
	if err := mem.Delete(t.Context(), a.Key, b.Key); err != nil {
		t.Fatal(err)
	}
	if err := disk.Delete(t.Context(), a.Key); err != nil {
		t.Fatal(err)
	}
	if err := rds.Delete(t.Context(), b.Key); err != nil {
		t.Fatal(err)
	}
	if l := st.Locate([]matcher.ChunkKey{a.Key, b.Key}, nil); l[0].First() != 2 || l[1].First() != 1 {
		t.Fatalf("Locate = %03b %03b, want a in redis, b on disk", l[0], l[1])
	}
	mustGet(t, st, a)
	mustGet(t, st, b)
	testutil.Eventually(t, "promotion into memory", func() bool { return mem.contains(a.Key) && mem.contains(b.Key) })
	testutil.Eventually(t, "promotion of a onto disk", func() bool { return disk.contains(a.Key) })
	s := st.Stats()
	if s.Promotions < 3 || s.Tiers[1].Hits != 1 || s.Tiers[2].Hits != 1 {
		t.Fatalf("stats %+v: want 3 promotions and one hit each in disk and redis", s)
	}
	// A layer-range read is served but not promoted.
	c := makeChunk(t, spec, 64, 3)
	if err := rds.Put(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	r, err := st.Get(t.Context(), c.Key, kvcache.LayerRange{Start: 0, End: 2})
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, c)
	r.Close()
	time.Sleep(20 * time.Millisecond)
	if mem.contains(c.Key) {
		t.Fatal("a partial read was promoted")
	}
	// Coverage of a plan with three sources: a, b cached, one not.
	plan := &kvcache.Plan{Prompt: make([]matcher.Token, 300), Keys: []matcher.ChunkKey{a.Key, b.Key, {9}},
		Segments: []kvcache.Segment{{Source: 0, SrcEnd: 64, Dst: 0}, {Source: 1, SrcEnd: 64, Dst: 64}, {Source: 2, SrcEnd: 64, Dst: 200}}}
	cov := st.Coverage(plan)
	if cov.PlannedTokens != 192 || cov.CachedTokens != 128 || cov.TierTokens[0] != 128 || cov.CachedChunks != 2 {
		t.Fatalf("coverage %+v", cov)
	}
	has, err := st.Has(t.Context(), []matcher.ChunkKey{a.Key, c.Key, {9}})
	if err != nil || !has[0] || !has[1] || has[2] {
		t.Fatalf("Has = %v, %v", has, err)
	}
}

// Redis killed: the store keeps serving from memory and disk, and what
// only Redis held is a miss, not an error.
func TestTieredSurvivesRedisLoss(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 4, 4, 64)
	st, _ := openStack(t, spec, srv, 8<<20)
	a, b := makeChunk(t, spec, 64, 1), makeChunk(t, spec, 64, 2)
	if err := st.Put(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if err := st.tiers[2].Put(t.Context(), b); err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)
	mustGet(t, st, a)
	err := mustMiss(t, st, b.Key)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("miss while redis is down: %v, want the tier failure named", err)
	}
	c := makeChunk(t, spec, 64, 3)
	if err := st.Put(t.Context(), c); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("put with redis down: %v, want ErrUnavailable named", err)
	}
	mustGet(t, st, c) // memory and disk took it
	if st.Stats().Up {
		t.Fatal("stack reports up with redis down")
	}
}

func TestOpenErrors(t *testing.T) {
	cfg, err := Parse("mem:1MiB,disk:" + filepath.Join(t.TempDir(), "f") + ":1MiB:admit=20")
	if err == nil {
		_, err = Open(t.Context(), cfg, OpenOptions{})
	}
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("admit=20: %v, want ErrConfig", err)
	}
	if _, err := Open(t.Context(), Config{}, OpenOptions{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no tiers: %v", err)
	}
	if _, err := NewTiered(TieredOptions{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("NewTiered with no tiers: %v", err)
	}
}

// GetMany over a stack: chunks held by the local tiers are answered from
// them, the rest go to Redis in one batch while the local ones open, a
// missing key is a miss, and the local tiers still learn of the chunks
// sent straight to Redis (their misses): a Redis chunk read whole is
// promoted into a disk tier that admits only chunks wanted twice, the
// miss being the first want and the promotion the second.
func TestTieredGetMany(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := testSpec(t, 4, 4, 64)
	blob := BlobOptions{Model: spec}
	mem, err := NewMemory(MemoryOptions{BlobOptions: blob, Capacity: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	disk := openDisk(t, t.TempDir(), spec, 64<<20, DiskOptions{AdmitAfter: 2})
	rds := openRedis(t, RedisOptions{BlobOptions: blob, URL: srv.URL()})
	st, err := NewTiered(TieredOptions{BlobOptions: blob}, mem, disk, rds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var cs []*kvcache.Chunk
	for i := range 6 {
		c := makeChunk(t, spec, 64, uint64(i))
		cs = append(cs, c)
		switch i % 3 {
		case 0:
			err = mem.Put(t.Context(), c)
		case 1:
			mustMiss(t, disk, c.Key) // wanted once: the put is admitted
			err = disk.Put(t.Context(), c)
		case 2:
			err = rds.Put(t.Context(), c)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	keys := append(keysOf(cs), matcher.ChunkKey{7, 7})
	from := []int{0, 1, 2, 0, 1, 2, -1}
	hits := make([]int64, 3)
	for i, tier := range []BlobStore{mem, disk, rds} {
		hits[i] = tier.Stats().Hits
	}
	// The callback may run on GetMany's own goroutines: gather the
	// answers and check them here, on the test's.
	type answer struct {
		i   int
		r   kvcache.ChunkReader
		err error
	}
	var got []answer
	st.GetMany(t.Context(), keys, kvcache.AllLayers, func(i int, r kvcache.ChunkReader, err error) {
		got = append(got, answer{i, r, err})
	})
	if len(got) != len(keys) {
		t.Fatalf("answers for %v, want every one of %d keys", got, len(keys))
	}
	for _, a := range got {
		if from[a.i] < 0 {
			if a.r != nil || !errors.Is(a.err, ErrNotFound) {
				t.Fatalf("missing key: reader %v, err %v", a.r, a.err)
			}
			continue
		}
		if a.err != nil {
			t.Fatalf("chunk %d: %v", a.i, a.err)
		}
		checkReader(t, a.r, cs[a.i])
		a.r.Close() // read whole: Redis chunks are promoted
	}
	for i, tier := range []BlobStore{mem, disk, rds} {
		if n := tier.Stats().Hits - hits[i]; n != 2 {
			t.Fatalf("tier %d served %d chunks, want 2", i, n)
		}
	}
	for _, c := range []*kvcache.Chunk{cs[2], cs[5]} {
		testutil.Eventually(t, "the redis chunks to be promoted to disk", func() bool {
			has, err := disk.Has(t.Context(), []matcher.ChunkKey{c.Key})
			return err == nil && has[0]
		})
		mustGet(t, disk, c)
	}
}
