package hostctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store"
)

// storage is the daemon's view of the store package: the tiered store
// (mem → disk → redis, from cfg.TierSpec), its write-back queue, and a
// prefetcher over the tiers and the peers.
type storage struct {
	tiered *store.Tiered
	wb     *store.WriteBack
	pf     *store.Prefetcher
	src    *peerStore
	names  []string // tier labels, fastest first
	first  *store.Memory
	log    *slog.Logger
	m      *metrics
}

// flushResult counts what the final flush wrote: written, partial (held
// by some durable tier but not all, e.g. Redis was down), failed (held by
// no durable tier: lost at exit).
type flushResult struct{ written, partial, failed int }

// openStorage opens the tiers cfg.TierSpec names.
func openStorage(ctx context.Context, cfg *Config, log *slog.Logger, m *metrics) (*storage, error) {
	spec, err := store.Parse(cfg.TierSpec())
	if err != nil {
		return nil, &FieldError{Field: "tiers", Value: cfg.TierSpec(), Reason: err.Error()}
	}
	codec, err := codecByName(cfg.Codec)
	if err != nil {
		return nil, err
	}
	codecs, err := kvcache.NewCodecs(kvcache.FP8{}, mustCacheGen())
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	blob := store.BlobOptions{Codec: codec, Codecs: codecs}
	tiers, err := openTiers(ctx, spec, blob, log)
	if err != nil {
		return nil, fmt.Errorf("open tiers %s: %w", cfg.TierSpec(), err)
	}
	t, err := store.NewTiered(store.TieredOptions{BlobOptions: blob, Logger: log}, tiers...)
	if err != nil {
		for _, x := range tiers {
			x.Close()
		}
		return nil, fmt.Errorf("open tiers %s: %w", cfg.TierSpec(), err)
	}
	s := &storage{tiered: t, log: log, m: m}
	// Chunks a Store call hands over are readable at once from the memory
	// tier; the write-back queue takes them to the lower tiers.
	if mem, ok := tiers[0].(*store.Memory); ok {
		s.first = mem
	}
	seen := map[string]int{}
	for _, n := range t.Tiers() {
		kind, _, _ := strings.Cut(n, ":")
		if strings.HasPrefix(kind, "redis") || strings.HasPrefix(kind, "rediss") {
			kind = "redis"
		}
		if c := seen[kind]; c > 0 {
			kind += strconv.Itoa(c)
		}
		seen[kind]++
		s.names = append(s.names, kind)
	}
	s.wb, err = store.NewWriteBack(t, store.WriteBackOptions{BlobOptions: blob, MaxBytes: int64(cfg.Limits.WritebackBytes), Logger: log})
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("write-back queue: %w", err)
	}
	s.src = &peerStore{Store: t}
	s.pf, err = store.NewPrefetcher(s.src, store.PrefetchOptions{Workers: cfg.PrefetchDepth, Logger: log})
	if err != nil {
		s.wb.Close(ctx)
		t.Close()
		return nil, fmt.Errorf("prefetcher: %w", err)
	}
	m.reg.MustRegister(s)
	for _, st := range s.tierStats() {
		m.setBackend("tier_"+s.label(st.Tier), st.Up)
	}
	return s, nil
}

func mustCacheGen() kvcache.Codec {
	c, err := kvcache.NewCacheGen(2)
	if err != nil {
		panic(err) // level 2 is in range by construction
	}
	return c
}

// label is a tier's bounded metric label.
func (s *storage) label(name string) string {
	for i, n := range s.tiered.Tiers() {
		if n == name {
			return s.names[i]
		}
	}
	return "other"
}

// where names the fastest local tier holding each key ("" for none), from
// local state only: microseconds, no I/O.
func (s *storage) where(keys []matcher.ChunkKey) []string {
	locs := s.tiered.Locate(keys, nil)
	out := make([]string, len(keys))
	for i, l := range locs {
		if f := l.First(); f >= 0 {
			out[i] = s.names[f]
		}
	}
	return out
}

// get reads one chunk from the local tiers (no peers).
func (s *storage) get(ctx context.Context, key matcher.ChunkKey) (kvcache.ChunkReader, string, error) {
	w := s.where([]matcher.ChunkKey{key})[0]
	r, err := s.tiered.Get(ctx, key, kvcache.AllLayers)
	if err != nil {
		return nil, "", err
	}
	if w == "" {
		w = s.names[len(s.names)-1]
	}
	return r, w, nil
}

