package nictest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// table is the suite's model of what a device's table holds: every entry
// it accepted, minus what it removed, evicted or rejected.
type table struct {
	dev      nic.Device
	info     nic.Info
	resident map[matcher.ChunkKey]nic.Entry
	// gone are entries the device rejected or evicted, with their ranks,
	// for the rank-order check.
	gone map[matcher.ChunkKey]float64
}

func newTable(dev nic.Device) *table {
	return &table{dev: dev, info: dev.Info(), resident: map[matcher.ChunkKey]nic.Entry{}, gone: map[matcher.ChunkKey]float64{}}
}

// push applies upd on the device and on the model, checks what the device
// says against the contract, and returns the device's error.
func (tb *table) push(t *testing.T, upd nic.IndexUpdate) error {
	t.Helper()
	before := len(tb.resident)
	err := tb.dev.PushIndex(t.Context(), upd)
	if err != nil && !errors.Is(err, nic.ErrTableFull) {
		return err
	}
	// Ranks are comparable only while the table stays full: a removal or a
	// re-ranked entry lets a lower rank in legitimately.
	reset := len(upd.Remove) > 0
	for _, e := range upd.Add {
		if _, ok := tb.resident[e.Key]; ok {
			reset = true
		}
	}
	if reset {
		clear(tb.gone)
	}
	offered := map[matcher.ChunkKey]nic.Entry{}
	for _, k := range upd.Remove {
		delete(tb.resident, k)
	}
	for _, e := range upd.Add {
		tb.resident[e.Key] = e
		offered[e.Key] = e
		delete(tb.gone, e.Key)
	}
	if err != nil {
		var full *nic.TableFullError
		if !errors.As(err, &full) {
			t.Fatalf("push index: error %v Is ErrTableFull but is not a *nic.TableFullError", err)
		}
		if full.Capacity != tb.info.TableCapacity {
			t.Errorf("push index: TableFullError.Capacity = %d, Info.TableCapacity = %d", full.Capacity, tb.info.TableCapacity)
		}
		for _, k := range full.Rejected {
			e, ok := offered[k]
			if !ok {
				t.Fatalf("push index: rejected key %s was not in the update", k)
			}
			delete(tb.resident, k)
			tb.gone[k] = e.Rank
		}
		for _, k := range full.Evicted {
			e, ok := tb.resident[k]
			if !ok {
				t.Fatalf("push index: evicted key %s was not in the table", k)
			}
			delete(tb.resident, k)
			tb.gone[k] = e.Rank
		}
		if len(full.Rejected)+len(full.Evicted) == 0 {
			t.Errorf("push index: TableFullError names nothing rejected or evicted")
		}
		if !tb.info.Has(nic.CapEvictByRank) && len(full.Evicted) > 0 {
			t.Errorf("push index: device without %s evicted %d entries", nic.CapEvictByRank, len(full.Evicted))
		}
	}
	if len(tb.resident) > tb.info.TableCapacity {
		t.Fatalf("push index: the device accepted %d entries, capacity %d (before the update: %d)", len(tb.resident), tb.info.TableCapacity, before)
	}
	if got := tb.dev.Stats().TableEntries; got != len(tb.resident) {
		t.Fatalf("push index: Stats.TableEntries = %d, the device's own reports leave %d", got, len(tb.resident))
	}
	if tb.info.Has(nic.CapEvictByRank) {
		tb.checkRankOrder(t)
	}
	return err
}

// checkRankOrder: a device that evicts by rank keeps the highest-ranked
// entries it was offered — nothing it let go ranks above anything it kept,
// unless the kept one was offered after (a later, lower-ranked insert into
// free space is fine: room appeared by removal).
func (tb *table) checkRankOrder(t *testing.T) {
	t.Helper()
	if len(tb.resident) < tb.info.TableCapacity {
		clear(tb.gone) // room left: nothing had to go for rank reasons
		return
	}
	lowest := math.Inf(1)
	for _, e := range tb.resident {
		lowest = min(lowest, e.Rank)
	}
	for k, r := range tb.gone {
		if r > lowest {
			t.Errorf("push index: full table keeps an entry of rank %g but let %s of rank %g go", lowest, k, r)
		}
	}
}

// mustPush is push that fails the test on anything but ErrTableFull.
func (tb *table) mustPush(t *testing.T, upd nic.IndexUpdate) {
	t.Helper()
	if err := tb.push(t, upd); err != nil && !errors.Is(err, nic.ErrTableFull) {
		t.Fatalf("push index: %v", err)
	}
}

// oracle builds a matcher index holding exactly the resident entries, with
// the device's matcher parameters.
func (tb *table) oracle(t *testing.T) *matcher.Index {
	t.Helper()
	ix, err := matcher.New(tb.info.Matcher)
	if err != nil {
		t.Fatalf("build oracle with the device's matcher options %+v: %v", tb.info.Matcher, err)
	}
	entries := make([]matcher.Entry, 0, len(tb.resident))
	for _, e := range tb.resident {
		entries = append(entries, matcher.Entry{Salt: e.Salt, Tokens: e.Tokens, Prefix: e.Prefix})
	}
	keys, err := ix.Add(entries...)
	if err != nil {
		t.Fatalf("build oracle: %v", err)
	}
	for i, k := range keys {
		if _, ok := tb.resident[k]; !ok {
			t.Fatalf("build oracle: entry %d has key %s, which the table does not hold", i, k)
		}
	}
	return ix
}

