package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store/evict"
)

// Redis key layout (docs/storage.md), with P the prefix and H the chunk
// key in hex. The hash tag {H} puts all of a chunk's keys in one Cluster
// slot, so one chunk is one node's pipeline and one MULTI/EXEC:
//
//	P:{H}:m   metadata: "KVR1", u32 LE minimum transfer, then the blob's
//	          header bytes (header, tokens, layer table, header CRC)
//	P:{H}:0…  layer groups: the blob's bytes from the first layer of the
//	          group to the end of its last, consecutive layers merged until
//	          the group holds at least the minimum transfer (256 KiB by
//	          default), so no read is smaller than that where the chunk is
//	          larger; a chunk's last short group joins the one before.
const (
	redisMetaMagic = "KVR1"
	// DefaultMinTransfer is RedisOptions.MinTransfer's default: RDMA and
	// TCP efficiency collapse below about 256 KiB per transfer.
	DefaultMinTransfer = 256 << 10
	// DefaultKnownKeys is RedisOptions.KnownKeys' default.
	DefaultKnownKeys = 1 << 20
)

// RedisOptions configure a Redis tier. One of URL and ClusterURL is
// required; the zero value of every other field selects its default.
type RedisOptions struct {
	BlobOptions
	// URL is a single server: redis://[user:pass@]host:port[/db] (go-redis
	// ParseURL syntax, its query options included).
	URL string
	// ClusterURL is a Redis Cluster: redis://host:port?addr=host2:port2&…
	// (go-redis ParseClusterURL syntax), seeds from which the client learns
	// the slot map.
	ClusterURL string
	// Prefix starts every key; empty means "kvloom".
	Prefix string
	// TTL, when positive, expires a chunk's keys that long after the Put.
	TTL time.Duration
	// MinTransfer is the smallest group of layers read or written as one
	// value (where the chunk is that large). Zero means DefaultMinTransfer.
	MinTransfer int64
	// KnownKeys bounds the local index of keys known to be in Redis (the
	// answer to "where is this chunk" without a round trip). Zero means
	// DefaultKnownKeys.
	KnownKeys int
	// Logger receives connection state changes; nil discards.
	Logger *slog.Logger
}

// Redis is the Redis tier, over one server or a Redis Cluster.
type Redis struct {
	cfg    blobConfig
	client redis.UniversalClient
	name   string
	prefix string
	ttl    time.Duration
	minT   int64
	log    *slog.Logger

	known struct {
		sync.Mutex
		lru evict.Policy[matcher.ChunkKey]
		// first is the length of the first layer group of known chunks
		// whose metadata the tier wrote or read, so that opening them
		// can read that group into a pooled buffer (GetMany).
		first   map[matcher.ChunkKey]int64
		evicted []matcher.ChunkKey
	}
	up     atomic.Bool
	closed atomic.Bool
	st     tierCounters
	// pool holds the buffers layer groups are read into (GetToBuffer:
	// straight from the socket, no allocation per read).
	pool bufPool
}

var (
	_ BlobStore   = (*Redis)(nil)
	_ BatchGetter = (*Redis)(nil)
)

