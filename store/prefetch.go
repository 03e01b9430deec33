package store

import (
	"container/heap"
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
	// larger than it runs alone. Zero means 256 MiB.
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
// Work is ordered earliest deadline first across requests and, within a
// request, layer-major: layer 0 of every chunk, then layer 1, …, so that a
// stitcher consuming layers in order can start at once. A chunk wanted by
// several requests at the same time is fetched once (its flight); a
// request that gives up (cancelled, past its deadline) stops wanting its
// chunks, and a flight stops only when no request wants it any more.
type Prefetcher struct {
	src     Store
	workers int
	maxB    int64
	window  int
	log     *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	flights  map[matcher.ChunkKey]*flight
	tasks    taskHeap
	parked   []*task // layers too far ahead of their request's slowest chunk
	inflight int64
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
	seq    uint64
	ctx    context.Context
	cancel context.CancelFunc

	// lead is the request that started the flight: its progress paces
	// the flight's layers (see layerWindow).
	lead *Fetch

	// guarded by Prefetcher.mu
	wanters, holders int
	order            int       // chunk index in the request that started it
	deadline         time.Time // of the request that started it
	gone             bool      // out of the flights map

	mu      sync.Mutex
	reader  kvcache.ChunkReader
	info    *kvcache.ChunkInfo
	rng     LayerRange
	layers  []flightLayer // indexed by layer number (nil entries outside rng)
	arrived int
	err     error         // sticky failure
	failed  chan struct{} // closed on failure
	subs    []*fetchSub
}

type flightLayer struct {
	data []byte
	done chan struct{}
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
	// priority: earliest deadline, then lowest layer, then chunk order.
	deadline int64
	order    int
	seq      uint64
}

type taskHeap []*task

func (h taskHeap) Len() int { return len(h) }
func (h taskHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
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
func (h taskHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *taskHeap) Push(x any)   { *h = append(*h, x.(*task)) }
func (h *taskHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return t
}

func deadlineKey(d time.Time) int64 {
	if d.IsZero() {
		return math.MaxInt64
	}
	return d.UnixNano()
}

// pushLocked queues a task (p.mu held).
func (p *Prefetcher) pushLocked(fl *flight, layer int, bytes int64) {
	p.seq++
	heap.Push(&p.tasks, &task{fl: fl, layer: layer, bytes: bytes, deadline: deadlineKey(fl.deadline), order: fl.order, seq: p.seq})
	p.cond.Signal()
}

func (p *Prefetcher) work() {
	defer p.wg.Done()
	for {
		t := p.next()
		if t == nil {
			return
		}
		if t.layer < 0 {
			p.open(t.fl)
		} else {
			p.read(t.fl, t.layer)
		}
		p.mu.Lock()
		p.inflight -= t.bytes
		p.cond.Broadcast()
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
// Layers outside their request's window are parked until it advances.
func (p *Prefetcher) next() *task {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return nil
		}
		for len(p.tasks) > 0 {
			t := p.tasks[0]
			if t.fl.ctx.Err() != nil {
				heap.Pop(&p.tasks) // its flight was abandoned
				continue
			}
			if t.layer >= 0 && !t.fl.eligible(t.layer, p.window) {
				p.parked = append(p.parked, heap.Pop(&p.tasks).(*task))
				continue
			}
			break
		}
		if len(p.tasks) > 0 {
			t := p.tasks[0]
			if p.inflight == 0 || p.inflight+t.bytes <= p.maxB {
				heap.Pop(&p.tasks)
				p.inflight += t.bytes
				return t
			}
		}
		p.cond.Wait()
	}
}

// unpark requeues parked layers after a request advanced or let go.
func (p *Prefetcher) unpark() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.parked) == 0 {
		return
	}
	for _, t := range p.parked {
		heap.Push(&p.tasks, t)
	}
	p.parked = p.parked[:0]
	p.cond.Broadcast()
}

