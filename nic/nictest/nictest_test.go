package nictest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// These tests check the checker: a device that gets matching wrong in any
// of the ways below must fail the suite's comparison.

// mutate rewrites a correct outcome the way a broken device would.
type mutation struct {
	name string
	f    func(o *outcome)
	want string // what check's error must say
}

func TestCheckCatchesBrokenDevices(t *testing.T) {
	d, err := simnic.New(t.Context(), simnic.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb := newTable(d)
	w := newWorld(t, 5, tb.info.Matcher)
	var upd nic.IndexUpdate
	for range 3 {
		upd.Add = append(upd.Add, w.entry(t, w.tenantA, w.tokens(w.opts.MinLen+10), false, 1))
	}
	tb.mustPush(t, upd)
	ix := tb.oracle(t)
	prompt := append(append(append([]matcher.Token{}, upd.Add[0].Tokens...), w.tokens(5)...), upd.Add[1].Tokens...)
	good := ask(t, d, 1, w.tenantA, prompt)
	if err := check(tb.info, ix, w.tenantA, prompt, good); err != nil {
		t.Fatalf("a correct device fails the check: %v", err)
	}
	if len(good.matches) != 2 || len(good.prefetches) != 2 {
		t.Fatalf("the correct outcome has %d matches and %d prefetches, want 2 and 2", len(good.matches), len(good.prefetches))
	}
	mutations := []mutation{
		{"missed match", func(o *outcome) { o.matches = o.matches[1:] }, "misses"},
		{"invented match", func(o *outcome) {
			m := o.matches[0]
			m.Len--
			o.matches = append(o.matches, m)
		}, "which the matcher does not"},
		{"wrong chunk offset", func(o *outcome) { o.matches[0].ChunkOff++ }, "which the matcher does not"},
		{"duplicate match", func(o *outcome) { o.matches = append(o.matches, o.matches[0]) }, "duplicates"},
		{"shared flag", func(o *outcome) { o.matches[1].Shared = true }, "which the matcher does not"},
		{"missing prefetch", func(o *outcome) { o.prefetches = o.prefetches[:1] }, "did not prefetch"},
		{"double prefetch", func(o *outcome) { o.prefetches = append(o.prefetches, o.prefetches[0]) }, "twice"},
		{"stray prefetch", func(o *outcome) { o.prefetches = append(o.prefetches, upd.Add[2].Key) }, "did not match"},
		{"truncated flag", func(o *outcome) { o.done.Truncated = true }, "truncated"},
		{"failed request", func(o *outcome) { o.err = errors.New("boom") }, "failed"},
	}
	for _, m := range mutations {
		o := good
		o.matches = append([]matcher.Match(nil), good.matches...)
		o.prefetches = append([]matcher.ChunkKey(nil), good.prefetches...)
		done := *good.done
		o.done = &done
		m.f(&o)
		err := check(tb.info, ix, w.tenantA, prompt, o)
		if err == nil || !strings.Contains(err.Error(), m.want) {
			t.Errorf("%s: check = %v, want an error saying %q", m.name, err, m.want)
		}
	}
	// A device that reports matches although the matcher gives up.
	if err := check(tb.info, ix, w.tenantA, []matcher.Token{}, good); err == nil {
		t.Errorf("check accepted an answer for a prompt the oracle refuses")
	}
}

func TestCollectChecksShape(t *testing.T) {
	ev := func(kind nic.EventKind, id uint64) nic.Event {
		e := nic.Event{Kind: kind, RequestID: id}
		if kind == nic.EventError {
			e.Err = errors.New("x")
		}
		return e
	}
	cases := []struct {
		name   string
		events []nic.Event
		close  bool
		want   string
	}{
		{"closed without terminal", []nic.Event{ev(nic.EventMatch, 1)}, true, "without EventDone"},
		{"event after done", []nic.Event{ev(nic.EventDone, 1), ev(nic.EventMatch, 1)}, true, "after the terminal"},
		{"wrong request id", []nic.Event{ev(nic.EventMatch, 2)}, true, "carries request id 2"},
		{"error without error", []nic.Event{{Kind: nic.EventError, RequestID: 1}}, true, "without an error"},
		{"unknown kind", []nic.Event{{Kind: 99, RequestID: 1}}, true, "unknown event kind"},
		{"never closed", []nic.Event{ev(nic.EventDone, 1)}, false, "not closed"},
	}
	for _, c := range cases {
		ch := make(chan nic.Event, len(c.events))
		for _, e := range c.events {
			ch <- e
		}
		if c.close {
			close(ch)
		}
		ctx, cancel := context.WithCancel(t.Context())
		if !c.close {
			cancel() // a channel that never closes: give up at once
		}
		_, err := collect(ctx, 1, ch)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: collect = %v, want an error saying %q", c.name, err, c.want)
		}
	}
}