// OpenRedis connects the Redis tier. A server that does not answer is not
// an error: the tier starts down (Stats().Up false, logged), its calls fail
// fast with ErrUnavailable, and go-redis reconnects when it comes back.
func OpenRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	cfg, err := opts.BlobOptions.resolve()
	if err != nil {
		return nil, fmt.Errorf("redis tier: %w", err)
	}
	r := &Redis{cfg: cfg, prefix: opts.Prefix, ttl: opts.TTL, minT: opts.MinTransfer, log: opts.Logger}
	if r.prefix == "" {
		r.prefix = "kvloom"
	}
	if r.minT == 0 {
		r.minT = DefaultMinTransfer
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	var bad []string
	if (opts.URL == "") == (opts.ClusterURL == "") {
		bad = append(bad, "exactly one of URL and ClusterURL must be set")
	}
	if r.minT < 0 || r.minT > 1<<30 {
		bad = append(bad, fmt.Sprintf("min transfer %d bytes, want 0..1GiB", r.minT))
	}
	if opts.TTL < 0 {
		bad = append(bad, fmt.Sprintf("ttl %v, want >= 0", opts.TTL))
	}
	if strings.ContainsAny(r.prefix, "{} ") {
		bad = append(bad, fmt.Sprintf("prefix %q may not hold braces or spaces", r.prefix))
	}
	if opts.KnownKeys < 0 {
		bad = append(bad, fmt.Sprintf("known keys %d, want >= 0", opts.KnownKeys))
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("redis tier: %s: %w", strings.Join(bad, "; "), ErrConfig)
	}
	known := opts.KnownKeys
	if known == 0 {
		known = DefaultKnownKeys
	}
	r.known.lru = evict.NewLRU[matcher.ChunkKey](int64(known))
	r.known.first = make(map[matcher.ChunkKey]int64)
	if opts.URL != "" {
		o, err := redis.ParseURL(opts.URL)
		if err != nil {
			return nil, fmt.Errorf("redis tier %s: %w: %w", redactURL(opts.URL), ErrConfig, err)
		}
		tune(&o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialTimeout, &o.ReadBufferSize, &o.DialerRetries)
		r.client = redis.NewClient(o)
		r.name = "redis://" + o.Addr
	} else {
		o, err := redis.ParseClusterURL(opts.ClusterURL)
		if err != nil {
			return nil, fmt.Errorf("redis cluster %s: %w: %w", redactURL(opts.ClusterURL), ErrConfig, err)
		}
		tune(&o.ContextTimeoutEnabled, &o.MaxRetries, &o.DialTimeout, &o.ReadBufferSize, &o.DialerRetries)
		r.client = redis.NewClusterClient(o)
		r.name = "redis-cluster://" + strings.Join(o.Addrs, ",")
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := r.client.Ping(pctx).Err(); err != nil {
		r.log.Warn("redis_down", "tier", r.name, "err", err)
	} else {
		r.up.Store(true)
	}
	return r, nil
}

// tune sets the client options kvloom relies on: deadlines from the
// context (a prefetch deadline must bound every read), one retry, a short
// dial timeout tried once (a dead server must fail fast: the data is a
// cache) and read buffers sized for large values.
func tune(ctxTimeout *bool, retries *int, dial *time.Duration, readBuf *int, dialRetries *int) {
	if *dialRetries == 0 {
		*dialRetries = 1
	}
	*ctxTimeout = true
	if *retries == 0 {
		*retries = 1
	}
	if *dial == 0 {
		*dial = time.Second
	}
	if *readBuf == 0 {
		*readBuf = 256 << 10
	}
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

func (r *Redis) metaKey(k matcher.ChunkKey) string { return r.prefix + ":{" + k.String() + "}:m" }
func (r *Redis) groupKey(k matcher.ChunkKey, g int) string {
	return fmt.Sprintf("%s:{%s}:%d", r.prefix, k.String(), g)
}

// layerGroup is a run of consecutive layers stored as one value.
type layerGroup struct {
	first, end int   // layers [first, end)
	off, len   int64 // bytes of the blob the value holds
}

// groupLayers splits a blob's layers into groups of at least minT bytes.
func groupLayers(h *kvcache.Header, minT int64) []layerGroup {
	var gs []layerGroup
	start := 0
	for l := range h.Table {
		span := h.Table[l].Offset + h.Table[l].Length - h.Table[start].Offset
		if span >= minT {
			gs = append(gs, layerGroup{first: start, end: l + 1})
			start = l + 1
		}
	}
	if start < len(h.Table) {
		if len(gs) > 0 {
			gs[len(gs)-1].end = len(h.Table)
		} else {
			gs = append(gs, layerGroup{first: 0, end: len(h.Table)})
		}
	}
	for i := range gs {
		g := &gs[i]
		g.off = h.Table[g.first].Offset
		last := h.Table[g.end-1]
		g.len = last.Offset + last.Length - g.off
	}
	return gs
}

func (r *Redis) noteKnown(k matcher.ChunkKey, present bool) {
	r.known.Lock()
	defer r.known.Unlock()
	if present {
		if !r.known.lru.Touch(k) {
			_, r.known.evicted = r.known.lru.Insert(k, 1, r.known.evicted[:0])
			for _, e := range r.known.evicted {
				delete(r.known.first, e)
			}
		}
	} else {
		r.known.lru.Remove(k)
		delete(r.known.first, k)
	}
}

// noteFirst records the length of known chunk k's first layer group.
func (r *Redis) noteFirst(k matcher.ChunkKey, n int64) {
	r.known.Lock()
	defer r.known.Unlock()
	if r.known.lru.Contains(k) {
		r.known.first[k] = n
	}
}

// forgetFirst drops the recorded length of chunk k's first layer group.
func (r *Redis) forgetFirst(k matcher.ChunkKey) {
	r.known.Lock()
	defer r.known.Unlock()
	delete(r.known.first, k)
}

// firstLen is the recorded length of chunk k's first layer group.
func (r *Redis) firstLen(k matcher.ChunkKey) (int64, bool) {
	r.known.Lock()
	defer r.known.Unlock()
	n, ok := r.known.first[k]
	return n, ok
}

// contains reports whether k is known to be in Redis, from the local
// index only (no round trip; may be stale if Redis evicted it).
func (r *Redis) contains(k matcher.ChunkKey) bool {
	r.known.Lock()
	defer r.known.Unlock()
	return r.known.lru.Contains(k)
}

// netErr classifies a go-redis error: redis.Nil is a miss, anything else
// marks the tier down.
func (r *Redis) netErr(op string, k matcher.ChunkKey, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis tier %s %v: %w", op, k, err)
	}
	r.st.errors.Add(1)
	if r.up.Swap(false) {
		r.log.Warn("redis_down", "tier", r.name, "err", err)
	}
	return fmt.Errorf("redis tier %s %v: %w: %w", op, k, ErrUnavailable, err)
}

func (r *Redis) markUp() {
	if !r.up.Swap(true) {
		r.log.Info("redis_up", "tier", r.name)
	}
}

// Get implements Store: one round trip brings the metadata and, when the
// range starts at layer 0, the first layer group; the other groups are read
// when their layers are asked for.
func (r *Redis) Get(ctx context.Context, key matcher.ChunkKey, layers LayerRange) (kvcache.ChunkReader, error) {
	var rd kvcache.ChunkReader
	var err error
	r.GetMany(ctx, []matcher.ChunkKey{key}, layers, func(_ int, x kvcache.ChunkReader, e error) { rd, err = x, e })
	return rd, err
}

// GetMany implements BatchGetter: the metadata and (when the range starts
// at layer 0) the first layer group of every key go in one pipeline, so
// opening a prompt's Redis chunks costs one round trip (on a Cluster, one
// per node, sent to the nodes concurrently) instead of one per chunk.
// Every key is answered as Get would answer it on its own: a key's failure
// (a miss, a corrupt value, a node that is down) is that key's alone.
//
// The first group of a chunk whose group sizes the tier knows (it wrote
// or read the chunk's metadata before) is read straight into a pooled
// buffer (GetToBuffer), like every later group, rather than into a fresh
// allocation: on the first layer's critical path that saves zeroing and
// garbage. A value longer than its buffer (the chunk was rewritten by a
// tier with a larger MinTransfer, or is corrupt) makes go-redis abandon
// the rest of the pipeline's replies; the batch is then sent again with
// plain reads, which sort the two cases out (see retryPlain).
func (r *Redis) GetMany(ctx context.Context, keys []matcher.ChunkKey, layers LayerRange, ready func(i int, r kvcache.ChunkReader, err error)) {
	if r.closed.Load() {
		for i, k := range keys {
			ready(i, nil, fmt.Errorf("redis tier get %v: %w", k, ErrClosed))
		}
		return
	}
	if len(keys) > 0 && !r.getMany(ctx, keys, layers, true, ready) {
		r.getMany(ctx, keys, layers, false, ready)
	}
}

// getMany is one attempt of GetMany. With pooled it reads the first groups
// of known size into pooled buffers; it returns false, having answered
// nothing, when one of them did not fit.
func (r *Redis) getMany(ctx context.Context, keys []matcher.ChunkKey, layers LayerRange, pooled bool, ready func(i int, r kvcache.ChunkReader, err error)) bool {
	withFirst := layers.IsAll() || layers.Start == 0
	pipe := r.client.Pipeline()
	metas := make([]*redis.StringCmd, len(keys))
	firsts := make([]firstGroup, len(keys))
	for i, k := range keys {
		metas[i] = pipe.Get(ctx, r.metaKey(k))
		if !withFirst {
			continue
		}
		n, ok := r.firstLen(k)
		if !ok || !pooled {
			firsts[i].plain = pipe.Get(ctx, r.groupKey(k, 0))
			continue
		}
		buf := r.pool.get(int(n))
		if cap(buf) >= len(buf)+2 {
			buf = buf[:len(buf)+2] // the value and its CRLF in one read
		}
		firsts[i].buf = buf
		firsts[i].zc = pipe.GetToBuffer(ctx, r.groupKey(k, 0), buf)
	}
	// Errors are classified per command below: in a batch, one key's
	// miss or one node's failure must not fail the others.
	_, _ = pipe.Exec(ctx)
	for i := range firsts {
		if g := &firsts[i]; g.zc != nil && retryPlain(g.zc.Err()) {
			for j, g := range firsts {
				if g.buf != nil {
					r.pool.put(g.buf)
					r.forgetFirst(keys[j])
				}
			}
			return false
		}
	}
	for i, k := range keys {
		var g0 *firstGroup
		if withFirst {
			g0 = &firsts[i]
		}
		rd, err := r.opened(ctx, k, layers, metas[i], g0)
		ready(i, rd, err)
	}
	return true
}

// firstGroup is the read of a chunk's first layer group that came with
// its metadata: into a fresh value (plain) or into buf (zc).
type firstGroup struct {
	plain *redis.StringCmd
	zc    *redis.ZeroCopyStringCmd
	buf   []byte
}

// retryPlain reports whether a pooled first-group read failed in a way a
// plain read handles: the value did not fit, or the server answered with
// an error a plain read is retried on (a Cluster's MOVED or ASK while
// slots move; GetToBuffer is never retried, since it writes into a
// caller's buffer).
func retryPlain(err error) bool {
	var rerr redis.Error
	return errShortBuffer(err) || (errors.As(err, &rerr) && !errors.Is(err, redis.Nil))
}

// errShortBuffer reports go-redis' "buffer too small" from GetToBuffer
// (it has no sentinel): the value is longer than the buffer, go-redis has
// drained it.
func errShortBuffer(err error) bool {
	return err != nil && strings.Contains(err.Error(), "buffer too small")
}

// opened turns the replies for one key's metadata and first group (g0,
// nil when not asked for) into a reader.
func (r *Redis) opened(ctx context.Context, key matcher.ChunkKey, layers LayerRange, metaCmd *redis.StringCmd, g0 *firstGroup) (kvcache.ChunkReader, error) {
	var pooled []byte // g0's buffer, until a reader owns it
	if g0 != nil && g0.zc != nil {
		pooled = g0.buf
		defer func() {
			if pooled != nil {
				r.pool.put(pooled)
			}
		}()
	}
	metaB, err := metaCmd.Bytes()
	if errors.Is(err, redis.Nil) {
		r.markUp()
		r.st.misses.Add(1)
		r.noteKnown(key, false)
		return nil, fmt.Errorf("redis tier get %v: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, r.netErr("get", key, err)
	}
	r.markUp()
	h, minT, err := r.parseMeta(metaB, key)
	if err != nil {
		r.st.misses.Add(1)
		r.noteKnown(key, false)
		if !errors.Is(err, kvcache.ErrModelMismatch) && !errors.Is(err, kvcache.ErrSaltMismatch) {
			r.st.corrupt.Add(1)
			r.dropChunk(ctx, key, nil)
		}
		return nil, fmt.Errorf("redis tier get %v: %w: %w", key, ErrNotFound, err)
	}
	rng, err := resolveRange(layers, h.Shape.Layers)
	if err != nil {
		return nil, fmt.Errorf("redis tier get %v: %w", key, err)
	}
	codec, err := r.cfg.codecs.Lookup(h.Codec)
	if err != nil {
		return nil, fmt.Errorf("redis tier get %v: %w: %w", key, ErrNotFound, err)
	}
	groups := groupLayers(h, minT)
	rd := &redisReader{r: r, hdr: h, metaB: metaB[len(redisMetaMagic)+4:], codec: codec, rng: rng, groups: groups,
		groupOf: make([]int, h.Shape.Layers), gslots: make([]redisGroup, len(groups)), decoded: make([][]byte, h.Shape.Layers)}
	for i, g := range groups {
		for l := g.first; l < g.end; l++ {
			rd.groupOf[l] = i
		}
	}
	switch {
	case g0 == nil:
	case g0.plain != nil:
		b, err := g0.plain.Bytes()
		if err := rd.setGroup(ctx, 0, b, err); err != nil {
			r.st.misses.Add(1)
			return nil, fmt.Errorf("redis tier get %v: %w", key, err)
		}
	default:
		n, err := g0.zc.Result()
		var b []byte
		if err == nil {
			b = g0.buf[:min(max(n, 0), len(g0.buf))]
		}
		if err := rd.setGroup(ctx, 0, b, err); err != nil {
			r.st.misses.Add(1)
			return nil, fmt.Errorf("redis tier get %v: %w", key, err)
		}
		rd.gslots[0].pooled, pooled = true, nil
	}
	r.st.hits.Add(1)
	r.noteKnown(key, true)
	r.noteFirst(key, groups[0].len)
	return rd, nil
}

// parseMeta checks a metadata value.
func (r *Redis) parseMeta(b []byte, key matcher.ChunkKey) (*kvcache.Header, int64, error) {
	if len(b) < len(redisMetaMagic)+4 || !bytes.Equal(b[:4], []byte(redisMetaMagic)) {
		return nil, 0, fmt.Errorf("metadata value of %d bytes does not start with %q: %w", len(b), redisMetaMagic, ErrCorrupt)
	}
	minT := int64(binary.LittleEndian.Uint32(b[4:]))
	h, err := kvcache.ParseHeader(b[8:], r.cfg.decodeOptions(kvcache.AllLayers))
	if err != nil {
		return nil, 0, err
	}
	if len(b)-8 != h.MetaSize {
		return nil, 0, fmt.Errorf("metadata holds %d header bytes, header says %d: %w", len(b)-8, h.MetaSize, ErrCorrupt)
	}
	if err := checkKey(h, key); err != nil {
		return nil, 0, err
	}
	return h, minT, nil
}

// dropChunk deletes what is left of a chunk whose keys Redis evicted in
// part or that failed verification (best effort).
func (r *Redis) dropChunk(ctx context.Context, key matcher.ChunkKey, groups []layerGroup) {
	keys := []string{r.metaKey(key)}
	for g := range groups {
		keys = append(keys, r.groupKey(key, g))
	}
	if len(groups) == 0 {
		keys = append(keys, r.groupKey(key, 0))
	}
	// Keys of one chunk share a slot, so one DEL works on a Cluster too.
	if err := r.client.Del(context.WithoutCancel(ctx), keys...).Err(); err != nil {
		r.log.Debug("redis_drop_failed", "err", err)
	}
}

// Put implements Store.
func (r *Redis) Put(ctx context.Context, c *kvcache.Chunk) error {
	blob, h, err := r.cfg.encode(c)
	if err != nil {
		r.st.putErrors.Add(1)
		return fmt.Errorf("redis tier: %w", err)
	}
	return r.putVerified(ctx, []verified{{blob: blob, hdr: h}})
}

// PutBlobs implements BlobStore: every blob's keys go in one pipeline,
// each chunk's groups first and its metadata last. A chunk's keys share a
// slot, hence a node and a connection, which executes them in order: a
// reader that finds the metadata finds the groups. A write cut short
// leaves groups without metadata, which no reader uses and Redis evicts.
func (r *Redis) PutBlobs(ctx context.Context, blobs [][]byte) error {
	items, errs := r.cfg.verifyAll("redis tier", blobs, &r.st.putErrors)
	if err := r.putVerified(ctx, items); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// putVerified writes blobs whose checksums are known good (Put, PutBlobs,
// promotions, write-back).
func (r *Redis) putVerified(ctx context.Context, items []verified) error {
	if r.closed.Load() {
		return fmt.Errorf("redis tier put: %w", ErrClosed)
	}
	if len(items) == 0 {
		return nil
	}
	first := make([]int64, len(items)) // each chunk's first group length
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, it := range items {
			h := it.hdr
			groups := groupLayers(h, r.minT)
			for g, lg := range groups {
				p.Set(ctx, r.groupKey(h.Key, g), it.blob[lg.off:lg.off+lg.len], r.ttl)
			}
			first[i] = groups[0].len
			m := make([]byte, 0, 8+h.MetaSize)
			m = append(m, redisMetaMagic...)
			m = binary.LittleEndian.AppendUint32(m, uint32(r.minT))
			m = append(m, blobMeta(it.blob, h)...)
			p.Set(ctx, r.metaKey(h.Key), m, r.ttl)
		}
		return nil
	})
	if err != nil {
		r.st.putErrors.Add(int64(len(items)))
		if strings.Contains(err.Error(), "OOM") {
			return fmt.Errorf("redis tier put %d chunk(s): %w: %w (maxmemory reached with a noeviction policy; see docs/storage.md)", len(items), ErrFull, err)
		}
		var k matcher.ChunkKey
		if len(items) == 1 {
			k = items[0].hdr.Key
		}
		return r.netErr("put", k, err)
	}
	r.markUp()
	for i, it := range items {
		r.st.puts.Add(1)
		r.st.bytesWrite.Add(it.hdr.Size)
		r.noteKnown(it.hdr.Key, true)
		r.noteFirst(it.hdr.Key, first[i])
	}
	return nil
}

// Has implements Store with one pipelined EXISTS per key.
func (r *Redis) Has(ctx context.Context, keys []matcher.ChunkKey) ([]bool, error) {
	out := make([]bool, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Exists(ctx, r.metaKey(k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, r.netErr("has", keys[0], err)
	}
	r.markUp()
	for i, c := range cmds {
		out[i] = c.Val() == 1
		r.noteKnown(keys[i], out[i])
	}
	return out, nil
}

// Delete implements Store: the metadata is read to learn each chunk's
// groups, then all keys are deleted.
func (r *Redis) Delete(ctx context.Context, keys ...matcher.ChunkKey) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := r.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Get(ctx, r.metaKey(k))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return r.netErr("delete", keys[0], err)
	}
	del := r.client.Pipeline()
	for i, k := range keys {
		r.noteKnown(k, false)
		b, err := cmds[i].Bytes()
		if err != nil {
			continue
		}
		names := []string{r.metaKey(k), r.groupKey(k, 0)}
		if h, minT, err := r.parseMeta(b, k); err == nil {
			for g := 1; g < len(groupLayers(h, minT)); g++ {
				names = append(names, r.groupKey(k, g))
			}
		}
		del.Del(ctx, names...)
		r.st.deletes.Add(1)
	}
	if _, err := del.Exec(ctx); err != nil {
		return r.netErr("delete", keys[0], err)
	}
	return nil
}

// Stats implements Store. Entries counts the keys known locally.
func (r *Redis) Stats() Stats {
	r.known.Lock()
	n := r.known.lru.Len()
	r.known.Unlock()
	return Stats{
		Tier: r.name, Up: r.up.Load(), Entries: int64(n),
		Hits: r.st.hits.Load(), Misses: r.st.misses.Load(), Puts: r.st.puts.Load(), PutErrors: r.st.putErrors.Load(),
		Deletes: r.st.deletes.Load(), Corrupt: r.st.corrupt.Load(), Errors: r.st.errors.Load(),
		BytesRead: r.st.bytesRead.Load(), BytesWrite: r.st.bytesWrite.Load(),
	}
}

// Close implements Store.
func (r *Redis) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	return r.client.Close()
}

