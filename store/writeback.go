package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// WriteBackOptions configure a write-back queue. The zero value of every
// field selects its default.
type WriteBackOptions struct {
	// BlobOptions must match the destination's: chunks are encoded with
	// them by the queue's workers.
	BlobOptions
	// MaxBytes is the byte budget of accepted, unwritten chunks (their KV
	// bytes). Zero means 1 GiB.
	MaxBytes int64
	// MaxItems bounds their number. Zero means 4096.
	MaxItems int
	// BatchBytes is how much one write hands the destination at once (the
	// disk tier packs a batch into one file). Zero means 64 MiB.
	BatchBytes int64
	// Linger is how long a worker waits for more chunks once it has one
	// that does not fill a batch, so that a trickle of small chunks still
	// shares pack files. Zero means 2ms; negative means no wait.
	Linger time.Duration
	// Workers writing concurrently. Zero means 1.
	Workers int
	// Logger receives rejections (rate-limited) and write failures; nil
	// discards.
	Logger *slog.Logger
}

// WriteBack offloads new chunks to a store asynchronously through a
// bounded queue. Offer never blocks and never grows the queue past its
// budget: a chunk that does not fit is rejected with ErrQueueFull, counted
// and logged. Flush waits for what was accepted and reports what could not
// be written.
type WriteBack struct {
	dst    Store
	cfg    blobConfig
	max    int64
	maxN   int
	batch  int64
	linger time.Duration
	log    *slog.Logger

	mu       sync.Mutex
	queue    []wbItem
	queued   int64
	inflight map[uint64]bool
	seq      uint64
	failures []WriteFailure
	changed  chan struct{} // closed and replaced whenever work completes
	wake     chan struct{}
	closing  bool
	lastLog  time.Time
	unlogged int64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	accepted, rejected, written, failed atomic.Int64
	rejectedBytes                       atomic.Int64
}

type wbItem struct {
	seq   uint64
	chunk *kvcache.Chunk
	bytes int64
}

// WriteFailure is a chunk the queue accepted but could not write.
type WriteFailure struct {
	Key   matcher.ChunkKey
	Bytes int64
	Err   error
}

// FlushReport says what a Flush or Close achieved.
type FlushReport struct {
	// Written counts chunks written since the queue started.
	Written int64
	// Failed are the chunks whose write failed since the last report.
	Failed []WriteFailure
	// Pending are chunks still unwritten when the context ended (Flush)
	// or that were dropped by Close.
	Pending []matcher.ChunkKey
}

// WriteBackStats are the queue's counters.
type WriteBackStats struct {
	Accepted, Rejected, Written, Failed int64
	RejectedBytes                       int64
	QueuedItems                         int
	QueuedBytes                         int64
}