func (p *Prefetcher) open(fl *flight) {
	r, err := p.src.Get(fl.ctx, fl.key, kvcache.AllLayers)
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
		for l := rng.Start; l < rng.End; l++ {
			fl.layers[l].done = make(chan struct{})
		}
		subs = append(subs, fl.subs...)
		fl.mu.Unlock()
		for l := rng.Start; l < rng.End; l++ {
			p.pushLocked(fl, l, int64(info.LayerInfo(l).Bytes()))
		}
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
	fl.layers[l].data = data
	close(fl.layers[l].done)
	fl.arrived++
	subs := append([]*fetchSub(nil), fl.subs...)
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
	close(fl.failed)
	subs := append([]*fetchSub(nil), fl.subs...)
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
	// deadline. Use DeadlineRule to derive one from the prompt length.
	Timeout time.Duration
	// NoShed keeps every chunk wanted until the deadline. By default, when
	// the bytes still to load cannot arrive in the time left at the rate
	// seen so far, chunks are given up from the end of the key list (the
	// end of the prompt), so that a prefix of chunks arrives whole instead
	// of every chunk in part.
	NoShed bool
}

// DeadlineRule derives a prefetch timeout from a prompt's length: SGLang
// HiCache's rule, Base plus PerK for every 1024 tokens, capped at Max.
// The zero value of each field selects SGLang's default.
type DeadlineRule struct {
	Base time.Duration // zero means 2s
	PerK time.Duration // zero means 100ms
	Max  time.Duration // zero means 30s
}

// DeadlineFor returns the rule's timeout for a prompt of tokens tokens.
func (r DeadlineRule) DeadlineFor(tokens int) time.Duration {
	base, perK, limit := r.Base, r.PerK, r.Max
	if base == 0 {
		base = 2 * time.Second
	}
	if perK == 0 {
		perK = 100 * time.Millisecond
	}
	if limit == 0 {
		limit = 30 * time.Second
	}
	return min(base+time.Duration(float64(perK)*float64(max(tokens, 0))/1024), limit)
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
	changed chan struct{}
	first   time.Duration // when layer 0 of every chunk still wanted was in
	full    time.Duration // when every chunk was terminal
	minDone int           // layers [0, minDone) are in for every wanted chunk
	closed  bool
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
		state: make([]chunkState, len(keys)), errs: make([]error, len(keys)), changed: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("prefetch: %w", ErrClosed)
	}
	p.st.requests.Add(1)
	p.st.chunks.Add(int64(len(keys)))
	for i, k := range keys {
		fl, ok := p.flights[k]
		if ok {
			p.st.joined.Add(1)
		} else {
			p.seq++
			fctx, fcancel := context.WithCancel(context.Background())
			fl = &flight{key: k, seq: p.seq, ctx: fctx, cancel: fcancel, order: i, deadline: deadline, lead: f,
				failed: make(chan struct{})}
			p.flights[k] = fl
			p.pushLocked(fl, -1, 0)
		}
		fl.wanters++
		fl.holders++
		fl.mu.Lock()
		fl.subs = append(fl.subs, &fetchSub{f: f, i: i})
		fl.mu.Unlock()
		f.flights[i] = fl
	}
	p.mu.Unlock()
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
	if f.state[i] == chunkPending && st != chunkPending {
		f.state[i], f.errs[i] = st, err
		switch st {
		case chunkFailed:
			f.p.st.failed.Add(1)
		case chunkArrived:
			unwant = append(unwant, fl) // nothing more to wait for
		}
	}
	before := f.minDone
	unwant = append(unwant, f.checkRoundLocked()...)
	advanced := f.minDone != before
	f.notifyLocked()
	f.mu.Unlock()
	for _, fl := range unwant {
		f.p.unwant(fl)
	}
	if advanced {
		f.p.unpark()
	}
}

