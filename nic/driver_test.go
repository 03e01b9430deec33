package nic_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
)

// The driver's tests run it against the simulator's register model, the
// stand-in for a card, and break the protocol from either side.

func salt(t *testing.T) matcher.Salt {
	t.Helper()
	s, err := matcher.NewSalt([]byte("model-01-driver"), "tenant")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func chunk(t *testing.T, seed, n int) nic.Entry {
	t.Helper()
	toks := make([]matcher.Token, n)
	for i := range toks {
		toks[i] = matcher.Token(seed*999_983 + i*31 + 5)
	}
	s := salt(t)
	return nic.Entry{Salt: s, Key: matcher.ChunkKeyOf(s, toks), Tokens: toks, Rank: float64(seed)}
}

func newSim(t *testing.T, opts simnic.Options) *simnic.Device {
	t.Helper()
	d, err := simnic.New(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return d
}

// result collects a request's matches and its terminal error.
func result(t *testing.T, ch <-chan nic.Event) ([]matcher.Match, error) {
	t.Helper()
	var ms []matcher.Match
	var err error
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return ms, err
			}
			switch ev.Kind {
			case nic.EventMatch:
				ms = append(ms, ev.Match)
			case nic.EventError:
				err = ev.Err
			}
		case <-timeout:
			t.Fatal("request never finished")
		}
	}
}

func submit(t *testing.T, d nic.Device, prompt []matcher.Token) <-chan nic.Event {
	t.Helper()
	ch, err := d.Submit(t.Context(), nic.Request{ID: 1, Salt: salt(t), Tokens: prompt})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return ch
}

// TestDriverResetTimeout: a device that never answers the reset handshake
// makes NewDriver fail with ErrTimeout instead of hanging.
func TestDriverResetTimeout(t *testing.T) {
	bar, _ := nic.NewRegion(make([]byte, nic.MinBARSize))
	if _, err := simnic.NewModel(bar, simnic.Options{}); err != nil { // powered on, never served
		t.Fatal(err)
	}
	_, err := nic.NewDriver(t.Context(), bar, nic.DriverOptions{Timeout: 20 * time.Millisecond})
	if !errors.Is(err, nic.ErrTimeout) {
		t.Fatalf("driver on a device that does not answer: %v, want ErrTimeout", err)
	}
	if _, err := nic.NewDriver(t.Context(), bar, nic.DriverOptions{Timeout: time.Millisecond}); !errors.Is(err, nic.ErrTimeout) {
		t.Fatalf("second try on the same silent device: %v, want ErrTimeout", err)
	}
}

// TestDriverForgedCompletion: a completion nobody asked for is a protocol
// violation: the driver resets the device, restores its table, and goes on.
func TestDriverForgedCompletion(t *testing.T) {
	d := newSim(t, simnic.Options{})
	e := chunk(t, 1, 90)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	bar := d.Region()
	tail := bar.Load32(nic.RegCplTail)
	forged := nic.CplEntry{Type: nic.CplDone, Slot: 77, Tag: 77}
	b := make([]byte, nic.CplEntrySize)
	forged.Encode(b)
	bar.Write(nic.WinCplRingOffset+int(tail&(bar.Load32(nic.RegCplRingEntries)-1))*nic.CplEntrySize, b)
	bar.Store32(nic.RegCplTail, tail+1)
	d.Wake()
	testutil.Eventually(t, "reset after a forged completion", func() bool { return d.Stats().Resets == 1 })
	var ms []matcher.Match
	testutil.Eventually(t, "serving after the reset", func() bool {
		ch, err := d.Submit(t.Context(), nic.Request{Salt: e.Salt, Tokens: e.Tokens})
		if errors.Is(err, nic.ErrQueueFull) {
			return false // still resetting
		}
		if err != nil {
			t.Fatalf("submit after reset: %v", err)
		}
		if ms, err = result(t, ch); err != nil {
			t.Fatalf("request after reset: %v", err)
		}
		return true
	})
	if len(ms) != 1 {
		t.Errorf("after the reset the restored table gives %d matches, want 1", len(ms))
	}
	if st := d.Stats(); st.Errors == 0 || st.TableEntries != 1 {
		t.Errorf("stats after the fault: %+v", st)
	}
}

