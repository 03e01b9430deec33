package hostctl

import (
	"cmp"
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// control is the control loop: it decides which index entries belong in
// the accelerator's table and pushes the difference.
//
// An entry's benefit is its expected hits × the recompute time one hit
// saves. Expected hits come from two places: for position-independent
// chunks, the hot-substring sketch's decayed sightings of segments the chunk
// contains (so content that recurs in prompts ranks high before anyone has
// reused it); for prefix chains, the decayed count of prompts that reused
// the prefix. The recompute time saved is tokens ÷ the engine's prefill
// rate. Pinned entries rank above everything. The table holds the top
// entries up to min(device.table_entries, the device's capacity).
type control struct {
	d         *Daemon
	interval  time.Duration
	halfLife  time.Duration
	secPerTok float64
	kickc     chan struct{}

	mu       sync.Mutex
	reuse    map[matcher.ChunkKey]*reuseStat // prefix reuse, by the matched last block's key
	onDev    map[matcher.ChunkKey]nic.Entry  // what the table holds
	last     *api.ControlStats
	pushed   struct{ adds, removes, rejects uint64 }
	rounds   int64
	hotCount int
	pruneAt  matcher.ChunkKey

	// tried are the hot candidates materialize has tried (round goroutine
	// only); matChunks, matTokens and matFailed count its results.
	tried                           map[matcher.ChunkKey]bool
	matChunks, matTokens, matFailed uint64
}

// reuseStat is a prefix range's decayed reuse.
type reuseStat struct {
	salt   matcher.Salt
	tokens []matcher.Token
	hits   float64
	at     time.Time
}

// maxReuse bounds the prefix reuse table; the least reused go first.
const maxReuse = 1 << 16

func newControl(cfg *Config, d *Daemon) *control {
	rate := cfg.Control.PrefillTokensPerSec
	if rate == 0 {
		// Prefill costs about 2 FLOPs per parameter per token; the
		// preset with the most parameters sets the pace of the cluster's
		// serving GPUs (gpu.flops at 50% utilisation).
		rate = cfg.GPU.Flops * 0.5 / (2 * 7e9)
	}
	return &control{
		d: d, interval: cfg.Control.Interval, halfLife: cfg.Control.HalfLife, secPerTok: 1 / rate,
		kickc: make(chan struct{}, 1),
		reuse: map[matcher.ChunkKey]*reuseStat{}, onDev: map[matcher.ChunkKey]nic.Entry{},
		tried: map[matcher.ChunkKey]bool{},
	}
}

// hit records one reuse of a matched range.
func (c *control) hit(m matcher.Match, now time.Time) {
	if !m.Prefix {
		c.d.owners.hit(m.Chunk, now, c.halfLife)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.reuse[m.Chunk]; ok {
		r.hits = decay(r.hits, r.at, now, c.halfLife) + 1
		r.at = now
		return
	}
	if len(c.reuse) >= maxReuse {
		c.shrinkLocked(now)
	}
	c.reuse[m.Chunk] = &reuseStat{hits: 1, at: now}
}

// setPrefix remembers the tokens and salt of a prefix range, needed to push
// it (the match alone has its key).
func (c *control) setPrefix(key matcher.ChunkKey, salt matcher.Salt, toks []matcher.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.reuse[key]; ok && r.tokens == nil {
		r.salt, r.tokens = salt, slices.Clone(toks)
	}
}

func (c *control) shrinkLocked(now time.Time) {
	type kv struct {
		k matcher.ChunkKey
		v float64
	}
	all := make([]kv, 0, len(c.reuse))
	for k, r := range c.reuse {
		all = append(all, kv{k, decay(r.hits, r.at, now, c.halfLife)})
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(a.v, b.v) })
	for _, e := range all[:len(all)/4] {
		delete(c.reuse, e.k)
	}
}

// forget drops evicted entries from the loop's state.
func (c *control) forget(keys []matcher.ChunkKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		delete(c.reuse, k)
	}
	c.kick()
}

// kick asks for a round now.
func (c *control) kick() {
	select {
	case c.kickc <- struct{}{}:
	default:
	}
}

func (c *control) run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.kickc:
		}
		c.round(ctx)
	}
}

// pruneBatch is how many entries one round checks for chunks that no tier
// holds any more.
const pruneBatch = 256