// redisReader reads a chunk's layer groups on demand. Groups after the
// first are read into pooled buffers, which go back to the pool on Close:
// like the disk tier's, its layers are valid until the reader is closed.
type redisReader struct {
	r       *Redis
	hdr     *kvcache.Header
	metaB   []byte
	codec   kvcache.Codec
	rng     LayerRange
	groups  []layerGroup
	groupOf []int
	gslots  []redisGroup

	closeMu sync.RWMutex // Layer holds it shared, Close exclusively
	closed  bool

	dmu     sync.Mutex
	decoded [][]byte
}

type redisGroup struct {
	mu     sync.Mutex
	data   []byte
	pooled bool // data came from Redis.pool
}

func (rd *redisReader) Info() *kvcache.ChunkInfo      { return &rd.hdr.ChunkInfo }
func (rd *redisReader) Available() kvcache.LayerRange { return rd.rng }

// Header returns the chunk's blob header.
func (rd *redisReader) Header() *kvcache.Header { return rd.hdr }

// setGroup checks a fetched group value and keeps it.
func (rd *redisReader) setGroup(ctx context.Context, g int, b []byte, err error) error {
	key := rd.hdr.Key
	if errors.Is(err, redis.Nil) {
		// Redis evicted part of the chunk (allkeys-* policies evict keys
		// one by one): what is left is useless.
		rd.r.noteKnown(key, false)
		rd.r.dropChunk(ctx, key, rd.groups)
		return fmt.Errorf("layer group %d missing: %w", g, ErrNotFound)
	}
	if err != nil {
		return rd.r.netErr("get group", key, err)
	}
	if want := rd.groups[g].len; int64(len(b)) != want {
		return rd.corrupt(ctx, fmt.Errorf("layer group %d holds %d bytes, header says %d: %w: %w", g, len(b), want, ErrNotFound, ErrCorrupt))
	}
	rd.gslots[g].data = b
	return nil
}

