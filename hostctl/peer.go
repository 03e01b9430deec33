package hostctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store"
)

// directoryKey is the Redis hash of live daemons: address → last heartbeat
// (Unix milliseconds).
const directoryKey = "kvloom:daemons"

// peers is the peer tier: other daemons whose chunks this one can load,
// found in a static list or the shared Redis directory, and whose index
// entries it pulls so prompts match their content.
type peers struct {
	cfg  PeersConfig
	self string
	d    *Daemon
	log  *slog.Logger
	m    *metrics

	rdb   *redis.Client
	creds credentials.TransportCredentials

	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	cursor  map[string]syncCursor
	known   []string // peers found last round
	redisUp bool
	reason  string
}

type syncCursor struct{ epoch, next uint64 }

func newPeers(cfg *Config, d *Daemon, log *slog.Logger, m *metrics) *peers {
	p := &peers{cfg: cfg.Peers, d: d, log: log, m: m, conns: map[string]*grpc.ClientConn{}, cursor: map[string]syncCursor{}}
	p.self = cfg.Peers.Advertise
	if p.self == "" {
		p.self = cfg.Listen.TCP
	}
	p.creds = insecure.NewCredentials()
	if cfg.Peers.TLSCA != "" {
		creds, err := peerTLS(cfg.Peers)
		if err != nil {
			p.reason = err.Error()
			log.Warn("peer_tls_unavailable", "error", err)
		} else {
			p.creds = creds
		}
	}
	if cfg.Peers.Redis != "" {
		opt, err := redis.ParseURL(cfg.Peers.Redis)
		if err != nil {
			p.reason = fmt.Sprintf("peers.redis: %v", err)
			log.Warn("peer_directory_unavailable", "error", err)
		} else {
			opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = cfg.Peers.Timeout, cfg.Peers.Timeout, cfg.Peers.Timeout
			opt.MaxRetries = 0
			p.rdb = redis.NewClient(opt)
		}
	}
	if len(cfg.Peers.Static) > 0 || cfg.Peers.Redis != "" {
		m.setBackend("peers", true)
	}
	return p
}