// prune drops index entries none of whose chunks any tier (or peer) holds:
// the tiers evicted them, so they can only ever be misses, and keeping them
// would grow the index without bound. A round checks pruneBatch entries,
// resuming where the last one stopped.
func (c *control) prune(ctx context.Context) {
	d := c.d
	snap := d.owners.snapshot()
	if len(snap) == 0 {
		return
	}
	keys := make([]matcher.ChunkKey, 0, len(snap))
	for k := range snap {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b matcher.ChunkKey) int { return slices.Compare(a[:], b[:]) })
	start, _ := slices.BinarySearchFunc(keys, c.pruneAt, func(a, b matcher.ChunkKey) int { return slices.Compare(a[:], b[:]) })
	var gone []matcher.ChunkKey
	for i := range min(pruneBatch, len(keys)) {
		k := keys[(start+i)%len(keys)]
		e := snap[k]
		if e.pinned || len(e.peers) > 0 {
			continue
		}
		chunks := []matcher.ChunkKey{k}
		if e.prefix {
			var err error
			if chunks, err = matcher.PrefixKeys(e.salt, e.tokens, d.cfg.ChunkTokens, nil); err != nil {
				continue
			}
		}
		has, err := d.st.has(ctx, chunks)
		if err != nil {
			return // a tier that cannot answer now: prune nothing
		}
		if !slices.Contains(has, true) {
			gone = append(gone, k)
		}
		c.pruneAt = keys[(start+i+1)%len(keys)]
	}
	if len(gone) > 0 {
		d.unindex(gone)
		d.m.pruned.Add(float64(len(gone)))
	}
}

// candidate is an entry the loop considers for the table.
type candidate struct {
	entry   nic.Entry
	benefit float64
	pinned  bool
}