// corrupt counts and forgets a chunk whose stored values failed
// verification, deletes what is left of it, and returns err.
func (rd *redisReader) corrupt(ctx context.Context, err error) error {
	rd.r.st.corrupt.Add(1)
	rd.r.noteKnown(rd.hdr.Key, false)
	rd.r.dropChunk(ctx, rd.hdr.Key, rd.groups)
	return err
}

// readGroup reads group g into a pooled buffer (s.mu held).
func (rd *redisReader) readGroup(ctx context.Context, g int) error {
	want := rd.groups[g].len
	buf := rd.r.pool.get(int(want))
	if cap(buf) >= len(buf)+2 {
		// Two spare bytes let go-redis take the value and its CRLF in
		// one read, straight from the socket into buf.
		buf = buf[:len(buf)+2]
	}
	n, err := rd.r.client.GetToBuffer(ctx, rd.r.groupKey(rd.hdr.Key, g), buf).Result()
	if errShortBuffer(err) {
		// Longer than the header says (go-redis drained the value).
		rd.r.pool.put(buf)
		return rd.corrupt(ctx, fmt.Errorf("layer group %d holds more than the %d bytes the header says: %w: %w", g, want, ErrNotFound, ErrCorrupt))
	}
	if err != nil {
		rd.r.pool.put(buf)
		return rd.setGroup(ctx, g, nil, err)
	}
	if err := rd.setGroup(ctx, g, buf[:min(max(n, 0), len(buf))], nil); err != nil {
		rd.r.pool.put(buf)
		return err
	}
	rd.gslots[g].pooled = true
	return nil
}

