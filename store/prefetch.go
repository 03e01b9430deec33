package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// PrefetchOptions configure a Prefetcher. The zero value of every field
// selects its default.
type PrefetchOptions struct {
	// Workers is how many chunk opens and layer reads run at once, across
	// all requests. Zero means 16.
	Workers int
	// MaxInFlight bounds the bytes of layers being read at once; a layer
	// larger than it runs alone. Zero means 256 MiB. Opens are not
	// counted: a batch of them is bounded by chunk count (64), and brings
	// each chunk's first Redis layer group with its header.
	MaxInFlight int64
	// LayerWindow is how many layers a chunk may be read ahead of the
	// slowest chunk of the request that started its fetch: 1 reads in
	// rounds (layer l of every chunk before layer l+1 of any), larger
	// values let a fast tier run ahead. Without a bound, chunks on a fast
	// tier would run to their last layer while a slow tier is still on
	// layer 0, spending the CPU and bandwidth the first layer needs. Zero
	// means 1.
	LayerWindow int
	// Logger receives fetch failures; nil discards.
	Logger *slog.Logger
}

// Prefetcher loads the chunks of many requests from a Store concurrently.
// A request's chunks are opened in one batch when the store is a
// BatchGetter (one round trip for a tier's headers). Requests' starts —
// their opens and first layers — go before the later layers of any
// request; within that, earliest deadline first and, within a request,
// layer-major: layer 0 of every chunk, then layer 1, …, so that a stitcher
// consuming layers in order can start at once. A chunk wanted by several
// requests at the same time is fetched once (its flight); a request that
// gives up (cancelled, past its deadline) stops wanting its chunks, and a
// flight (or a batch of opens) stops only when no request wants it any
// more.
type Prefetcher struct {
	src     Store
	batcher BatchGetter // src, when it opens many chunks at once
	workers int
	maxB    int64
	window  int
	log     *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	flights  map[matcher.ChunkKey]*flight
	tasks    taskHeap
	inflight int64
	blocked  int // workers waiting for the head task's bytes to fit
	seq      uint64
	closed   bool
	wg       sync.WaitGroup

	st struct {
		requests, chunks, joined, shed, failed, bytes atomic.Int64
	}
}

// NewPrefetcher starts a prefetcher (and its workers) over src. Close
// stops it.
func NewPrefetcher(src Store, opts PrefetchOptions) (*Prefetcher, error) {
	p := &Prefetcher{src: src, workers: opts.Workers, maxB: opts.MaxInFlight, window: opts.LayerWindow, log: opts.Logger, flights: map[matcher.ChunkKey]*flight{}}
	if p.window == 0 {
		p.window = 1
	}
	if p.workers == 0 {
		p.workers = 16
	}
	if p.maxB == 0 {
		p.maxB = 256 << 20
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if src == nil || p.workers < 0 || p.maxB < 0 || p.window < 0 {
		return nil, fmt.Errorf("prefetcher: workers %d, max in flight %d and layer window %d must not be negative, and a store is required: %w", p.workers, p.maxB, p.window, ErrConfig)
	}
	p.batcher, _ = src.(BatchGetter)
	p.cond = sync.NewCond(&p.mu)
	for range p.workers {
		p.wg.Add(1)
		go p.work()
	}
	return p, nil
}

// PrefetchStats are a prefetcher's counters.
type PrefetchStats struct {
	// Requests and Chunks fetched; Joined counts chunks that joined a
	// fetch already in flight for another request.
	Requests, Chunks, Joined int64
	// Shed counts chunks given up for a deadline, Failed chunks that
	// could not be fetched (misses included).
	Shed, Failed int64
	// Bytes are the layer bytes read.
	Bytes int64
	// InFlight are the bytes being read now.
	InFlight int64
}

// Stats returns the prefetcher's counters.
func (p *Prefetcher) Stats() PrefetchStats {
	p.mu.Lock()
	inflight := p.inflight
	p.mu.Unlock()
	return PrefetchStats{Requests: p.st.requests.Load(), Chunks: p.st.chunks.Load(), Joined: p.st.joined.Load(),
		Shed: p.st.shed.Load(), Failed: p.st.failed.Load(), Bytes: p.st.bytes.Load(), InFlight: inflight}
}

// flight is the fetch of one chunk, shared by the requests that want it.
type flight struct {
	key    matcher.ChunkKey
	ctx    context.Context
	cancel context.CancelFunc

	// lead is the request that started the flight: its progress paces
	// the flight's layers (see eligible).
	lead *Fetch

	// guarded by Prefetcher.mu
	wanters, holders int
	order            int       // chunk index in the request that started it
	deadline         time.Time // of the request that started it
	gone             bool      // out of the flights map
	// Layers [qNext, qEnd) are not queued yet: a layer is queued only
	// when its lead lets it be read (eligible), so that no worker is woken
	// for a task it may not run. qInfo sizes them.
	qStart, qNext, qEnd int
	qInfo               *kvcache.ChunkInfo

	mu      sync.Mutex
	reader  kvcache.ChunkReader
	info    *kvcache.ChunkInfo
	rng     LayerRange
	layers  []flightLayer // indexed by layer number (zero outside rng)
	arrived int
	err     error // sticky failure
	// changed is closed when a layer arrives or the flight fails; it is
	// made only when a reader waits (Layer), so that a flight nobody
	// waits on layer by layer allocates nothing per layer.
	changed chan struct{}
	subs    []*fetchSub
}

type flightLayer struct {
	data []byte
	in   bool
}

// signalLocked wakes the readers waiting on fl (fl.mu held).
func (fl *flight) signalLocked() {
	if fl.changed != nil {
		close(fl.changed)
		fl.changed = nil
	}
}

// fetchSub is one request's interest in one flight (chunk index i).
type fetchSub struct {
	f *Fetch
	i int
}

func (fl *flight) complete() bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.info != nil && fl.arrived == fl.rng.Len()
}