func peerTLS(c PeersConfig) (credentials.TransportCredentials, error) {
	pem, err := os.ReadFile(c.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("peers.tls_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("peers.tls_ca %s: no certificate in it: %w", c.TLSCA, ErrConfig)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	if c.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("peers.tls_cert: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(tc), nil
}

// enabled reports whether any peer source is configured.
func (p *peers) enabled() bool { return len(p.cfg.Static) > 0 || p.rdb != nil }

// run syncs with the peers every sync_interval until ctx ends.
func (p *peers) run(ctx context.Context) error {
	if !p.enabled() {
		return nil
	}
	t := time.NewTicker(p.cfg.SyncInterval)
	defer t.Stop()
	for {
		p.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// round refreshes the directory and pulls new index entries from each peer.
func (p *peers) round(ctx context.Context) {
	list := slices.Clone(p.cfg.Static)
	if p.rdb != nil {
		found, err := p.directory(ctx)
		p.setRedis(err)
		for _, a := range found {
			if !slices.Contains(list, a) {
				list = append(list, a)
			}
		}
	}
	list = slices.DeleteFunc(list, func(a string) bool { return a == p.self && p.self != "" })
	p.mu.Lock()
	gone := []string{}
	for _, a := range p.known {
		if !slices.Contains(list, a) {
			gone = append(gone, a)
		}
	}
	p.known = list
	p.mu.Unlock()
	for _, a := range gone {
		p.d.owners.dropPeer(a)
	}
	for _, a := range list {
		if err := p.syncPeer(ctx, a); err != nil && ctx.Err() == nil {
			p.log.Debug("peer_sync_failed", "peer", a, "error", err)
		}
	}
}

// directory heartbeats this daemon into Redis and lists the live ones.
func (p *peers) directory(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	now := time.Now().UnixMilli()
	if p.self != "" {
		if err := p.rdb.HSet(ctx, directoryKey, p.self, now).Err(); err != nil {
			return nil, fmt.Errorf("redis heartbeat: %w", err)
		}
	}
	all, err := p.rdb.HGetAll(ctx, directoryKey).Result()
	if err != nil {
		return nil, fmt.Errorf("redis directory: %w", err)
	}
	stale := now - 3*p.cfg.SyncInterval.Milliseconds() - p.cfg.Timeout.Milliseconds()
	var out []string
	for addr, ts := range all {
		t, err := strconv.ParseInt(ts, 10, 64)
		if err == nil && t >= stale && addr != p.self {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out, nil
}

// setRedis records whether the directory answered; a change is logged once.
func (p *peers) setRedis(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	up := err == nil
	if up != p.redisUp {
		if up {
			p.log.Info("peer_directory_up", "redis", p.cfg.Redis)
		} else {
			p.log.Warn("peer_directory_down", "redis", p.cfg.Redis, "error", err)
		}
	}
	p.redisUp = up
	p.reason = ""
	if err != nil {
		p.reason = err.Error()
	}
	p.m.setBackend("redis_directory", up)
}

// status reports the peer backends for Status.
func (p *peers) status() []*api.Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*api.Backend
	if p.rdb != nil {
		out = append(out, &api.Backend{Name: "redis_directory", Kind: p.cfg.Redis, Up: p.redisUp, Reason: p.reason})
	}
	if p.enabled() {
		out = append(out, &api.Backend{Name: "peers", Kind: fmt.Sprintf("%d known", len(p.known)), Up: true})
	}
	return out
}

// conn returns a connection to a peer, dialing it once.
func (p *peers) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(p.creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(int(p.d.cfg.Listen.MaxRecvBytes))),
	)
	if err != nil {
		return nil, fmt.Errorf("dial peer %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) outgoing(ctx context.Context) context.Context {
	if p.cfg.Token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, PeerTokenHeader, p.cfg.Token)
}

// syncPeer pulls a peer's new index entries into the local index.
func (p *peers) syncPeer(ctx context.Context, addr string) error {
	c, err := p.conn(addr)
	if err != nil {
		return err
	}
	cl := api.NewPeerClient(c)
	for {
		p.mu.Lock()
		cur := p.cursor[addr]
		p.mu.Unlock()
		cctx, cancel := context.WithTimeout(p.outgoing(ctx), p.cfg.Timeout)
		resp, err := cl.Sync(cctx, &api.SyncRequest{Since: cur.next, Epoch: cur.epoch, Max: int32(p.cfg.SyncBatch)})
		cancel()
		if err != nil {
			return fmt.Errorf("sync with %s: %w", addr, err)
		}
		added := 0
		for _, e := range resp.GetEntries() {
			if p.learn(addr, e) {
				added++
			}
		}
		if added > 0 {
			p.m.peerSync.Add(float64(added))
			p.d.m.indexEntries.Set(float64(p.d.index.Len()))
		}
		p.mu.Lock()
		p.cursor[addr] = syncCursor{epoch: resp.GetEpoch(), next: resp.GetNext()}
		p.mu.Unlock()
		if len(resp.GetEntries()) < p.cfg.SyncBatch {
			return nil
		}
	}
}

// learn indexes one entry a peer holds.
func (p *peers) learn(addr string, e *api.IndexEntry) bool {
	salt, err := matcher.ParseSalt(e.GetSalt())
	if err != nil {
		return false
	}
	if _, ok := p.d.models.bySalt(salt); !ok {
		return false // a model this daemon does not serve
	}
	ent := matcher.Entry{Salt: salt, Tokens: e.GetTokens(), Prefix: e.GetPrefix()}
	keys, err := p.d.index.Add(ent)
	if err != nil {
		return false
	}
	chunkKeys := []matcher.ChunkKey{keys[0]}
	if ent.Prefix {
		if chunkKeys, err = matcher.PrefixKeys(salt, ent.Tokens, p.d.cfg.ChunkTokens, nil); err != nil {
			return false
		}
	}
	return p.d.owners.addRemote(keys[0], &entryInfo{salt: salt, prefix: ent.Prefix, tokens: ent.Tokens}, addr, chunkKeys)
}

// fetch loads one chunk from a peer, layer by layer.
func (p *peers) fetch(ctx context.Context, addr string, key matcher.ChunkKey) (kvcache.ChunkReader, error) {
	c, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(p.outgoing(ctx))
	stream, err := api.NewPeerClient(c).FetchChunk(sctx, &api.FetchChunkRequest{Chunk: key.String()})
	if err != nil {
		cancel()
		p.m.peerFetches.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("fetch %v from %s: %w", key, addr, err)
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		p.m.peerFetches.WithLabelValues(fetchResult(err)).Inc()
		return nil, fmt.Errorf("fetch %v from %s: %w", key, addr, errors.Join(store.ErrNotFound, err))
	}
	info, err := chunkInfoOf(first.GetMeta())
	if err != nil || info.Key != key {
		cancel()
		p.m.peerFetches.WithLabelValues("malformed").Inc()
		return nil, fmt.Errorf("fetch %v from %s: bad metadata: %w", key, addr, errors.Join(store.ErrNotFound, err))
	}
	r := &peerReader{info: info, cancel: cancel, layers: make([][]byte, info.Shape.Layers), ready: make([]chan struct{}, info.Shape.Layers), failed: make(chan struct{}),
		whole: p.d.promote}
	for i := range r.ready {
		r.ready[i] = make(chan struct{})
	}
	r.wg.Go(func() { r.receive(stream, p.m) })
	return r, nil
}

func fetchResult(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "miss"
}

// peerReader is a ChunkReader over a FetchChunk stream: layer l is usable
// as soon as its bytes and checksum arrive.
type peerReader struct {
	info   *kvcache.ChunkInfo
	cancel context.CancelFunc
	wg     sync.WaitGroup

	layers [][]byte
	ready  []chan struct{}
	// whole receives the chunk once every layer arrived and verified.
	whole  func(info *kvcache.ChunkInfo, layers [][]byte)
	mu     sync.Mutex
	err    error
	failed chan struct{}
	once   sync.Once
}

var _ kvcache.ChunkReader = (*peerReader)(nil)

func (r *peerReader) receive(stream grpc.ServerStreamingClient[api.FetchChunkResponse], m *metrics) {
	fail := func(err error) {
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		close(r.failed)
		m.peerFetches.WithLabelValues("broken").Inc()
	}
	lb := r.info.LayerInfo(0).Bytes()
	for l := range r.info.Shape.Layers {
		buf := make([]byte, 0, lb)
		for {
			msg, err := stream.Recv()
			if err != nil {
				fail(fmt.Errorf("peer stream at layer %d: %w", l, err))
				return
			}
			if int(msg.GetLayer()) != l || msg.GetOffset() != uint64(len(buf)) || len(buf)+len(msg.GetData()) > lb {
				fail(fmt.Errorf("peer sent layer %d offset %d, want layer %d offset %d: %w", msg.GetLayer(), msg.GetOffset(), l, len(buf), kvcache.ErrMalformed))
				return
			}
			buf = append(buf, msg.GetData()...)
			if !msg.GetLast() {
				continue
			}
			if len(buf) != lb {
				fail(fmt.Errorf("peer layer %d has %d bytes, want %d: %w", l, len(buf), lb, kvcache.ErrTruncated))
				return
			}
			if got := crc32.Checksum(buf, castagnoli); got != msg.GetCrc32C() {
				fail(fmt.Errorf("peer layer %d: crc32c %08x, sent %08x: %w", l, got, msg.GetCrc32C(), kvcache.ErrChecksum))
				return
			}
			break
		}
		r.layers[l] = buf
		close(r.ready[l])
		m.peerBytes.WithLabelValues("fetched").Add(float64(len(buf)))
	}
	m.peerFetches.WithLabelValues("hit").Inc()
	if r.whole != nil {
		r.whole(r.info, r.layers)
	}
}

// promote offers a chunk a peer sent whole (every layer's CRC verified) to
// the write-back queue, which writes it into the local tiers: the next
// Prepare that needs it is a local hit, not another trip to the peer. The
// queue is bounded and Offer never blocks, so a Prepare never waits for
// it; a chunk the full queue refuses stays the peer's (counted). The
// layers are shared with the readers, which only read them.
func (d *Daemon) promote(info *kvcache.ChunkInfo, layers [][]byte) {
	m, ok := d.models.bySalt(matcher.Salt{Model: [8]byte(info.Model[:8])})
	if !ok || m.fp != info.Model || m.shape.Layers != info.Shape.Layers || m.shape.KVHeads != info.Shape.KVHeads || m.shape.HeadDim != info.Shape.HeadDim {
		return // not a model this daemon serves: keep nothing of it
	}
	c := &kvcache.Chunk{ChunkInfo: *info, Layers: layers}
	if err := d.st.wb.Offer(c); err != nil {
		d.stats.promotionRejects.Add(1)
		d.m.peerPromotions.WithLabelValues("rejected").Inc()
		d.log.Debug("peer_promotion_rejected", "chunk", info.Key.String(), "error", err)
		return
	}
	d.stats.promotions.Add(1)
	d.m.peerPromotions.WithLabelValues("queued").Inc()
	d.m.writeback.Inc()
}

func (r *peerReader) Info() *kvcache.ChunkInfo { return r.info }

func (r *peerReader) Available() kvcache.LayerRange {
	return kvcache.LayerRange{Start: 0, End: r.info.Shape.Layers}
}

func (r *peerReader) Layer(ctx context.Context, l int) ([]byte, error) {
	if l < 0 || l >= len(r.layers) {
		return nil, fmt.Errorf("layer %d of %d: %w", l, len(r.layers), kvcache.ErrLayerRange)
	}
	select {
	case <-r.ready[l]:
		return r.layers[l], nil
	case <-r.failed:
		r.mu.Lock()
		defer r.mu.Unlock()
		return nil, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *peerReader) Close() error {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
	})
	return nil
}

// chunkInfoOf checks and converts a peer's chunk metadata.
func chunkInfoOf(m *api.ChunkMeta) (*kvcache.ChunkInfo, error) {
	if m == nil {
		return nil, fmt.Errorf("no chunk metadata: %w", kvcache.ErrMalformed)
	}
	if len(m.GetKey()) != 16 || len(m.GetModel()) != kvcache.FingerprintSize {
		return nil, fmt.Errorf("key of %d bytes, model of %d: %w", len(m.GetKey()), len(m.GetModel()), kvcache.ErrMalformed)
	}
	dt, err := kvcache.ParseDType(m.GetDtype())
	if err != nil {
		return nil, err
	}
	info := &kvcache.ChunkInfo{
		SaltID: m.GetSaltId(), Tokens: m.GetTokens(), BasePos: int(m.GetBasePos()),
		Shape: kvcache.Shape{Layers: int(m.GetLayers()), KVHeads: int(m.GetKvHeads()), HeadDim: int(m.GetHeadDim()), DType: dt},
	}
	copy(info.Key[:], m.GetKey())
	copy(info.Model[:], m.GetModel())
	if info.Shape.Layers <= 0 || info.Shape.Layers > 1024 || info.Shape.KVHeads <= 0 || info.Shape.HeadDim <= 0 ||
		len(info.Tokens) == 0 || info.BasePos < 0 || int64(info.Shape.Bytes(len(info.Tokens))) > 1<<36 {
		return nil, fmt.Errorf("chunk shape %s, %d tokens at %d: %w", info.Shape, len(info.Tokens), info.BasePos, kvcache.ErrMalformed)
	}
	if dt == kvcache.FP8E4M3 {
		if len(m.GetScaleK()) != info.Shape.Layers || len(m.GetScaleV()) != info.Shape.Layers {
			return nil, fmt.Errorf("fp8 chunk without per-layer scales: %w", kvcache.ErrMalformed)
		}
		for l := range info.Shape.Layers {
			info.Scales = append(info.Scales, kvcache.Scales{K: m.GetScaleK()[l], V: m.GetScaleV()[l]})
		}
	}
	return info, nil
}

func chunkMetaOf(info *kvcache.ChunkInfo) *api.ChunkMeta {
	m := &api.ChunkMeta{
		Key: info.Key[:], Model: info.Model[:], SaltId: info.SaltID, Tokens: info.Tokens, BasePos: int32(info.BasePos),
		Layers: int32(info.Shape.Layers), KvHeads: int32(info.Shape.KVHeads), HeadDim: int32(info.Shape.HeadDim), Dtype: info.Shape.DType.String(),
	}
	for _, s := range info.Scales {
		m.ScaleK = append(m.ScaleK, s.K)
		m.ScaleV = append(m.ScaleV, s.V)
	}
	return m
}

func (p *peers) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, c := range p.conns {
		errs = append(errs, c.Close())
	}
	p.conns = map[string]*grpc.ClientConn{}
	if p.rdb != nil {
		if p.self != "" {
			ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
			p.rdb.HDel(ctx, directoryKey, p.self)
			cancel()
		}
		errs = append(errs, p.rdb.Close())
		p.rdb = nil
	}
	return errors.Join(errs...)
}

// peerService serves this daemon's chunks and index entries to peers.
type peerService struct {
	api.UnimplementedPeerServer
	d *Daemon
}

func (s *peerService) FetchChunk(req *api.FetchChunkRequest, stream grpc.ServerStreamingServer[api.FetchChunkResponse]) error {
	return s.d.serveChunk(stream.Context(), req, stream.Send)
}

func (s *peerService) HasChunks(ctx context.Context, req *api.HasChunksRequest) (*api.HasChunksResponse, error) {
	keys := make([]matcher.ChunkKey, len(req.GetChunks()))
	for i, k := range req.GetChunks() {
		var err error
		if keys[i], err = matcher.ParseChunkKey(k); err != nil {
			return nil, fmt.Errorf("chunks[%d]: %w", i, err)
		}
	}
	has, err := s.d.st.has(ctx, keys)
	if err != nil {
		return nil, err
	}
	return &api.HasChunksResponse{Has: has}, nil
}

func (s *peerService) Sync(ctx context.Context, req *api.SyncRequest) (*api.SyncResponse, error) {
	n := int(req.GetMax())
	if n <= 0 || n > s.d.cfg.Peers.SyncBatch {
		n = s.d.cfg.Peers.SyncBatch
	}
	epoch, next, entries := s.d.owners.since(req.GetEpoch(), req.GetSince(), n)
	resp := &api.SyncResponse{Epoch: epoch, Next: next}
	for _, e := range entries {
		sb := e.salt.Bytes()
		resp.Entries = append(resp.Entries, &api.IndexEntry{Seq: e.seq, Salt: sb[:], Prefix: e.prefix, Tokens: e.tokens})
	}
	return resp, nil
}

// serveChunk sends one locally stored chunk: metadata, then each layer in
// parts that fit the message limit. Only the local tiers are read: a peer
// never forwards to another peer.
func (d *Daemon) serveChunk(ctx context.Context, req *api.FetchChunkRequest, send func(*api.FetchChunkResponse) error) error {
	key, err := matcher.ParseChunkKey(req.GetChunk())
	if err != nil {
		return fmt.Errorf("chunk: %w", err)
	}
	r, _, err := d.st.get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	info := r.Info()
	if err := send(&api.FetchChunkResponse{Meta: chunkMetaOf(info)}); err != nil {
		return err
	}
	part := max(int(d.cfg.Listen.MaxSendBytes)/2, 4<<10)
	for l := range info.Shape.Layers {
		b, err := r.Layer(ctx, l)
		if err != nil {
			return fmt.Errorf("read layer %d of %v: %w", l, key, err)
		}
		crc := crc32.Checksum(b, castagnoli)
		for off := 0; off < len(b) || off == 0; off += part {
			end := min(off+part, len(b))
			msg := &api.FetchChunkResponse{Layer: int32(l), Offset: uint64(off), Data: b[off:end], Last: end == len(b)}
			if msg.Last {
				msg.Crc32C = crc
			}
			if err := send(msg); err != nil {
				return err
			}
			if end == len(b) {
				break
			}
		}
		d.m.peerBytes.WithLabelValues("served").Add(float64(len(b)))
	}
	return nil
}