func (rd *redisReader) Layer(ctx context.Context, l int) ([]byte, error) {
	key := rd.hdr.Key
	if !rd.rng.Contains(l) {
		return nil, fmt.Errorf("redis reader %v: layer %d not in [%d, %d): %w", key, l, rd.rng.Start, rd.rng.End, kvcache.ErrLayerRange)
	}
	rd.closeMu.RLock()
	defer rd.closeMu.RUnlock()
	if rd.closed {
		return nil, fmt.Errorf("redis reader %v: layer %d: %w", key, l, ErrClosed)
	}
	gi := rd.groupOf[l]
	s := &rd.gslots[gi]
	s.mu.Lock()
	if s.data == nil {
		if err := rd.readGroup(ctx, gi); err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("redis reader %v: layer %d: %w", key, l, err)
		}
		rd.r.markUp()
	}
	data := s.data
	s.mu.Unlock()

	rd.dmu.Lock()
	d := rd.decoded[l]
	rd.dmu.Unlock()
	if d != nil {
		return d, nil
	}
	// Checked outside dmu, so that layers of one chunk verify in parallel.
	e := rd.hdr.Table[l]
	off := e.Offset - rd.groups[gi].off
	payload := data[off : off+e.Length : off+e.Length]
	d, err := rd.hdr.DecodeLayer(rd.codec, l, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("redis reader %v: layer %d: %w", key, l,
			rd.corrupt(ctx, fmt.Errorf("%w: %w: %w", ErrNotFound, ErrCorrupt, err)))
	}
	rd.dmu.Lock()
	defer rd.dmu.Unlock()
	if prev := rd.decoded[l]; prev != nil {
		return prev, nil // verified meanwhile by another caller
	}
	rd.decoded[l] = d
	rd.r.st.bytesRead.Add(int64(len(d)))
	return d, nil
}

func (rd *redisReader) meta() []byte { return rd.metaB }

func (rd *redisReader) encoded(l int) []byte {
	gi := rd.groupOf[l]
	s := &rd.gslots[gi]
	s.mu.Lock()
	data := s.data
	s.mu.Unlock()
	if data == nil {
		return nil
	}
	e := rd.hdr.Table[l]
	off := e.Offset - rd.groups[gi].off
	return data[off : off+e.Length]
}

// Close returns the reader's buffers to the pool, after any Layer call in
// progress has ended (reads honour their context).
func (rd *redisReader) Close() error {
	rd.closeMu.Lock()
	defer rd.closeMu.Unlock()
	if rd.closed {
		return nil
	}
	rd.closed = true
	for i := range rd.gslots {
		s := &rd.gslots[i]
		if s.pooled {
			rd.r.pool.put(s.data)
		}
		s.data, s.pooled = nil, false
	}
	clear(rd.decoded)
	return nil
}