// outcome is everything a device reported for one request.
type outcome struct {
	matches    []matcher.Match
	prefetches []matcher.ChunkKey
	done       *nic.Event
	err        error
	events     int
}

// collect reads a request's events until the channel closes, checking the
// contract's shape: matches and prefetches, then exactly one Done or Error,
// nothing after it, every event carrying the request's id.
func collect(ctx context.Context, id uint64, ch <-chan nic.Event) (outcome, error) {
	var out outcome
	for {
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("request %d: channel not closed: %w", id, ctx.Err())
		case ev, ok := <-ch:
			if !ok {
				if out.done == nil && out.err == nil {
					return out, fmt.Errorf("request %d: channel closed without EventDone or EventError", id)
				}
				return out, nil
			}
			out.events++
			if out.done != nil || out.err != nil {
				return out, fmt.Errorf("request %d: event %+v after the terminal event", id, ev)
			}
			if ev.RequestID != id {
				return out, fmt.Errorf("request %d: event carries request id %d", id, ev.RequestID)
			}
			switch ev.Kind {
			case nic.EventMatch:
				out.matches = append(out.matches, ev.Match)
			case nic.EventPrefetch:
				out.prefetches = append(out.prefetches, ev.Key)
			case nic.EventDone:
				e := ev
				out.done = &e
			case nic.EventError:
				if ev.Err == nil {
					return out, fmt.Errorf("request %d: EventError without an error", id)
				}
				out.err = ev.Err
			default:
				return out, fmt.Errorf("request %d: unknown event kind %d", id, ev.Kind)
			}
		}
	}
}

// check compares an outcome with the oracle's answer for the same prompt.
func check(info nic.Info, ix *matcher.Index, salt matcher.Salt, prompt []matcher.Token, out outcome) error {
	want, werr := ix.Find(salt, prompt, nil)
	if werr != nil {
		if errors.Is(werr, matcher.ErrTooManyCandidates) {
			if out.err == nil || !errors.Is(out.err, matcher.ErrTooManyCandidates) {
				return fmt.Errorf("the matcher gives up with %v; the device answered %d matches, error %v", werr, len(out.matches), out.err)
			}
			return nil
		}
		return fmt.Errorf("oracle refused the prompt: %v", werr)
	}
	if out.err != nil {
		return fmt.Errorf("device failed the request: %v", out.err)
	}
	got := slices.Clone(out.matches)
	slices.SortFunc(got, matcher.CompareMatches)
	exp := slices.Clone(want.Matches)
	slices.SortFunc(exp, matcher.CompareMatches)
	for _, m := range got {
		if !containsMatch(exp, m) {
			return fmt.Errorf("device reports %s, which the matcher does not (matcher has %d matches)", fmtMatch(m), len(exp))
		}
	}
	if !slices.Equal(got, exp) {
		for _, m := range exp {
			if !containsMatch(got, m) {
				return fmt.Errorf("device misses %s of a resident entry (device %d matches, matcher %d)", fmtMatch(m), len(got), len(exp))
			}
		}
		return fmt.Errorf("device reports %d matches (with duplicates), the matcher %d", len(got), len(exp))
	}
	if out.done.Truncated != want.Truncated {
		return fmt.Errorf("device says truncated=%v, matcher %v", out.done.Truncated, want.Truncated)
	}
	if info.Has(nic.CapPrefetch) {
		seen := map[matcher.ChunkKey]bool{}
		for _, k := range out.prefetches {
			if seen[k] {
				return fmt.Errorf("device prefetched %s twice", k)
			}
			seen[k] = true
		}
		matched := map[matcher.ChunkKey]bool{}
		for _, m := range got {
			matched[m.Chunk] = true
			if !seen[m.Chunk] {
				return fmt.Errorf("device matched %s but did not prefetch it", m.Chunk)
			}
		}
		for k := range seen {
			if !matched[k] {
				return fmt.Errorf("device prefetched %s, which it did not match", k)
			}
		}
	} else if len(out.prefetches) > 0 {
		return fmt.Errorf("device without %s reported %d prefetches", nic.CapPrefetch, len(out.prefetches))
	}
	return nil
}

func containsMatch(ms []matcher.Match, m matcher.Match) bool {
	return slices.ContainsFunc(ms, func(x matcher.Match) bool { return x == m })
}

func fmtMatch(m matcher.Match) string {
	kind := "chunk"
	if m.Prefix {
		kind = "prefix"
	}
	return fmt.Sprintf("%s match [%d,%d) of %s at %d (shared=%v)", kind, m.ReqOff, m.End(), m.Chunk, m.ChunkOff, m.Shared)
}