// task is one unit of work: open a flight's chunk (layer -1) or read one
// of its layers.
type task struct {
	fl    *flight
	layer int
	bytes int64
	// Priority, most significant first: a request's start (its opens and
	// its first layer: class 0) before the rest of any request's work
	// (class 1), so that a new request's first layer is not queued behind
	// the later layers of requests due earlier; then earliest deadline;
	// then lowest layer (layer-major within a request); then chunk order;
	// then arrival.
	class    uint8
	deadline int64
	order    int
	seq      uint64
}

func (a *task) before(b *task) bool {
	if a.class != b.class {
		return a.class < b.class
	}
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	if a.layer != b.layer {
		return a.layer < b.layer
	}
	if a.order != b.order {
		return a.order < b.order
	}
	return a.seq < b.seq
}

// taskHeap is a binary min-heap of tasks by value: pushing a task
// allocates nothing (container/heap would box each one).
type taskHeap []task

func (h *taskHeap) push(t task) {
	*h = append(*h, t)
	q := *h
	for i := len(q) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q[i].before(&q[parent]) {
			break
		}
		q[i], q[parent] = q[parent], q[i]
		i = parent
	}
}

func (h *taskHeap) pop() task {
	q := *h
	t := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q[n] = task{}
	q = q[:n]
	*h = q
	q.down(0)
	return t
}

