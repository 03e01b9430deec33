package store

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// Accepted chunks are written (small ones sharing pack files); Flush
// reports what could not be.
func TestWriteBackFlush(t *testing.T) {
	spec := smallSpec(t)
	dir := t.TempDir()
	d := openDisk(t, dir, spec, 64<<20, DiskOptions{})
	w, err := NewWriteBack(d, WriteBackOptions{BlobOptions: BlobOptions{Model: spec}, Linger: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Built beforehand, so that the 20 offers land well within one linger.
	cs := make([]*kvcache.Chunk, 20)
	for i := range cs {
		cs[i] = makeChunk(t, spec, 64, uint64(i))
	}
	for _, c := range cs {
		if err := w.Offer(c); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := w.Flush(t.Context())
	if err != nil || rep.Written != 20 || len(rep.Failed) != 0 {
		t.Fatalf("flush: %+v, %v", rep, err)
	}
	for _, c := range cs {
		mustGet(t, d, c)
	}
	if n := len(packFiles(t, dir, "packs")); n > 3 {
		t.Fatalf("20 small chunks offered at once went into %d pack files, want them batched", n)
	}
	// A chunk the destination refuses is reported, not lost silently.
	other := testSpec(t, 4, 2, 16)
	other.WeightsID = "other"
	bad := makeChunk(t, other, 64, 1)
	if err := w.Offer(bad); err != nil {
		t.Fatal(err)
	}
	rep, err = w.Flush(t.Context())
	if err != nil || len(rep.Failed) != 1 || rep.Failed[0].Key != bad.Key || !errors.Is(rep.Failed[0].Err, kvcache.ErrModelMismatch) {
		t.Fatalf("flush with a refused chunk: %+v, %v", rep, err)
	}
	if _, err := w.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := w.Offer(cs[0]); !errors.Is(err, ErrClosed) {
		t.Fatalf("offer after close: %v", err)
	}
}

// announcingRedis is the Redis tier, telling the test each time the queue
// hands it a batch, with the queue's context: the test then knows, without
// waiting on a clock, that a write is in flight and when Close cancels it.
type announcingRedis struct {
	*Redis
	started chan context.Context
}

func (a announcingRedis) putVerified(ctx context.Context, items []verified) error {
	a.started <- ctx
	return a.Redis.putVerified(ctx, items)
}

// A full queue rejects at once (counted) instead of blocking or growing;
// Close under a deadline reports what it could not write. The destination
// is a Redis server paused with CLIENT PAUSE: writes hang for real, until
// the test unpauses it after Close has given up.
func TestWriteBackBoundedAndClose(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := smallSpec(t)
	// The tier's read timeout outlasts the test, so the paused write hangs
	// until the server is unpaused, however slow the machine is.
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL() + "?read_timeout=1m"})
	dst := announcingRedis{Redis: r, started: make(chan context.Context, 10)}
	chunks := make([]*kvcache.Chunk, 10)
	for i := range chunks {
		chunks[i] = makeChunk(t, spec, 64, uint64(i))
	}
	size := chunkBytes(chunks[0])
	w, err := NewWriteBack(dst, WriteBackOptions{BlobOptions: BlobOptions{Model: spec}, MaxBytes: 4 * size, Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv.Do(t, "CLIENT", "PAUSE", "60000", "WRITE")
	if err := w.Offer(chunks[0]); err != nil {
		t.Fatal(err)
	}
	// The worker has taken chunk 0 alone; its write now hangs on the paused
	// server, and the chunk counts against the budget until written.
	writeCtx := <-dst.started
	// Offer never waits on the destination: were it to, the loop would hang
	// here, behind a write that cannot finish before the server is unpaused.
	var accepted []matcher.ChunkKey
	rejected := 0
	for _, c := range chunks[1:] {
		err := w.Offer(c)
		switch {
		case err == nil:
			accepted = append(accepted, c.Key)
		case errors.Is(err, ErrQueueFull):
			rejected++
		default:
			t.Fatal(err)
		}
	}
	st := w.Stats()
	if len(accepted) != 3 || rejected != 6 || st.Rejected != 6 || st.QueuedItems != 4 || st.QueuedBytes != 4*size {
		t.Fatalf("accepted %d more, rejected %d, stats %+v: want 3 more (4 with the one in flight) and 6 rejected, within the budget",
			len(accepted), rejected, st)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	type closed struct {
		rep FlushReport
		err error
	}
	done := make(chan closed, 1)
	go func() {
		rep, err := w.Close(ctx)
		done <- closed{rep, err}
	}()
	// Close cancels the workers' context once its flush has given up; only
	// then is the server let go, so that the hung write can return and Close
	// can stop the worker.
	<-writeCtx.Done()
	srv.Do(t, "CLIENT", "UNPAUSE")
	res := <-done
	if !errors.Is(res.err, context.DeadlineExceeded) {
		t.Fatalf("close while the destination hangs: %v", res.err)
	}
	// Chunk 0 was in flight: written (the server took it once unpaused) or
	// failed. Chunks 1–3 were never attempted: pending.
	if rep := res.rep; rep.Written+int64(len(rep.Failed)) != 1 || !slices.Equal(rep.Pending, accepted) {
		t.Fatalf("close report %+v: want chunk 0 written or failed and the 3 queued behind it (%v) pending", rep, accepted)
	}
}

func TestWriteBackOptions(t *testing.T) {
	if _, err := NewWriteBack(nil, WriteBackOptions{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("nil destination: %v", err)
	}
	m := newMem(t, smallSpec(t), 1<<20, MemoryOptions{})
	w, err := NewWriteBack(m, WriteBackOptions{MaxBytes: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(t.Context())
	if err := w.Offer(makeChunk(t, smallSpec(t), 64, 1)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("chunk larger than the budget: %v", err)
	}
}