// NewWriteBack starts a queue (and its workers) writing to dst. Close
// stops it.
func NewWriteBack(dst Store, opts WriteBackOptions) (*WriteBack, error) {
	cfg, err := opts.BlobOptions.resolve()
	if err != nil {
		return nil, fmt.Errorf("write-back: %w", err)
	}
	w := &WriteBack{dst: dst, cfg: cfg, max: opts.MaxBytes, maxN: opts.MaxItems, batch: opts.BatchBytes, linger: opts.Linger, log: opts.Logger,
		inflight: map[uint64]bool{}, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
	if w.max == 0 {
		w.max = 1 << 30
	}
	if w.maxN == 0 {
		w.maxN = 4096
	}
	if w.batch == 0 {
		w.batch = 64 << 20
	}
	if w.linger == 0 {
		w.linger = 2 * time.Millisecond
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	workers := opts.Workers
	if workers == 0 {
		workers = 1
	}
	if w.max < 0 || w.maxN < 0 || w.batch < 0 || workers < 0 || dst == nil {
		return nil, fmt.Errorf("write-back: max bytes %d, max items %d, batch %d, workers %d must not be negative and dst must be set: %w",
			w.max, w.maxN, w.batch, workers, ErrConfig)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	for range workers {
		w.wg.Add(1)
		go w.work()
	}
	return w, nil
}

// Offer queues c for writing and returns at once. The queue takes
// ownership of c: the caller must not modify it afterwards. When the queue
// is full the chunk is rejected (ErrQueueFull, counted, logged); when it
// is closing, ErrClosed.
func (w *WriteBack) Offer(c *kvcache.Chunk) error {
	if c == nil {
		return fmt.Errorf("write-back: offer nil chunk: %w", kvcache.ErrShape)
	}
	n := chunkBytes(c)
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return fmt.Errorf("write-back offer %v: %w", c.Key, ErrClosed)
	}
	var reason string
	switch {
	case n > w.max:
		reason = fmt.Sprintf("chunk of %d bytes exceeds the queue budget of %d", n, w.max)
	case w.queued+n > w.max:
		reason = fmt.Sprintf("%d of %d bytes queued, chunk needs %d", w.queued, w.max, n)
	case len(w.queue)+len(w.inflight) >= w.maxN:
		reason = fmt.Sprintf("%d of %d items queued", len(w.queue)+len(w.inflight), w.maxN)
	}
	if reason != "" {
		w.noteReject(c.Key, n, reason)
		w.mu.Unlock()
		w.rejected.Add(1)
		w.rejectedBytes.Add(n)
		return fmt.Errorf("write-back offer %v: %s: %w", c.Key, reason, ErrQueueFull)
	}
	w.seq++
	w.queue = append(w.queue, wbItem{seq: w.seq, chunk: c, bytes: n})
	w.queued += n
	w.mu.Unlock()
	w.accepted.Add(1)
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// chunkBytes is the KV bytes of c's layers, what the queue's budget counts.
func chunkBytes(c *kvcache.Chunk) int64 {
	var n int64
	for _, l := range c.Layers {
		n += int64(len(l))
	}
	return n
}

// noteReject logs rejections at most once a second, with how many were
// not logged in between.
func (w *WriteBack) noteReject(k matcher.ChunkKey, n int64, reason string) {
	now := time.Now()
	if now.Sub(w.lastLog) < time.Second {
		w.unlogged++
		return
	}
	w.log.Warn("writeback_rejected", "bytes", n, "reason", reason, "rejected_since_last_log", w.unlogged)
	w.lastLog, w.unlogged = now, 0
}

func (w *WriteBack) work() {
	defer w.wg.Done()
	for {
		batch, ok := w.take()
		if !ok {
			return
		}
		w.write(batch)
	}
}

// take waits for work and returns a batch, lingering briefly for a batch
// to fill; false when the queue is closed and empty or the workers are
// cancelled.
func (w *WriteBack) take() ([]wbItem, bool) {
	lingered := false
	for {
		if w.ctx.Err() != nil {
			return nil, false
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			var size int64
			for _, it := range w.queue {
				size += it.bytes
			}
			if size >= w.batch || lingered || w.linger < 0 || w.closing {
				n, b := 0, int64(0)
				for n < len(w.queue) && (n == 0 || b+w.queue[n].bytes <= w.batch) {
					b += w.queue[n].bytes
					n++
				}
				batch := append([]wbItem(nil), w.queue[:n]...)
				w.queue = w.queue[n:]
				for _, it := range batch {
					w.inflight[it.seq] = true
				}
				more := len(w.queue) > 0
				w.mu.Unlock()
				if more {
					select {
					case w.wake <- struct{}{}:
					default:
					}
				}
				return batch, true
			}
			w.mu.Unlock()
			lingered = true
			select {
			case <-time.After(w.linger):
			case <-w.ctx.Done():
				return nil, false
			}
			continue
		}
		closing := w.closing
		w.mu.Unlock()
		if closing {
			return nil, false
		}
		select {
		case <-w.wake:
		case <-w.ctx.Done():
			return nil, false
		}
	}
}

// write encodes a batch and hands it to the destination in one call.
func (w *WriteBack) write(batch []wbItem) {
	var items []verified
	var itemOf []int
	var fails []WriteFailure
	for i, it := range batch {
		blob, h, err := w.cfg.encode(it.chunk)
		if err != nil {
			fails = append(fails, WriteFailure{Key: it.chunk.Key, Bytes: it.bytes, Err: err})
			continue
		}
		items = append(items, verified{blob: blob, hdr: h})
		itemOf = append(itemOf, i)
	}
	var err error
	if len(items) > 0 {
		if bs, ok := w.dst.(BlobStore); ok {
			err = putTo(w.ctx, bs, items)
		} else {
			var errs []error
			for _, i := range itemOf {
				if e := w.dst.Put(w.ctx, batch[i].chunk); e != nil {
					errs = append(errs, e)
				}
			}
			err = errors.Join(errs...)
		}
	}
	if err != nil && !errors.Is(err, ErrNotAdmitted) {
		// A batch write fails or succeeds per destination tier, not per
		// chunk: report every chunk of the batch.
		w.log.Warn("writeback_failed", "chunks", len(items), "err", err)
		for _, i := range itemOf {
			fails = append(fails, WriteFailure{Key: batch[i].chunk.Key, Bytes: batch[i].bytes, Err: err})
		}
	}
	w.failed.Add(int64(len(fails)))
	w.written.Add(int64(len(batch) - len(fails)))
	w.mu.Lock()
	for _, it := range batch {
		delete(w.inflight, it.seq)
		w.queued -= it.bytes // in-flight chunks count against the budget until written
	}
	w.failures = append(w.failures, fails...)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// lowestPending is the smallest sequence number not yet written (or
// failed); callers hold mu.
func (w *WriteBack) lowestPending() uint64 {
	low := w.seq + 1
	if len(w.queue) > 0 {
		low = min(low, w.queue[0].seq)
	}
	for s := range w.inflight {
		low = min(low, s)
	}
	return low
}

// Flush waits until every chunk accepted before the call has been written
// or has failed, or ctx ends. The report lists failures since the last
// report and, if ctx ended first, the chunks still pending.
func (w *WriteBack) Flush(ctx context.Context) (FlushReport, error) {
	w.mu.Lock()
	target := w.seq
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	for {
		w.mu.Lock()
		done := w.lowestPending() > target
		ch := w.changed
		if done {
			rep := w.reportLocked()
			w.mu.Unlock()
			return rep, nil
		}
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			w.mu.Lock()
			rep := w.reportLocked()
			for _, it := range w.queue {
				if it.seq <= target {
					rep.Pending = append(rep.Pending, it.chunk.Key)
				}
			}
			w.mu.Unlock()
			return rep, fmt.Errorf("write-back flush: %d chunk(s) still pending: %w", len(rep.Pending), ctx.Err())
		}
	}
}

func (w *WriteBack) reportLocked() FlushReport {
	rep := FlushReport{Written: w.written.Load(), Failed: w.failures}
	w.failures = nil
	return rep
}

// Close stops accepting chunks, flushes what was accepted until ctx ends,
// then stops the workers (a write in progress ends when its tier's I/O
// returns: the tiers bound it with their own timeouts). Every accepted
// chunk is then accounted for: written, in Failed, or — never attempted —
// in Pending.
func (w *WriteBack) Close(ctx context.Context) (FlushReport, error) {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return FlushReport{}, nil
	}
	w.closing = true
	w.mu.Unlock()
	rep, err := w.Flush(ctx)
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	rep.Pending = nil
	for _, it := range w.queue {
		rep.Pending = append(rep.Pending, it.chunk.Key)
	}
	w.queue, w.queued = nil, 0
	rep.Failed = append(rep.Failed, w.failures...)
	rep.Written = w.written.Load()
	w.failures = nil
	w.mu.Unlock()
	return rep, err
}

// Stats returns the queue's counters.
func (w *WriteBack) Stats() WriteBackStats {
	w.mu.Lock()
	n, b := len(w.queue)+len(w.inflight), w.queued
	w.mu.Unlock()
	return WriteBackStats{Accepted: w.accepted.Load(), Rejected: w.rejected.Load(), Written: w.written.Load(), Failed: w.failed.Load(),
		RejectedBytes: w.rejectedBytes.Load(), QueuedItems: n, QueuedBytes: b}
}