func (h taskHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && h[r].before(&h[l]) {
			m = r
		}
		if !h[m].before(&h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

func (h taskHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func deadlineKey(d time.Time) int64 {
	if d.IsZero() {
		return math.MaxInt64
	}
	return d.UnixNano()
}

// pushLocked queues a task (p.mu held). The caller wakes a worker.
func (p *Prefetcher) pushLocked(fl *flight, layer int, bytes int64) {
	p.seq++
	t := task{fl: fl, layer: layer, bytes: bytes, deadline: deadlineKey(fl.deadline), order: fl.order, seq: p.seq}
	if layer >= 0 && layer != fl.qStart {
		t.class = 1
	}
	p.tasks.push(t)
}

// queueLocked queues the layers of fl that its lead lets be read now, and
// wakes a worker for each (p.mu held).
func (p *Prefetcher) queueLocked(fl *flight) {
	for fl.qNext < fl.qEnd && fl.ctx.Err() == nil && fl.eligible(fl.qNext, p.window) {
		p.pushLocked(fl, fl.qNext, int64(fl.qInfo.LayerInfo(fl.qNext).Bytes()))
		fl.qNext++
		p.cond.Signal()
	}
}

// advance queues what became eligible after request f moved on (a round
// of layers completed) or let go of pacing its flights.
func (p *Prefetcher) advance(f *Fetch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fl := range f.flights {
		if fl.lead == f {
			p.queueLocked(fl)
		}
	}
}

// maxOpenBatch bounds how many chunks one worker opens in one GetMany: a
// Redis batch brings each chunk's first layer group with its header, so
// this bounds the bytes of one round trip; the next batch goes to the next
// worker.
const maxOpenBatch = 64

func (p *Prefetcher) work() {
	defer p.wg.Done()
	var batch []*flight
	for {
		t, ok, b := p.next(batch[:0])
		batch = b
		if !ok {
			return
		}
		switch {
		case len(batch) > 0:
			p.openMany(batch)
			clear(batch)
		case t.layer < 0:
			p.open(t.fl)
		default:
			p.read(t.fl, t.layer)
		}
		p.mu.Lock()
		p.inflight -= t.bytes
		if p.blocked > 0 {
			// The head waited for these bytes; a worker that finds it
			// still too large waits again.
			p.cond.Signal()
		}
		p.mu.Unlock()
	}
}

// eligible reports whether layer l of fl may be read now: within the
// window of the request that started the flight (PrefetchOptions.
// LayerWindow), or that request no longer paces it.
func (fl *flight) eligible(l, window int) bool {
	lead := fl.lead
	return lead == nil || lead.free.Load() || l < int(lead.rounds.Load())+window
}

// next waits for the highest-priority task that fits the byte budget.
// Tasks are taken in priority order only: a large layer at the head waits
// for room rather than being overtaken, so the order promised holds.
// When the source opens chunks in batches and the task is an open, the
// opens queued right behind it (up to maxOpenBatch) come with it in batch.
func (p *Prefetcher) next(batch []*flight) (task, bool, []*flight) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return task{}, false, batch
		}
		for len(p.tasks) > 0 && p.tasks[0].fl.ctx.Err() != nil {
			p.tasks.pop() // its flight was abandoned
		}
		if len(p.tasks) > 0 {
			if h := &p.tasks[0]; p.inflight == 0 || p.inflight+h.bytes <= p.maxB {
				t := p.tasks.pop()
				p.inflight += t.bytes
				if t.layer < 0 && p.batcher != nil {
					batch = append(batch, t.fl)
					for len(p.tasks) > 0 && p.tasks[0].layer < 0 && len(batch) < maxOpenBatch {
						if o := p.tasks.pop(); o.fl.ctx.Err() == nil {
							batch = append(batch, o.fl)
						}
					}
				}
				if p.blocked > 0 && len(p.tasks) > 0 && p.inflight+p.tasks[0].bytes <= p.maxB {
					// The bytes freed may fit more than one task.
					p.cond.Signal()
				}
				return t, true, batch
			}
			p.blocked++
			p.cond.Wait()
			p.blocked--
			continue
		}
		p.cond.Wait()
	}
}

func (p *Prefetcher) open(fl *flight) {
	r, err := p.src.Get(fl.ctx, fl.key, kvcache.AllLayers)
	p.opened(fl, r, err)
}

// openMany opens flights through the source's BatchGetter: one call, in
// which local hits come back at once (their layers start while the rest is
// asked for) and a remote tier answers all of its chunks in one round trip.
// The batch stops only when every flight in it was abandoned.
func (p *Prefetcher) openMany(fls []*flight) {
	keys := make([]matcher.ChunkKey, len(fls))
	for i, fl := range fls {
		keys[i] = fl.key
	}
	ctx, done := batchContext(fls)
	defer done()
	p.batcher.GetMany(ctx, keys, kvcache.AllLayers, func(i int, r kvcache.ChunkReader, err error) {
		p.opened(fls[i], r, err)
	})
}