// enqueue makes a chunk readable at once (the memory tier, when it is the
// first) and hands it to the write-back queue for the other tiers; it never
// blocks on them. The queue refusing (full) is an error: the chunk would be
// in memory only, and a full queue is the signal to shed load.
func (s *storage) enqueue(ctx context.Context, c *kvcache.Chunk) error {
	if s.first != nil {
		if err := s.first.Put(ctx, c); err != nil {
			s.log.Debug("memory_put_failed", "chunk", c.Key.String(), "error", err)
		}
	}
	return s.wb.Offer(c)
}

// openTiers opens each tier of spec, fastest first, as store.Open does,
// keeping each tier's handle (the daemon writes new chunks to the memory
// tier at once).
func openTiers(ctx context.Context, spec store.Config, blob store.BlobOptions, log *slog.Logger) ([]store.BlobStore, error) {
	var tiers []store.BlobStore
	for i, tc := range spec.Tiers {
		var t store.BlobStore
		var err error
		switch tc.Kind {
		case store.KindMemory:
			t, err = store.NewMemory(store.MemoryOptions{BlobOptions: blob, Capacity: tc.Capacity, Policy: tc.Policy, Logger: log})
		case store.KindDisk:
			t, err = store.OpenDisk(ctx, store.DiskOptions{BlobOptions: blob, Dir: tc.Path, Capacity: tc.Capacity, PackBytes: tc.PackBytes, AdmitAfter: tc.AdmitAfter, Logger: log})
		case store.KindRedis, store.KindRedisCluster:
			ro := store.RedisOptions{BlobOptions: blob, Prefix: tc.Prefix, TTL: tc.TTL, MinTransfer: tc.MinTransfer, Logger: log}
			if tc.Kind == store.KindRedis {
				ro.URL = tc.URL
			} else {
				ro.ClusterURL = tc.URL
			}
			t, err = store.OpenRedis(ctx, ro)
		default:
			err = fmt.Errorf("tier kind %q: %w", tc.Kind, store.ErrConfig)
		}
		if err != nil {
			for _, x := range tiers {
				x.Close()
			}
			return nil, fmt.Errorf("tier %d (%s): %w", i+1, tc.Kind, err)
		}
		tiers = append(tiers, t)
	}
	return tiers, nil
}

func (s *storage) has(ctx context.Context, keys []matcher.ChunkKey) ([]bool, error) {
	return s.tiered.Has(ctx, keys)
}

func (s *storage) delete(ctx context.Context, keys []matcher.ChunkKey) error {
	return s.tiered.Delete(ctx, keys...)
}

// flush waits for the write-back queue; it reports chunks written and lost.
func (s *storage) flush(ctx context.Context) (flushResult, error) {
	rep, err := s.wb.Close(ctx)
	res := flushResult{written: int(rep.Written), failed: len(rep.Pending)}
	keys := make([]matcher.ChunkKey, len(rep.Failed))
	for i, f := range rep.Failed {
		keys[i] = f.Key
	}
	locs := s.tiered.Locate(keys, nil)
	for i, f := range rep.Failed {
		if s.durable(locs[i]) {
			res.partial++
			s.log.Warn("writeback_partial", "chunk", f.Key.String(), "bytes", f.Bytes, "error", f.Err)
			continue
		}
		res.failed++
		s.log.Error("writeback_failed", "chunk", f.Key.String(), "bytes", f.Bytes, "error", f.Err)
	}
	for _, k := range rep.Pending {
		s.log.Error("writeback_not_flushed", "chunk", k.String())
	}
	if err == nil && res.failed > 0 {
		err = fmt.Errorf("%d chunks could not be written", res.failed)
	}
	return res, err
}

// durable reports whether a tier that outlives the process holds a chunk
// (any tier but a memory tier on top).
func (s *storage) durable(l store.Location) bool {
	for i := range s.names {
		if i == 0 && s.first != nil {
			continue
		}
		if l.Has(i) {
			return true
		}
	}
	return s.first == nil && len(s.names) > 0 && l.First() >= 0
}

func (s *storage) queued() (int, int64) {
	st := s.wb.Stats()
	return st.QueuedItems, st.QueuedBytes
}

func (s *storage) rejects() uint64 { return uint64(max(s.wb.Stats().Rejected, 0)) }

func (s *storage) tierStats() []store.Stats {
	st := s.tiered.Stats()
	if len(st.Tiers) > 0 {
		return st.Tiers
	}
	return []store.Stats{st}
}

func (s *storage) status() []*api.Backend {
	var out []*api.Backend
	for _, t := range s.tierStats() {
		b := &api.Backend{Name: "tier_" + s.label(t.Tier), Kind: t.Tier, Up: t.Up}
		if !t.Up {
			b.Reason = "unreachable; serving from the other tiers"
		}
		out = append(out, b)
	}
	return out
}