// TestDriverForeignReset: someone else resets the card (EPOCH changes);
// the request that was waiting fails, and the driver recovers.
func TestDriverForeignReset(t *testing.T) {
	d := newSim(t, simnic.Options{})
	e := chunk(t, 2, 90)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	bar := d.Region()
	bar.Store32(nic.RegCtrl, nic.CtrlReset) // another process resets the card
	d.Model().Kick()
	testutil.Eventually(t, "the foreign reset", func() bool { return bar.Load32(nic.RegEpoch) != d.Geometry().Epoch })
	_, err := result(t, submit(t, d, e.Tokens))
	var de *nic.DeviceError
	if !errors.As(err, &de) || !de.Fatal {
		t.Fatalf("request across a foreign reset ended with %v, want a fatal DeviceError", err)
	}
	testutil.Eventually(t, "recovery", func() bool {
		ch, err := d.Submit(t.Context(), nic.Request{Salt: e.Salt, Tokens: e.Tokens})
		if errors.Is(err, nic.ErrQueueFull) {
			return false
		}
		ms, err := result(t, ch)
		if err != nil || len(ms) != 1 {
			t.Fatalf("after recovery: %d matches, %v", len(ms), err)
		}
		return true
	})
}

// TestDriverBufferWrap: requests of mixed sizes cycle through card memory
// smaller than their sum; the FIFO allocator wraps, refuses with
// ErrQueueFull when full, and no request sees another's tokens.
func TestDriverBufferWrap(t *testing.T) {
	d := newSim(t, simnic.Options{BARSize: nic.MinBARSize}) // 512 KiB of card memory: 131072 tokens
	var entries []nic.Entry
	for i := range 4 {
		entries = append(entries, chunk(t, 10+i, 64+i))
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: entries}); err != nil {
		t.Fatal(err)
	}
	sizes := []int{50_000, 30_000, 70_000, 20_000, 90_000, 10_000, 45_000}
	type req struct {
		ch  <-chan nic.Event
		off int
		e   nic.Entry
	}
	var inflight []req
	full := 0
	finish := func() {
		r := inflight[0]
		inflight = inflight[1:]
		ms, err := result(t, r.ch)
		if err != nil || len(ms) != 1 || ms[0].ReqOff != r.off || ms[0].Chunk != r.e.Key {
			t.Fatalf("request with entry at %d: matches %+v, %v", r.off, ms, err)
		}
	}
	for i := range 40 {
		n := sizes[i%len(sizes)]
		e := entries[i%len(entries)]
		prompt := make([]matcher.Token, n)
		for j := range prompt {
			prompt[j] = matcher.Token(1<<30 + i*n + j)
		}
		off := (i * 7919) % (n - len(e.Tokens))
		copy(prompt[off:], e.Tokens)
		for {
			ch, err := d.Submit(t.Context(), nic.Request{ID: uint64(i), Salt: e.Salt, Tokens: prompt})
			if errors.Is(err, nic.ErrQueueFull) {
				full++
				finish()
				continue
			}
			if err != nil {
				t.Fatalf("submit %d: %v", i, err)
			}
			inflight = append(inflight, req{ch, off, e})
			break
		}
	}
	for len(inflight) > 0 {
		finish()
	}
	if full == 0 {
		t.Errorf("card memory never filled: the test did not wrap the buffer")
	}
}

// TestDriverSuspendAndClose: a suspended driver holds work off until
// Reset; Close ends what is in flight with ErrClosed.
func TestDriverSuspendAndClose(t *testing.T) {
	d := newSim(t, simnic.Options{})
	e := chunk(t, 3, 70)
	if err := d.Suspend(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Submit(t.Context(), nic.Request{Salt: e.Salt, Tokens: e.Tokens}); !errors.Is(err, nic.ErrQueueFull) {
		t.Errorf("submit while suspended: %v, want ErrQueueFull", err)
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); !errors.Is(err, nic.ErrQueueFull) {
		t.Errorf("push while suspended: %v, want ErrQueueFull", err)
	}
	if err := d.Reset(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); err != nil {
		t.Fatalf("push after reset: %v", err)
	}
	// Disable the device so that a request stays in flight, then close.
	d.Region().Store32(nic.RegCtrl, 0)
	ch := submit(t, d, e.Tokens)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := result(t, ch); !errors.Is(err, nic.ErrClosed) {
		t.Errorf("request in flight at Close ended with %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := d.Reset(ctx); !errors.Is(err, nic.ErrClosed) && !errors.Is(err, context.Canceled) {
		t.Errorf("reset after close: %v", err)
	}
}