// batchContext is a context that ends when every flight's does.
func batchContext(fls []*flight) (context.Context, func()) {
	if len(fls) == 1 {
		return fls[0].ctx, func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int64
	left.Store(int64(len(fls)))
	stops := make([]func() bool, len(fls))
	for i, fl := range fls {
		stops[i] = context.AfterFunc(fl.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// opened hands a flight the reader (or error) its open produced.
func (p *Prefetcher) opened(fl *flight, r kvcache.ChunkReader, err error) {
	if err == nil && fl.ctx.Err() != nil {
		// Abandoned while a batch it shared with others was in flight.
		r.Close()
		r, err = nil, fmt.Errorf("prefetch %v: %w", fl.key, context.Canceled)
	}
	var info *kvcache.ChunkInfo
	var rng LayerRange
	var subs []*fetchSub
	// The holder check and the hand-over happen under p.mu, as release's
	// decrement does: either release finds the reader and closes it, or
	// this finds no holder and closes it here. Never neither.
	p.mu.Lock()
	orphan := fl.holders == 0
	if err == nil && !orphan {
		info, rng = r.Info(), r.Available()
		fl.mu.Lock()
		fl.reader, fl.info, fl.rng = r, info, rng
		fl.layers = make([]flightLayer, rng.End)
		subs = append(subs, fl.subs...)
		fl.mu.Unlock()
		fl.qStart, fl.qNext, fl.qEnd, fl.qInfo = rng.Start, rng.Start, rng.End, info
		p.queueLocked(fl)
	}
	p.mu.Unlock()
	if err == nil && orphan {
		r.Close()
		err = fmt.Errorf("prefetch %v: %w", fl.key, context.Canceled)
	}
	if err != nil {
		p.fail(fl, err)
		return
	}
	for _, s := range subs {
		s.f.progress(s.i)
	}
}

func (p *Prefetcher) read(fl *flight, l int) {
	fl.mu.Lock()
	r, failed := fl.reader, fl.err != nil
	fl.mu.Unlock()
	if failed || r == nil {
		return // failed, or released by its last holder meanwhile
	}
	data, err := r.Layer(fl.ctx, l)
	if err != nil {
		p.fail(fl, fmt.Errorf("layer %d: %w", l, err))
		return
	}
	p.st.bytes.Add(int64(len(data)))
	fl.mu.Lock()
	fl.layers[l].data, fl.layers[l].in = data, true
	fl.signalLocked()
	fl.arrived++
	var buf [4]*fetchSub
	subs := append(buf[:0], fl.subs...)
	fl.mu.Unlock()
	for _, s := range subs {
		s.f.progress(s.i)
	}
}

// fail marks a flight failed (first error wins) and tells its requests.
func (p *Prefetcher) fail(fl *flight, err error) {
	fl.mu.Lock()
	if fl.err != nil {
		fl.mu.Unlock()
		return
	}
	fl.err = err
	fl.signalLocked()
	var buf [4]*fetchSub
	subs := append(buf[:0], fl.subs...)
	fl.mu.Unlock()
	if !errors.Is(err, context.Canceled) {
		p.log.Debug("prefetch_chunk_failed", "err", err)
	}
	p.mu.Lock()
	p.forgetLocked(fl)
	p.mu.Unlock()
	for _, s := range subs {
		s.f.progress(s.i)
	}
}

// forgetLocked takes a flight out of the map so new requests start afresh.
func (p *Prefetcher) forgetLocked(fl *flight) {
	if !fl.gone {
		fl.gone = true
		if p.flights[fl.key] == fl {
			delete(p.flights, fl.key)
		}
	}
}

// unwant is called when a request stops waiting for a flight; the last
// one to stop cancels it unless it is complete.
func (p *Prefetcher) unwant(fl *flight) {
	complete := fl.complete()
	p.mu.Lock()
	fl.wanters--
	if fl.wanters == 0 && !complete {
		fl.cancel()
		p.forgetLocked(fl)
		p.cond.Broadcast()
	}
	p.mu.Unlock()
}

// release is called when a request closes; the last holder closes the
// chunk's reader.
func (p *Prefetcher) release(fl *flight) {
	p.mu.Lock()
	fl.holders--
	last := fl.holders == 0
	if last {
		fl.cancel()
		p.forgetLocked(fl)
		p.cond.Broadcast()
	}
	p.mu.Unlock()
	if last {
		fl.mu.Lock()
		r := fl.reader
		fl.reader = nil
		fl.mu.Unlock()
		if r != nil {
			r.Close()
		}
	}
}

// FetchOptions tune one request.
type FetchOptions struct {
	// Timeout, when positive, bounds the request in addition to ctx's
	// deadline.
	Timeout time.Duration
	// NoShed keeps every chunk wanted until the deadline. By default, when
	// the bytes still to load cannot arrive in the time left at the rate
	// seen so far, chunks are given up from the end of the key list (the
	// end of the prompt), so that a prefix of chunks arrives whole instead
	// of every chunk in part.
	NoShed bool
}

// Fetch is one request's prefetch of a list of chunks (a plan's Keys, in
// prompt order).
type Fetch struct {
	p        *Prefetcher
	keys     []matcher.ChunkKey
	flights  []*flight
	deadline time.Time
	start    time.Time
	shedOK   bool
	stop     func() bool
	cancel   context.CancelFunc

	// rounds mirrors minDone, free is set when the request stops pacing
	// its flights (closed, expired, all chunks terminal); workers read
	// both without the lock.
	rounds atomic.Int64
	free   atomic.Bool

	mu      sync.Mutex
	state   []chunkState
	errs    []error
	changed chan struct{} // closed when minDone or a chunk's state changes
	first   time.Duration // when layer 0 of every chunk still wanted was in
	full    time.Duration // when every chunk was terminal
	minDone int           // layers [0, minDone) are in for every wanted chunk
	closed  bool
	// pending counts chunks in chunkPending. lag[i] marks a pending chunk
	// that lacks layer minDone, laggards counts them: a round completes
	// when it reaches zero, so a layer's arrival costs O(1), not a scan
	// of every chunk. settled is set once the last round was counted
	// after every chunk left pending.
	pending  int
	lag      []bool
	laggards int
	settled  bool
}

type chunkState uint8

const (
	chunkPending chunkState = iota
	chunkArrived
	chunkFailed
	chunkShed
)

// Fetch starts fetching keys (duplicates allowed) and returns at once.
// ctx bounds the request: when it ends, chunks not yet in are given up
// (marked for recompute). The caller must Close the fetch.
func (p *Prefetcher) Fetch(ctx context.Context, keys []matcher.ChunkKey, opts FetchOptions) (*Fetch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var cancel context.CancelFunc = func() {}
	if opts.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
	}
	deadline, _ := ctx.Deadline()
	f := &Fetch{p: p, keys: append([]matcher.ChunkKey(nil), keys...), flights: make([]*flight, len(keys)),
		deadline: deadline, start: time.Now(), shedOK: !opts.NoShed && !deadline.IsZero(), cancel: cancel,
		state: make([]chunkState, len(keys)), errs: make([]error, len(keys)), changed: make(chan struct{}),
		pending: len(keys), lag: make([]bool, len(keys)), laggards: len(keys)}
	// Until the first recount every chunk lacks layer 0: a worker may call
	// progress as soon as the flights are registered.
	for i := range f.lag {
		f.lag[i] = true
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("prefetch: %w", ErrClosed)
	}
	p.st.requests.Add(1)
	p.st.chunks.Add(int64(len(keys)))
	opens, rekey := 0, false
	for i, k := range keys {
		fl, ok := p.flights[k]
		if ok {
			p.st.joined.Add(1)
			if deadlineKey(deadline) < deadlineKey(fl.deadline) {
				// A more urgent request joined: the flight's work is now
				// due by its deadline (earliest deadline first).
				fl.deadline, rekey = deadline, true
			}
		} else {
			fctx, fcancel := context.WithCancel(context.Background())
			fl = &flight{key: k, ctx: fctx, cancel: fcancel, order: i, deadline: deadline, lead: f}
			p.flights[k] = fl
			p.pushLocked(fl, -1, 0)
			opens++
		}
		fl.wanters++
		fl.holders++
		fl.mu.Lock()
		fl.subs = append(fl.subs, &fetchSub{f: f, i: i})
		fl.mu.Unlock()
		f.flights[i] = fl
	}
	if rekey {
		for i := range p.tasks {
			p.tasks[i].deadline = deadlineKey(p.tasks[i].fl.deadline)
		}
		p.tasks.init()
	}
	// One worker per open, or per batch of opens when the source opens
	// many at once (the others would wake to find nothing).
	if p.batcher != nil {
		opens = (opens + maxOpenBatch - 1) / maxOpenBatch
	}
	for range opens {
		p.cond.Signal()
	}
	p.mu.Unlock()
	f.mu.Lock()
	f.recountLocked()
	f.mu.Unlock()
	// Chunks already complete (joined flights) count at once.
	for i := range keys {
		f.progress(i)
	}
	f.stop = context.AfterFunc(ctx, func() { f.expire(context.Cause(ctx)) })
	return f, nil
}

// FetchPlan fetches a stitch plan's sources (plan.Keys).
func (p *Prefetcher) FetchPlan(ctx context.Context, plan *kvcache.Plan, opts FetchOptions) (*Fetch, error) {
	return p.Fetch(ctx, plan.Keys, opts)
}

// progress re-evaluates chunk i after its flight changed.
func (f *Fetch) progress(i int) {
	fl := f.flights[i]
	fl.mu.Lock()
	var st chunkState
	var err error
	switch {
	case fl.err != nil:
		st, err = chunkFailed, fl.err
	case fl.info != nil && fl.arrived == fl.rng.Len():
		st = chunkArrived
	}
	fl.mu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	var unwant []*flight
	wake := false
	switch {
	case f.state[i] == chunkPending && st != chunkPending:
		f.leaveLocked(i, st, err)
		wake = true
		switch st {
		case chunkFailed:
			f.p.st.failed.Add(1)
		case chunkArrived:
			unwant = append(unwant, fl) // nothing more to wait for
		}
	case f.lag[i] && f.hasLayerLocked(i, f.minDone):
		f.lag[i] = false
		f.laggards--
	}
	before, wasFree := f.minDone, f.free.Load()
	shed := f.checkRoundLocked()
	unwant = append(unwant, shed...)
	f.notifyLocked(wake || len(shed) > 0 || f.minDone != before)
	advanced := f.minDone != before || f.free.Load() != wasFree
	f.mu.Unlock()
	for _, fl := range unwant {
		f.p.unwant(fl)
	}
	if advanced {
		f.p.advance(f)
	}
}

// leaveLocked takes pending chunk i out of the running (st != pending).
func (f *Fetch) leaveLocked(i int, st chunkState, err error) {
	f.state[i], f.errs[i] = st, err
	f.pending--
	if f.lag[i] {
		f.lag[i] = false
		f.laggards--
	}
}

// notifyLocked records the rounds and the completion time, and wakes the
// waiters (Wait, WaitLayer) when what they look at changed.
func (f *Fetch) notifyLocked(wake bool) {
	f.rounds.Store(int64(f.minDone))
	if f.pending == 0 {
		if f.full == 0 {
			f.full = time.Since(f.start)
		}
		f.free.Store(true)
	}
	if wake {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

func (f *Fetch) terminalLocked() bool { return f.pending == 0 }

// hasLayerLocked reports whether layer l of chunk i has arrived, or the
// chunk has no layer l.
func (f *Fetch) hasLayerLocked(i, l int) bool {
	fl := f.flights[i]
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.info == nil {
		return false
	}
	return !fl.rng.Contains(l) || fl.layers[l].in
}

// recountLocked marks the pending chunks that lack layer minDone. It
// reports whether some pending chunk has layers at or past minDone still
// to come (or unknown), so that a round can complete at all.
func (f *Fetch) recountLocked() bool {
	f.laggards = 0
	open := false
	for i, s := range f.state {
		f.lag[i] = s == chunkPending && !f.hasLayerLocked(i, f.minDone)
		if f.lag[i] {
			f.laggards++
		}
		if s == chunkPending && !open {
			fl := f.flights[i]
			fl.mu.Lock()
			open = fl.info == nil || f.minDone < fl.rng.End
			fl.mu.Unlock()
		}
	}
	return open
}

// checkRoundLocked advances minDone over every round now complete,
// records the first-layer time and, when a round completed, sheds chunks
// from the end of the prompt if the rest cannot arrive by the deadline at
// the rate seen so far. It returns the flights no longer wanted.
func (f *Fetch) checkRoundLocked() []*flight {
	if !f.advanceLocked() || !f.shedOK || f.pending == 0 {
		return nil
	}
	// Bytes in and bytes still wanted.
	var done, left int64
	var chunkLeft []int64
	unknown := 0
	for i, s := range f.state {
		fl := f.flights[i]
		fl.mu.Lock()
		var in, total int64
		if fl.info != nil {
			for l := fl.rng.Start; l < fl.rng.End; l++ {
				b := int64(fl.info.LayerInfo(l).Bytes())
				total += b
				if fl.layers[l].in {
					in += b
				}
			}
		}
		fl.mu.Unlock()
		if fl.info == nil && s == chunkPending {
			unknown++
		}
		done += in
		if s == chunkPending {
			left += total - in
		}
		chunkLeft = append(chunkLeft, total-in)
	}
	if unknown > 0 || done == 0 {
		return nil // not enough known to project
	}
	elapsed := time.Since(f.start)
	remaining := time.Until(f.deadline)
	rate := float64(done) / elapsed.Seconds()
	budget := int64(rate * remaining.Seconds())
	var shed []*flight
	for i := len(f.state) - 1; i >= 0 && left > budget; i-- {
		if f.state[i] != chunkPending {
			continue
		}
		f.leaveLocked(i, chunkShed, fmt.Errorf("prefetch %v: %d bytes left, %v to go at %.0f MB/s: given up for the prefix: %w",
			f.keys[i], chunkLeft[i], remaining.Round(time.Microsecond), rate/1e6, ErrDeadline))
		f.p.st.shed.Add(1)
		left -= chunkLeft[i]
		shed = append(shed, f.flights[i])
	}
	if len(shed) > 0 {
		f.advanceLocked() // the last laggards may have been shed
	}
	return shed
}

// advanceLocked moves minDone past every round now complete and records
// the first-layer time; it reports whether minDone moved.
func (f *Fetch) advanceLocked() bool {
	advanced := false
	for f.laggards == 0 && !f.settled {
		if f.minDone == 0 && f.first == 0 {
			f.first = time.Since(f.start)
		}
		f.minDone++
		advanced = true
		if f.pending == 0 {
			f.settled = true
			break
		}
		if !f.recountLocked() {
			// Every pending chunk has all its layers; its progress
			// call will mark it arrived.
			break
		}
	}
	return advanced
}

// expire gives up every chunk still pending when the request's context
// ends.
func (f *Fetch) expire(cause error) {
	f.mu.Lock()
	var unwant []*flight
	for i, s := range f.state {
		if s == chunkPending {
			f.leaveLocked(i, chunkShed, fmt.Errorf("prefetch %v: %w: %w", f.keys[i], ErrDeadline, cause))
			f.p.st.shed.Add(1)
			unwant = append(unwant, f.flights[i])
		}
	}
	f.notifyLocked(true)
	f.mu.Unlock()
	for _, fl := range unwant {
		f.p.unwant(fl)
	}
	f.p.advance(f)
}

// Reader returns chunk i's reader once its header is in, or nil while it
// is not (or if the chunk failed). Layer blocks until the layer has
// arrived; its bytes stay valid until the Fetch is closed. Closing the
// reader does nothing.
func (f *Fetch) Reader(i int) kvcache.ChunkReader {
	fl := f.flights[i]
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.info == nil || fl.err != nil {
		return nil
	}
	return &flightReader{fl: fl, f: f}
}

type flightReader struct {
	fl *flight
	f  *Fetch
}

func (r *flightReader) Info() *kvcache.ChunkInfo      { return r.fl.info }
func (r *flightReader) Available() kvcache.LayerRange { return r.fl.rng }
func (r *flightReader) Close() error                  { return nil }

func (r *flightReader) Layer(ctx context.Context, l int) ([]byte, error) {
	fl := r.fl
	r.f.mu.Lock()
	closed := r.f.closed
	r.f.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("prefetch %v: layer %d: fetch %w", fl.key, l, ErrClosed)
	}
	if !fl.rng.Contains(l) {
		return nil, fmt.Errorf("prefetch %v: layer %d not in [%d, %d): %w", fl.key, l, fl.rng.Start, fl.rng.End, kvcache.ErrLayerRange)
	}
	for {
		fl.mu.Lock()
		if fl.layers[l].in {
			data := fl.layers[l].data
			fl.mu.Unlock()
			return data, nil
		}
		if fl.err != nil {
			err := fl.err
			fl.mu.Unlock()
			return nil, err
		}
		if fl.changed == nil {
			fl.changed = make(chan struct{})
		}
		ch := fl.changed
		fl.mu.Unlock()
		select {
		case <-ch:
		case <-fl.ctx.Done():
			// Abandoned by every request; it may have arrived just before.
			fl.mu.Lock()
			in, data := fl.layers[l].in, fl.layers[l].data
			fl.mu.Unlock()
			if in {
				return data, nil
			}
			return nil, fmt.Errorf("prefetch %v: layer %d: %w", fl.key, l, ErrDeadline)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// WaitLayer blocks until layer l of every chunk still in the running has
// arrived (chunks that failed or were given up do not hold it back), or
// ctx ends.
func (f *Fetch) WaitLayer(ctx context.Context, l int) error {
	for {
		f.mu.Lock()
		if f.minDone > l || f.terminalLocked() {
			f.mu.Unlock()
			return nil
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Result is the state of a fetch.
type Result struct {
	// Arrived[i] is true when every layer of chunk i is in and verified.
	Arrived []bool
	// Errs[i] says why chunk i did not arrive (ErrNotFound for a miss,
	// ErrDeadline when given up for time, or the tier's error); nil for
	// chunks that arrived or are still pending.
	Errs []error
	// Recompute lists the chunks that did not arrive.
	Recompute []int
	// Complete is true when every chunk arrived.
	Complete bool
	// FirstLayer is when layer 0 of every chunk still in the running was
	// in, Elapsed when every chunk had arrived or been given up (zero
	// while either has not happened).
	FirstLayer, Elapsed time.Duration
}

// Wait blocks until every chunk has arrived, failed or been given up (at
// the request's deadline at the latest), or ctx ends, and returns the
// state. Chunks still pending when ctx ends are reported for recompute.
func (f *Fetch) Wait(ctx context.Context) Result {
	for {
		f.mu.Lock()
		if f.terminalLocked() {
			r := f.resultLocked()
			f.mu.Unlock()
			return r
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			f.mu.Lock()
			r := f.resultLocked()
			f.mu.Unlock()
			return r
		}
	}
}

func (f *Fetch) resultLocked() Result {
	r := Result{Arrived: make([]bool, len(f.state)), Errs: append([]error(nil), f.errs...), FirstLayer: f.first, Elapsed: f.full, Complete: true}
	for i, s := range f.state {
		r.Arrived[i] = s == chunkArrived
		if !r.Arrived[i] {
			r.Recompute = append(r.Recompute, i)
			r.Complete = false
		}
	}
	return r
}

// Close releases the request's hold on its chunks; readers from it must
// not be used afterwards. Chunks no other request holds are released.
func (f *Fetch) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	var unwant []*flight
	for i, s := range f.state {
		if s == chunkPending {
			f.leaveLocked(i, chunkShed, fmt.Errorf("prefetch %v: %w", f.keys[i], ErrClosed))
			unwant = append(unwant, f.flights[i])
		}
	}
	f.free.Store(true)
	f.notifyLocked(true)
	f.mu.Unlock()
	f.p.advance(f)
	if f.stop != nil {
		f.stop()
	}
	f.cancel()
	for _, fl := range unwant {
		f.p.unwant(fl)
	}
	for _, fl := range f.flights {
		fl.mu.Lock()
		for j, s := range fl.subs {
			if s.f == f {
				fl.subs = append(fl.subs[:j], fl.subs[j+1:]...)
				break
			}
		}
		fl.mu.Unlock()
		f.p.release(fl)
	}
	return nil
}

// Close stops the workers. Fetches still open keep what arrived until
// they are closed; chunks still pending are abandoned.
func (p *Prefetcher) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, fl := range p.flights {
		fl.cancel()
	}
	p.tasks = nil
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}