func (s *storage) close(ctx context.Context) error {
	var errs []error
	if s.wb != nil {
		if _, err := s.wb.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.pf != nil {
		errs = append(errs, s.pf.Close())
	}
	errs = append(errs, s.tiered.Close())
	return errors.Join(errs...)
}

var (
	descTierHits   = prometheus.NewDesc("kvloom_store_tier_hits_total", "Chunk reads a storage tier answered.", []string{"tier"}, nil)
	descTierMisses = prometheus.NewDesc("kvloom_store_tier_misses_total", "Chunk reads a storage tier could not answer.", []string{"tier"}, nil)
	descTierBytes  = prometheus.NewDesc("kvloom_store_bytes_total", "Bytes a storage tier read or wrote, by direction.", []string{"tier", "direction"}, nil)
	descTierUsed   = prometheus.NewDesc("kvloom_store_tier_used_bytes", "Bytes stored in a tier.", []string{"tier"}, nil)
	descTierCap    = prometheus.NewDesc("kvloom_store_tier_capacity_bytes", "A tier's byte budget (0 when it does not know one).", []string{"tier"}, nil)
	descWBQueued   = prometheus.NewDesc("kvloom_writeback_queued_bytes", "Bytes accepted for write-back and not yet written.", nil, nil)
	descWBRejected = prometheus.NewDesc("kvloom_writeback_rejects_total", "Chunks the write-back queue refused (full).", nil, nil)
	descWBFailed   = prometheus.NewDesc("kvloom_writeback_failures_total", "Chunks accepted for write-back whose write failed.", nil, nil)
	descPFInflight = prometheus.NewDesc("kvloom_prefetch_inflight_bytes", "Bytes the prefetcher is reading now.", nil, nil)
	descPFShed     = prometheus.NewDesc("kvloom_prefetch_shed_total", "Chunks the prefetcher gave up for a deadline.", nil, nil)
)

// Describe implements prometheus.Collector.
func (s *storage) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTierHits, descTierMisses, descTierBytes, descTierUsed, descTierCap, descWBQueued, descWBRejected, descWBFailed, descPFInflight, descPFShed} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: the store's own counters at
// scrape time.
func (s *storage) Collect(ch chan<- prometheus.Metric) {
	for i, t := range s.tierStats() {
		name := "other"
		if i < len(s.names) {
			name = s.names[i]
		}
		ch <- prometheus.MustNewConstMetric(descTierHits, prometheus.CounterValue, float64(t.Hits), name)
		ch <- prometheus.MustNewConstMetric(descTierMisses, prometheus.CounterValue, float64(t.Misses), name)
		ch <- prometheus.MustNewConstMetric(descTierBytes, prometheus.CounterValue, float64(t.BytesRead), name, "read")
		ch <- prometheus.MustNewConstMetric(descTierBytes, prometheus.CounterValue, float64(t.BytesWrite), name, "write")
		ch <- prometheus.MustNewConstMetric(descTierUsed, prometheus.GaugeValue, float64(t.Bytes), name)
		ch <- prometheus.MustNewConstMetric(descTierCap, prometheus.GaugeValue, float64(t.Capacity), name)
	}
	wb := s.wb.Stats()
	ch <- prometheus.MustNewConstMetric(descWBQueued, prometheus.GaugeValue, float64(wb.QueuedBytes))
	ch <- prometheus.MustNewConstMetric(descWBRejected, prometheus.CounterValue, float64(wb.Rejected))
	ch <- prometheus.MustNewConstMetric(descWBFailed, prometheus.CounterValue, float64(wb.Failed))
	pf := s.pf.Stats()
	ch <- prometheus.MustNewConstMetric(descPFInflight, prometheus.GaugeValue, float64(pf.InFlight))
	ch <- prometheus.MustNewConstMetric(descPFShed, prometheus.CounterValue, float64(pf.Shed))
}

// peerStore is the prefetcher's source: the local tiers, then the peers
// that hold a chunk the local tiers miss.
type peerStore struct {
	store.Store
	peers *peers
}

// Get implements store.Store.
func (p *peerStore) Get(ctx context.Context, key matcher.ChunkKey, layers store.LayerRange) (kvcache.ChunkReader, error) {
	r, err := p.Store.Get(ctx, key, layers)
	if err == nil || !errors.Is(err, store.ErrNotFound) || p.peers == nil || ctx.Err() != nil {
		return r, err
	}
	for _, addr := range p.peers.d.owners.peersOf(key) {
		r, perr := p.peers.fetch(ctx, addr, key)
		if perr == nil {
			return r, nil
		}
		err = errors.Join(err, perr)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}