// notifyLocked wakes waiters and records the first-layer and completion
// times.
func (f *Fetch) notifyLocked() {
	f.rounds.Store(int64(f.minDone))
	if f.terminalLocked() {
		if f.full == 0 {
			f.full = time.Since(f.start)
		}
		f.free.Store(true)
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Fetch) terminalLocked() bool {
	for _, s := range f.state {
		if s == chunkPending {
			return false
		}
	}
	return true
}

// layerInLocked reports whether layer l of chunk i is usable or the chunk
// is out of the running.
func (f *Fetch) layerInLocked(i, l int) bool {
	if f.state[i] != chunkPending {
		return true
	}
	fl := f.flights[i]
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.info == nil {
		return false
	}
	if !fl.rng.Contains(l) {
		return true
	}
	select {
	case <-fl.layers[l].done:
		return true
	default:
		return false
	}
}

// checkRoundLocked advances minDone, records the first-layer time and,
// when a round of layers completes, sheds chunks from the end of the
// prompt if the rest cannot arrive by the deadline at the rate seen so
// far. It returns the flights no longer wanted.
func (f *Fetch) checkRoundLocked() []*flight {
	advanced := false
	for {
		all := true
		for i := range f.state {
			if !f.layerInLocked(i, f.minDone) {
				all = false
				break
			}
		}
		if !all || f.minDone > kvcache.DefaultMaxTokens {
			break
		}
		if f.minDone == 0 && f.first == 0 {
			f.first = time.Since(f.start)
		}
		f.minDone++
		advanced = true
		if f.terminalLocked() {
			break
		}
	}
	if !advanced || !f.shedOK || f.terminalLocked() {
		return nil
	}
	// Bytes in and bytes still wanted.
	var done, left int64
	var chunkLeft []int64
	known, unknown := int64(0), 0
	for i, s := range f.state {
		fl := f.flights[i]
		fl.mu.Lock()
		var in, total int64
		if fl.info != nil {
			for l := fl.rng.Start; l < fl.rng.End; l++ {
				b := int64(fl.info.LayerInfo(l).Bytes())
				total += b
				if fl.layers[l].data != nil {
					in += b
				}
			}
		}
		fl.mu.Unlock()
		if fl.info == nil && s == chunkPending {
			unknown++
		} else if fl.info != nil {
			known += total
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
		f.state[i] = chunkShed
		f.errs[i] = fmt.Errorf("prefetch %v: %d bytes left, %v to go at %.0f MB/s: given up for the prefix: %w",
			f.keys[i], chunkLeft[i], remaining.Round(time.Microsecond), rate/1e6, ErrDeadline)
		f.p.st.shed.Add(1)
		left -= chunkLeft[i]
		shed = append(shed, f.flights[i])
	}
	return shed
}

// expire gives up every chunk still pending when the request's context
// ends.
func (f *Fetch) expire(cause error) {
	f.mu.Lock()
	var unwant []*flight
	for i, s := range f.state {
		if s == chunkPending {
			f.state[i] = chunkShed
			f.errs[i] = fmt.Errorf("prefetch %v: %w: %w", f.keys[i], ErrDeadline, cause)
			f.p.st.shed.Add(1)
			unwant = append(unwant, f.flights[i])
		}
	}
	f.notifyLocked()
	f.mu.Unlock()
	for _, fl := range unwant {
		f.p.unwant(fl)
	}
	f.p.unpark()
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
	select {
	case <-fl.layers[l].done:
		fl.mu.Lock()
		defer fl.mu.Unlock()
		return fl.layers[l].data, nil
	case <-fl.failed:
		return nil, fl.err
	case <-fl.ctx.Done():
		// Abandoned by every request; it may have arrived just before.
		select {
		case <-fl.layers[l].done:
			fl.mu.Lock()
			defer fl.mu.Unlock()
			return fl.layers[l].data, nil
		default:
		}
		return nil, fmt.Errorf("prefetch %v: layer %d: %w", fl.key, l, ErrDeadline)
	case <-ctx.Done():
		return nil, ctx.Err()
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
			f.state[i] = chunkShed
			f.errs[i] = fmt.Errorf("prefetch %v: %w", f.keys[i], ErrClosed)
			unwant = append(unwant, f.flights[i])
		}
	}
	f.free.Store(true)
	f.notifyLocked()
	f.mu.Unlock()
	f.p.unpark()
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
	p.tasks, p.parked = nil, nil
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// Span is a half-open range of prompt positions.
type Span struct{ Start, End int }

// TrimPlan returns plan without the segments whose source did not arrive
// (arrived is indexed like plan.Keys), and the prompt spans those segments
// covered, which the engine must recompute. Keys are kept, so Segment
// sources stay valid; the trimmed plan shares them with plan.
func TrimPlan(plan *kvcache.Plan, arrived []bool) (*kvcache.Plan, []Span) {
	out := &kvcache.Plan{Prompt: plan.Prompt, Keys: plan.Keys}
	var spans []Span
	for _, s := range plan.Segments {
		if s.Source < len(arrived) && arrived[s.Source] {
			out.Segments = append(out.Segments, s)
			continue
		}
		sp := Span{Start: s.Dst, End: s.Dst + s.Len()}
		if n := len(spans); n > 0 && spans[n-1].End == sp.Start {
			spans[n-1].End = sp.End
		} else {
			spans = append(spans, sp)
		}
	}
	return out, spans
}