// round recomputes the hot set and pushes the difference to the device.
func (c *control) round(ctx context.Context) {
	d := c.d
	now := d.now()
	d.m.controlRounds.Inc()
	d.m.indexEntries.Set(float64(d.index.Len()))
	n, _ := d.st.queued()
	d.m.writebackQueued.Set(float64(n))
	if err := d.jnl.sync(); err != nil {
		d.log.Warn("journal_sync_failed", "error", err)
	}
	c.prune(ctx)
	hot := d.hot.Top(now, max(d.cfg.Control.HotCapacity/4, 64))
	d.m.hotCandidates.Set(float64(len(hot)))
	c.materialize(ctx, hot)
	cands := c.rank(now, hot)
	dev := d.dev.get()
	capacity := 0
	if dev != nil {
		capacity = min(d.cfg.Device.TableEntries, dev.Info().TableCapacity)
	}
	want := cands
	if len(want) > capacity {
		want = want[:capacity]
	}
	wantSet := make(map[matcher.ChunkKey]nic.Entry, len(want))
	for _, w := range want {
		wantSet[w.entry.Key] = w.entry
	}
	c.mu.Lock()
	var upd nic.IndexUpdate
	for k := range c.onDev {
		if _, ok := wantSet[k]; !ok {
			upd.Remove = append(upd.Remove, k)
		}
	}
	for _, w := range want {
		if _, ok := c.onDev[w.entry.Key]; !ok {
			upd.Add = append(upd.Add, w.entry)
		}
	}
	c.mu.Unlock()
	var lastErr string
	if dev != nil && (len(upd.Add) > 0 || len(upd.Remove) > 0) {
		err := dev.PushIndex(ctx, upd)
		var tf *nic.TableFullError
		switch {
		case err == nil:
		case errors.As(err, &tf):
			for _, k := range tf.Rejected {
				delete(wantSet, k)
			}
			for _, k := range tf.Evicted {
				delete(wantSet, k)
			}
			c.mu.Lock()
			c.pushed.rejects += uint64(len(tf.Rejected))
			c.mu.Unlock()
			d.m.controlPushes.WithLabelValues("reject").Add(float64(len(tf.Rejected)))
		default:
			lastErr = err.Error()
			d.dev.fault(err)
			d.log.Warn("control_push_failed", "adds", len(upd.Add), "removes", len(upd.Remove), "error", err)
			wantSet = nil
		}
		if wantSet != nil {
			c.mu.Lock()
			c.onDev = wantSet
			c.pushed.adds += uint64(len(upd.Add))
			c.pushed.removes += uint64(len(upd.Remove))
			c.mu.Unlock()
			d.m.controlPushes.WithLabelValues("add").Add(float64(len(upd.Add)))
			d.m.controlPushes.WithLabelValues("remove").Add(float64(len(upd.Remove)))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rounds++
	report := min(len(cands), d.cfg.Control.Report)
	top := make([]*api.HotEntry, 0, report)
	for _, cd := range cands[:report] {
		_, on := c.onDev[cd.entry.Key]
		b := cd.benefit
		if math.IsInf(b, 1) {
			b = math.MaxFloat64
		}
		top = append(top, &api.HotEntry{Chunk: cd.entry.Key.String(), Tokens: int32(len(cd.entry.Tokens)), Benefit: b,
			OnDevice: on, Pinned: cd.pinned, Prefix: cd.entry.Prefix})
	}
	c.last = &api.ControlStats{
		Rounds: c.rounds, LastRoundUnixNs: now.UnixNano(), TableCapacity: int32(capacity), TableEntries: int32(len(c.onDev)),
		PushedAdds: c.pushed.adds, PushedRemoves: c.pushed.removes, Rejected: c.pushed.rejects, Top: top,
		HotCandidates: int32(c.hotCount), LastError: lastErr,
		Materialized: c.matChunks, MaterializedTokens: c.matTokens, MaterializeFailures: c.matFailed,
	}
}

// rank scores every entry worth a place in the table, best first; hot
// are the sketch's candidates this round.
func (c *control) rank(now time.Time, hot []matcher.Candidate) []candidate {
	d := c.d
	byKey := map[matcher.ChunkKey]*candidate{}
	// Chunks: the sketch's hot segments, found in the index.
	for _, h := range hot {
		ms, err := d.index.FindAll(h.Salt, h.Tokens)
		if err != nil {
			continue
		}
		for _, m := range ms {
			if m.Prefix {
				continue
			}
			e, ok := d.index.Get(m.Chunk)
			if !ok {
				continue
			}
			cd := byKey[m.Chunk]
			if cd == nil {
				cd = &candidate{entry: nic.Entry{Salt: e.Salt, Key: m.Chunk, Tokens: e.Tokens}}
				byKey[m.Chunk] = cd
			}
			cd.benefit += h.Count * float64(m.Len) * c.secPerTok
		}
	}
	// Chunks reused by Prepare, and pinned entries.
	for k, info := range d.owners.snapshot() {
		cd := byKey[k]
		if info.pinned || (!info.prefix && info.hits > 0) {
			if cd == nil {
				cd = &candidate{entry: nic.Entry{Salt: info.salt, Key: k, Tokens: info.tokens, Prefix: info.prefix}}
				byKey[k] = cd
			}
			if !info.prefix {
				cd.benefit += decay(info.hits, info.hitAt, now, c.halfLife) * float64(len(info.tokens)) * c.secPerTok
			}
			if info.pinned {
				cd.pinned = true
			}
		}
	}
	// Prefixes reused by Prepare.
	c.mu.Lock()
	c.hotCount = len(hot)
	for k, r := range c.reuse {
		if r.tokens == nil {
			continue
		}
		cd := byKey[k]
		if cd == nil {
			cd = &candidate{entry: nic.Entry{Salt: r.salt, Key: k, Tokens: r.tokens, Prefix: true}}
			byKey[k] = cd
		}
		cd.benefit += decay(r.hits, r.at, now, c.halfLife) * float64(len(r.tokens)) * c.secPerTok
	}
	c.mu.Unlock()
	out := make([]candidate, 0, len(byKey))
	for _, cd := range byKey {
		if cd.pinned {
			cd.benefit = math.Inf(1)
		}
		if cd.benefit <= 0 {
			continue
		}
		cd.entry.Rank = min(cd.benefit, math.MaxFloat64)
		out = append(out, *cd)
	}
	slices.SortFunc(out, func(a, b candidate) int {
		if c := cmp.Compare(b.benefit, a.benefit); c != 0 {
			return c
		}
		return slices.Compare(a.entry.Key[:], b.entry.Key[:])
	})
	return out
}

// stats returns the last round's decisions.
func (c *control) stats() *api.ControlStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return &api.ControlStats{}
	}
	return proto.Clone(c.last).(*api.ControlStats)
}
