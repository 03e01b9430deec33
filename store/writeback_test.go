package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
)

func chunkBytes(c *kvcache.Chunk) int64 {
	var n int64
	for _, l := range c.Layers {
		n += int64(len(l))
	}
	return n
}

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
	var cs []*kvcache.Chunk
	for i := range 20 {
		c := makeChunk(t, spec, 64, uint64(i))
		if err := w.Offer(c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
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

// A full queue rejects at once (counted) instead of blocking or growing;
// Close under a deadline reports what it could not write. The destination
// is a Redis server paused with CLIENT PAUSE: writes hang for real.
func TestWriteBackBoundedAndClose(t *testing.T) {
	srv := testutil.StartRedis(t)
	spec := smallSpec(t)
	r := openRedis(t, RedisOptions{BlobOptions: BlobOptions{Model: spec}, URL: srv.URL()})
	c0 := makeChunk(t, spec, 64, 0)
	w, err := NewWriteBack(r, WriteBackOptions{BlobOptions: BlobOptions{Model: spec}, MaxBytes: 4 * chunkBytes(c0), Linger: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv.Do(t, "CLIENT", "PAUSE", "1000", "WRITE")
	var accepted, rejected int
	start := time.Now()
	for i := range 10 {
		err := w.Offer(makeChunk(t, spec, 64, uint64(i)))
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, ErrQueueFull):
			rejected++
		default:
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Fatalf("10 offers took %v: Offer must not block", el)
	}
	st := w.Stats()
	if accepted != 4 || rejected != 6 || st.Rejected != 6 || st.QueuedBytes > 4*chunkBytes(c0) {
		t.Fatalf("accepted %d rejected %d, stats %+v: want 4 and 6 within the budget", accepted, rejected, st)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	rep, err := w.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close while the destination hangs: %v", err)
	}
	if int(rep.Written)+len(rep.Pending)+len(rep.Failed) != 4 || len(rep.Pending) == 0 {
		t.Fatalf("close report %+v: want the 4 accepted chunks accounted for as written, failed or pending, some pending", rep)
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
