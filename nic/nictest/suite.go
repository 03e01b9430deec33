package nictest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// Config asks a backend for a device of a particular shape. Zero fields
// mean the backend's defaults. A backend honours what it can; the suite
// reads Info for what it got (and needs TableCapacity honoured to test
// eviction on a small table).
type Config struct {
	TableCapacity        int
	RequestQueueDepth    int
	CompletionQueueDepth int
}

// Harness is how the suite reaches one backend.
type Harness struct {
	// Open returns a fresh device with an empty table, shaped by c. The
	// suite closes it; Open registers any other cleanup with t.
	Open func(t *testing.T, c Config) nic.Device
	// BAR returns the device's register window for the register-level
	// fault tests. Nil for backends without one (xdp): those tests do not
	// apply and are not run.
	BAR func(d nic.Device) *nic.Region
	// FixedShape says the backend cannot honour Config (a real card runs
	// the geometry its image has): the suite then works with the device's
	// own table capacity instead of failing.
	FixedShape bool
}

// Run runs the whole suite against h's backend.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("nictest: Harness.Open is nil")
	}
	t.Run("Info", func(t *testing.T) { testInfo(t, h) })
	t.Run("Random", func(t *testing.T) { testRandom(t, h) })
	t.Run("Adversarial", func(t *testing.T) { testAdversarial(t, h) })
	t.Run("Tenants", func(t *testing.T) { testTenants(t, h) })
	t.Run("Capacity", func(t *testing.T) { testCapacity(t, h) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, h) })
	t.Run("Backpressure", func(t *testing.T) { testBackpressure(t, h) })
	t.Run("Cancel", func(t *testing.T) { testCancel(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("Stats", func(t *testing.T) { testStats(t, h) })
	t.Run("Close", func(t *testing.T) { testClose(t, h) })
	if h.BAR != nil {
		t.Run("FaultRecovery", func(t *testing.T) { testFaultRecovery(t, h) })
	}
}

// open opens a device and closes it when the test ends.
func open(t *testing.T, h Harness, c Config) nic.Device {
	t.Helper()
	d := h.Open(t, c)
	if d == nil {
		t.Fatal("Harness.Open returned nil")
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close device: %v", err)
		}
	})
	return d
}

// waitCtx bounds a wait for a device answer, so that a hung device fails
// the test with a message rather than the test binary's timeout.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ask submits one prompt and collects everything the device says.
func ask(t *testing.T, d nic.Device, id uint64, salt matcher.Salt, prompt []matcher.Token) outcome {
	t.Helper()
	ch, err := d.Submit(t.Context(), nic.Request{ID: id, Salt: salt, Tokens: prompt})
	if err != nil {
		t.Fatalf("submit request %d (%d tokens): %v", id, len(prompt), err)
	}
	out, err := collect(waitCtx(t), id, ch)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// expect submits a prompt and compares the answer with the oracle's.
func expect(t *testing.T, tb *table, ix *matcher.Index, id uint64, salt matcher.Salt, prompt []matcher.Token) outcome {
	t.Helper()
	out := ask(t, tb.dev, id, salt, prompt)
	if err := check(tb.info, ix, salt, prompt, out); err != nil {
		t.Fatalf("request %d (%d tokens, salt %s): %v", id, len(prompt), salt, err)
	}
	return out
}

func testInfo(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	info := d.Info()
	if info.Kind == "" || info.Name == "" {
		t.Errorf("Info has no kind or name: %+v", info)
	}
	if info.TableCapacity <= 0 || info.RequestQueueDepth <= 0 {
		t.Errorf("Info.TableCapacity = %d, RequestQueueDepth = %d, want both > 0", info.TableCapacity, info.RequestQueueDepth)
	}
	if !info.Has(nic.CapExactMatch) && !info.Has(nic.CapAnchorOnly) {
		t.Errorf("Info.Capabilities %v lists neither %s nor %s: the suite cannot tell how matches are verified", info.Capabilities, nic.CapExactMatch, nic.CapAnchorOnly)
	}
	if _, err := matcher.New(info.Matcher); err != nil {
		t.Errorf("Info.Matcher %+v is not a valid matcher configuration: %v", info.Matcher, err)
	}
	if st := d.Stats(); st.TableEntries != 0 || st.TableCapacity != info.TableCapacity {
		t.Errorf("fresh device: Stats.TableEntries = %d (want 0), TableCapacity = %d (Info says %d)", st.TableEntries, st.TableCapacity, info.TableCapacity)
	}
}

// testRandom pushes random entries into a table smaller than what is
// offered, removes some, and checks random prompts after every step.
func testRandom(t *testing.T, h Harness) {
	seeds := []uint64{1, 2, 3}
	prompts := 12
	if testing.Short() {
		seeds, prompts = seeds[:2], 8
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			d := open(t, h, Config{TableCapacity: 40})
			tb := newTable(d)
			w := newWorld(t, seed, tb.info.Matcher)
			var all []nic.Entry
			id := uint64(0)
			matched, full := 0, 0
			for round := range 4 {
				var upd nic.IndexUpdate
				for range 20 {
					e := w.randomEntry(t, w.rng.Float64()*100)
					upd.Add = append(upd.Add, e)
					all = append(all, e)
				}
				if round > 0 {
					for range 5 {
						upd.Remove = append(upd.Remove, all[w.rng.IntN(len(all))].Key)
					}
				}
				if err := tb.push(t, upd); errors.Is(err, nic.ErrTableFull) {
					full++
				} else if err != nil {
					t.Fatalf("push index: %v", err)
				}
				ix := tb.oracle(t)
				for range prompts {
					id++
					matched += len(expect(t, tb, ix, id, w.requestSalt(), w.prompt(all)).matches)
				}
			}
			// The workload must exercise what it claims to.
			if matched == 0 || full == 0 {
				t.Fatalf("%d matches and %d full-table pushes over the run: the workload does not exercise matching and eviction", matched, full)
			}
		})
	}
}

// testAdversarial covers inputs that break naive matchers.
func testAdversarial(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 42, tb.info.Matcher)
	minLen, block := w.opts.MinLen, w.opts.BlockSize
	a := w.tenantA
	periodic := func(period, n int) []matcher.Token {
		pat := w.tokens(period)
		out := make([]matcher.Token, n)
		for i := range out {
			out[i] = pat[i%period]
		}
		return out
	}
	base := w.tokens(3 * minLen)
	same := make([]matcher.Token, 2*minLen) // all one token
	for i := range same {
		same[i] = 7
	}
	chain := w.tokens(2*block + block/2)
	entries := []nic.Entry{
		w.entry(t, a, periodic(7, 2*minLen), false, 1),
		w.entry(t, a, base[:2*minLen], false, 1), // overlaps the next one
		w.entry(t, a, base[minLen:], false, 1),
		w.entry(t, a, same, false, 1),
		w.entry(t, a, chain, true, 1),
		w.entry(t, a, chain[block:], false, 1), // the chain's middle as a chunk too
	}
	tb.mustPush(t, nic.IndexUpdate{Add: entries})
	ix := tb.oracle(t)
	near := func(toks []matcher.Token, at int) []matcher.Token {
		c := append([]matcher.Token(nil), toks...)
		c[at] ^= 1
		return c
	}
	cat := func(parts ...[]matcher.Token) []matcher.Token {
		var out []matcher.Token
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := []struct {
		name   string
		prompt []matcher.Token
	}{
		{"periodic", periodic(7, 40*minLen)},
		{"periodic shifted", cat(w.tokens(3), periodic(7, 10*minLen))},
		{"one token repeated", cat(same, same, same, same)},
		{"long repeat", cat(base, base, base, base, base, base)},
		{"overlapping chunks", cat(w.tokens(5), base, w.tokens(5))},
		{"near duplicate first token", near(base, 0)},
		{"near duplicate last token", near(base, len(base)-1)},
		{"near duplicate middle", near(base, len(base)/2)},
		{"shorter than MinLen", base[:minLen-1]},
		{"exactly MinLen", base[:minLen]},
		{"exactly a chunk", base[:2*minLen]},
		{"chunk at the end", cat(w.tokens(minLen/2), base[minLen:])},
		{"prefix chain", cat(chain, w.tokens(minLen))},
		{"prefix chain partial block", chain[:block+block/3]},
		{"prefix chain not at offset 0", cat(w.tokens(1), chain)},
		{"prefix chain broken in block 2", near(chain, block+3)},
		{"one token", w.tokens(1)},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expect(t, tb, ix, uint64(i+1), a, c.prompt)
		})
	}
}

// testTenants: content indexed under one tenant is never found under
// another; shared content is found under every tenant of its model and no
// other model.
func testTenants(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 7, tb.info.Matcher)
	n := 2 * w.opts.MinLen
	onlyA := w.entry(t, w.tenantA, w.tokens(n), false, 1)
	shared := w.entry(t, w.shared, w.tokens(n), false, 1)
	other := w.entry(t, w.otherModel, w.tokens(n), false, 1)
	tb.mustPush(t, nic.IndexUpdate{Add: []nic.Entry{onlyA, shared, other}})
	ix := tb.oracle(t)
	prompt := append(append(append(w.tokens(10), onlyA.Tokens...), shared.Tokens...), other.Tokens...)
	found := func(out outcome, k matcher.ChunkKey) bool {
		for _, m := range out.matches {
			if m.Chunk == k {
				return true
			}
		}
		return false
	}
	for i, c := range []struct {
		salt                  matcher.Salt
		wantA, wantS, wantOth bool
	}{
		{w.tenantA, true, true, false},
		{w.tenantB, false, true, false},
		{w.otherModel, false, false, true},
	} {
		out := expect(t, tb, ix, uint64(i+1), c.salt, prompt)
		if found(out, onlyA.Key) != c.wantA || found(out, shared.Key) != c.wantS || found(out, other.Key) != c.wantOth {
			t.Errorf("salt %s: found tenant-A chunk %v (want %v), shared %v (want %v), other model %v (want %v)",
				c.salt, found(out, onlyA.Key), c.wantA, found(out, shared.Key), c.wantS, found(out, other.Key), c.wantOth)
		}
		for _, m := range out.matches {
			if m.Chunk == shared.Key && !m.Shared {
				t.Errorf("salt %s: match of the shared chunk has Shared=false", c.salt)
			}
		}
	}
}

// testCapacity fills a small table and checks rejection and eviction by
// rank, then that only what is resident matches.
func testCapacity(t *testing.T, h Harness) {
	capacity := 16
	d := open(t, h, Config{TableCapacity: capacity})
	tb := newTable(d)
	if tb.info.TableCapacity != capacity {
		if !h.FixedShape {
			t.Fatalf("backend ignored Config.TableCapacity: Info.TableCapacity = %d, want %d", tb.info.TableCapacity, capacity)
		}
		capacity = tb.info.TableCapacity
	}
	w := newWorld(t, 11, tb.info.Matcher)
	chunk := func(rank float64) nic.Entry { return w.entry(t, w.tenantA, w.tokens(w.opts.MinLen+8), false, rank) }
	var all []nic.Entry
	var fill nic.IndexUpdate
	for i := range capacity {
		e := chunk(float64(i + 1))
		fill.Add = append(fill.Add, e)
		all = append(all, e)
	}
	if err := tb.push(t, fill); err != nil {
		t.Fatalf("fill the table to capacity: %v", err)
	}
	// Lower than everything: rejected, table unchanged.
	low := chunk(0.5)
	all = append(all, low)
	err := tb.push(t, nic.IndexUpdate{Add: []nic.Entry{low}})
	var full *nic.TableFullError
	if !errors.As(err, &full) || len(full.Rejected) != 1 || full.Rejected[0] != low.Key || len(full.Evicted) != 0 {
		t.Fatalf("insert below every rank into a full table: err = %v, want a TableFullError rejecting only it", err)
	}
	if tb.info.Has(nic.CapEvictByRank) {
		// Higher than everything: the lowest-ranked entry goes.
		high := chunk(float64(capacity) + 100)
		all = append(all, high)
		err = tb.push(t, nic.IndexUpdate{Add: []nic.Entry{high}})
		if !errors.As(err, &full) || len(full.Evicted) != 1 || full.Evicted[0] != fill.Add[0].Key || len(full.Rejected) != 0 {
			t.Fatalf("insert above every rank into a full table: err = %v, want a TableFullError evicting only the rank-1 entry", err)
		}
		// A batch of mixed ranks: every one that beats the lowest gets in.
		var mixed nic.IndexUpdate
		for _, r := range []float64{3.5, 50, 0.25, 60, 2.5, 70, 1.5} {
			e := chunk(r)
			mixed.Add = append(mixed.Add, e)
			all = append(all, e)
		}
		if err := tb.push(t, mixed); !errors.Is(err, nic.ErrTableFull) {
			t.Fatalf("mixed-rank batch into a full table: err = %v, want ErrTableFull", err)
		}
	}
	// Removal makes room; a low rank fits again.
	var rm nic.IndexUpdate
	n := 0
	for k := range tb.resident {
		if n == 3 {
			break
		}
		rm.Remove = append(rm.Remove, k)
		n++
	}
	rm.Add = []nic.Entry{chunk(0.1)}
	all = append(all, rm.Add...)
	if err := tb.push(t, rm); err != nil {
		t.Fatalf("remove 3 and add 1 into the freed room: %v", err)
	}
	if got := d.Stats().TableEntries; got != capacity-2 {
		t.Errorf("after removing 3 and adding 1: TableEntries = %d, want %d", got, capacity-2)
	}
	// Removing what is not there is not an error.
	if err := tb.push(t, nic.IndexUpdate{Remove: []matcher.ChunkKey{low.Key}}); err != nil {
		t.Errorf("remove an absent key: %v", err)
	}
	// Only resident entries match. Prompts hold every entry offered once,
	// as many per prompt as the device takes.
	ix := tb.oracle(t)
	limit := 1 << 16
	if m := tb.info.MaxRequestTokens; m > 0 {
		limit = min(limit, m)
	}
	matched := 0
	var prompt []matcher.Token
	flush := func() {
		out := expect(t, tb, ix, uint64(matched+1), w.tenantA, prompt)
		for _, m := range out.matches {
			if _, ok := tb.resident[m.Chunk]; !ok {
				t.Errorf("device matched %s, which is not in its table", m.Chunk)
			}
		}
		matched += len(out.matches)
		prompt = prompt[:0]
	}
	for _, e := range all {
		if len(prompt)+len(e.Tokens)+3 > limit {
			flush()
		}
		prompt = append(prompt, e.Tokens...)
		prompt = append(prompt, w.tokens(3)...)
	}
	flush()
	if matched != len(tb.resident) {
		t.Errorf("prompts hold every entry once: %d matches, %d resident entries", matched, len(tb.resident))
	}
}

// testBadInput: every bad request or entry is refused with ErrBadRequest
// before anything changes.
func testBadInput(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 13, tb.info.Matcher)
	good := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen+1), false, 1)
	tb.mustPush(t, nic.IndexUpdate{Add: []nic.Entry{good}})

	submits := []struct {
		name string
		req  nic.Request
		also error
	}{
		{"empty prompt", nic.Request{ID: 1, Salt: w.tenantA}, nil},
		{"zero salt", nic.Request{ID: 2, Tokens: w.tokens(10)}, matcher.ErrZeroSalt},
	}
	if limit := tb.info.MaxRequestTokens; limit > 0 {
		submits = append(submits, struct {
			name string
			req  nic.Request
			also error
		}{"prompt over MaxRequestTokens", nic.Request{ID: 3, Salt: w.tenantA, Tokens: make([]matcher.Token, limit+1)}, nil})
	}
	for _, c := range submits {
		ch, err := d.Submit(t.Context(), c.req)
		if !errors.Is(err, nic.ErrBadRequest) || ch != nil {
			t.Errorf("submit %s: err = %v, channel %v; want ErrBadRequest and no channel", c.name, err, ch)
		}
		if c.also != nil && !errors.Is(err, c.also) {
			t.Errorf("submit %s: err = %v, want it to wrap %v too", c.name, err, c.also)
		}
	}

	wrongKey := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, 1)
	wrongKey.Key[0] ^= 1
	nan := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, math.NaN())
	short := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, 1)
	short.Tokens = short.Tokens[:w.opts.MinLen-1]
	short.Key = nic.EntryKey(short, w.opts.BlockSize)
	zero := nic.Entry{Tokens: w.tokens(w.opts.MinLen), Rank: 1}
	zero.Key = nic.EntryKey(zero, w.opts.BlockSize)
	empty := nic.Entry{Salt: w.tenantA, Rank: 1}
	adds := []struct {
		name string
		e    nic.Entry
	}{
		{"key not of its tokens", wrongKey}, {"NaN rank", nan}, {"shorter than MinLen", short},
		{"zero salt", zero}, {"no tokens", empty},
	}
	if limit := tb.info.MaxEntryTokens; limit > 0 {
		long := w.entry(t, w.tenantA, w.tokens(limit+1), false, 1)
		adds = append(adds, struct {
			name string
			e    nic.Entry
		}{"over MaxEntryTokens", long})
	}
	fine := w.entry(t, w.tenantB, w.tokens(w.opts.MinLen+2), false, 1)
	for _, c := range adds {
		// A bad entry fails the whole update: the good one beside it and
		// the removal are not applied either.
		err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{fine, c.e}, Remove: []matcher.ChunkKey{good.Key}})
		if !errors.Is(err, nic.ErrBadRequest) {
			t.Errorf("push %s: err = %v, want ErrBadRequest", c.name, err)
		}
		if got := d.Stats().TableEntries; got != 1 {
			t.Errorf("push %s: TableEntries = %d after a refused update, want 1", c.name, got)
		}
	}
	ix := tb.oracle(t)
	out := expect(t, tb, ix, 10, w.tenantA, append(w.tokens(4), good.Tokens...))
	if len(out.matches) != 1 {
		t.Errorf("after refused updates the good entry matches %d times, want 1", len(out.matches))
	}
}

// testBackpressure stops reading while submitting: the device must refuse
// with ErrQueueFull within a bounded number of submissions, and everything
// it accepted must then complete correctly.
func testBackpressure(t *testing.T, h Harness) {
	d := open(t, h, Config{RequestQueueDepth: 4, CompletionQueueDepth: 8})
	tb := newTable(d)
	w := newWorld(t, 17, tb.info.Matcher)
	var upd nic.IndexUpdate
	var prompt []matcher.Token
	for range 40 {
		e := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, 1)
		upd.Add = append(upd.Add, e)
		prompt = append(prompt, e.Tokens...)
	}
	tb.mustPush(t, upd)
	ix := tb.oracle(t)
	const limit = 4096
	var chans []<-chan nic.Event
	refused := 0
	before := d.Stats().Backpressure
	for len(chans) < limit {
		ch, err := d.Submit(t.Context(), nic.Request{ID: uint64(len(chans)), Salt: w.tenantA, Tokens: prompt})
		if errors.Is(err, nic.ErrQueueFull) {
			refused++
			break
		}
		if err != nil {
			t.Fatalf("submit %d: %v", len(chans), err)
		}
		chans = append(chans, ch)
	}
	if refused == 0 {
		t.Fatalf("%d submissions without reading any event were all accepted: the device queues without bound", limit)
	}
	if got := d.Stats().Backpressure - before; got < uint64(refused) {
		t.Errorf("Stats.Backpressure grew by %d, %d submissions were refused", got, refused)
	}
	t.Logf("refused after %d accepted submissions (Info: request depth %d, completion depth %d)", len(chans), tb.info.RequestQueueDepth, tb.info.CompletionQueueDepth)
	for i, ch := range chans {
		out, err := collect(waitCtx(t), uint64(i), ch)
		if err != nil {
			t.Fatal(err)
		}
		if err := check(tb.info, ix, w.tenantA, prompt, out); err != nil {
			t.Fatalf("request %d accepted under backpressure: %v", i, err)
		}
	}
	// Drained: the device takes work again.
	expect(t, tb, ix, limit+1, w.tenantA, prompt)
}

// testCancel: a cancelled request's channel closes, and the device goes on.
func testCancel(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 19, tb.info.Matcher)
	e := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, 1)
	tb.mustPush(t, nic.IndexUpdate{Add: []nic.Entry{e}})
	ix := tb.oracle(t)
	prompt := append(w.tokens(9), e.Tokens...)
	for i := range 8 {
		ctx, cancel := context.WithCancel(t.Context())
		ch, err := d.Submit(ctx, nic.Request{ID: uint64(i), Salt: w.tenantA, Tokens: prompt})
		if err != nil {
			cancel()
			t.Fatalf("submit: %v", err)
		}
		cancel()
		// The channel must close; if the request ended early, with the
		// context's error.
		var last nic.Event
		wait := waitCtx(t)
	drain:
		for {
			select {
			case ev, ok := <-ch:
				if !ok {
					break drain
				}
				last = ev
			case <-wait.Done():
				t.Fatalf("request %d: channel not closed after its context was cancelled", i)
			}
		}
		if last.Kind == nic.EventError && !errors.Is(last.Err, context.Canceled) {
			t.Errorf("request %d: cancelled request ended with %v, want context.Canceled", i, last.Err)
		}
	}
	expect(t, tb, ix, 100, w.tenantA, prompt)
	// A request whose deadline has passed fails the same way.
	ch, err := d.Submit(t.Context(), nic.Request{ID: 101, Salt: w.tenantA, Tokens: prompt, Deadline: time.Now().Add(-time.Second)})
	if err != nil {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("submit with a past deadline: %v", err)
		}
	} else if _, err := collect(waitCtx(t), 101, ch); err != nil {
		t.Fatal(err)
	}
}

// testConcurrent submits from several goroutines at once.
func testConcurrent(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 23, tb.info.Matcher)
	var upd nic.IndexUpdate
	for range 30 {
		upd.Add = append(upd.Add, w.randomEntry(t, 1))
	}
	tb.mustPush(t, upd)
	ix := tb.oracle(t)
	type job struct {
		salt   matcher.Salt
		prompt []matcher.Token
	}
	const workers, each = 4, 8
	jobs := make([][]job, workers)
	for g := range jobs {
		for range each {
			jobs[g] = append(jobs[g], job{w.requestSalt(), w.prompt(upd.Add)})
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, j := range jobs[g] {
				id := uint64(g*1000 + i)
				for {
					ch, err := d.Submit(t.Context(), nic.Request{ID: id, Salt: j.salt, Tokens: j.prompt})
					if errors.Is(err, nic.ErrQueueFull) {
						runtime.Gosched() // other workers hold the ring; they are reading
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("submit %d: %w", id, err)
						return
					}
					out, err := collect(waitCtx(t), id, ch)
					if err == nil {
						err = check(tb.info, ix, j.salt, j.prompt, out)
					}
					if err != nil {
						errs <- fmt.Errorf("request %d: %w", id, err)
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testStats: the counters add up to what the device reported.
func testStats(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 29, tb.info.Matcher)
	var upd nic.IndexUpdate
	for range 10 {
		upd.Add = append(upd.Add, w.randomEntry(t, 1))
	}
	tb.mustPush(t, upd)
	ix := tb.oracle(t)
	before := d.Stats()
	var tokens, matches, matched, prefetches uint64
	for i := range 10 {
		p := w.prompt(upd.Add)
		out := expect(t, tb, ix, uint64(i), w.tenantA, p)
		tokens += uint64(len(p))
		matches += uint64(len(out.matches))
		prefetches += uint64(len(out.prefetches))
		for _, m := range out.matches {
			matched += uint64(m.Len)
		}
	}
	after := d.Stats()
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"Requests", after.Requests - before.Requests, 10},
		{"Tokens", after.Tokens - before.Tokens, tokens},
		{"Matches", after.Matches - before.Matches, matches},
		{"TokensMatched", after.TokensMatched - before.TokensMatched, matched},
		{"Prefetches", after.Prefetches - before.Prefetches, prefetches},
	} {
		if c.got != c.want {
			t.Errorf("Stats.%s grew by %d, the device reported %d", c.name, c.got, c.want)
		}
	}
	if after.TableEntries != len(tb.resident) {
		t.Errorf("Stats.TableEntries = %d, want %d", after.TableEntries, len(tb.resident))
	}
}

// testClose: a closed device refuses work with ErrClosed; Close twice is
// fine.
func testClose(t *testing.T, h Harness) {
	d := h.Open(t, Config{})
	w := newWorld(t, 31, d.Info().Matcher)
	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if _, err := d.Submit(t.Context(), nic.Request{Salt: w.tenantA, Tokens: w.tokens(5)}); !errors.Is(err, nic.ErrClosed) {
		t.Errorf("submit after close: err = %v, want ErrClosed", err)
	}
	e := w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, 1)
	if err := d.PushIndex(t.Context(), nic.IndexUpdate{Add: []nic.Entry{e}}); !errors.Is(err, nic.ErrClosed) {
		t.Errorf("push index after close: err = %v, want ErrClosed", err)
	}
}

// testFaultRecovery breaks the ring protocol from the host side (CPL_HEAD
// moved past CPL_TAIL): the device must halt, the driver must fail the
// request in flight with a DeviceError, reset the device, and restore the
// table, after which matching works as before.
func testFaultRecovery(t *testing.T, h Harness) {
	d := open(t, h, Config{})
	tb := newTable(d)
	w := newWorld(t, 37, tb.info.Matcher)
	var upd nic.IndexUpdate
	for range 5 {
		upd.Add = append(upd.Add, w.entry(t, w.tenantA, w.tokens(w.opts.MinLen), false, 1))
	}
	tb.mustPush(t, upd)
	ix := tb.oracle(t)
	var prompt []matcher.Token
	for _, e := range upd.Add {
		prompt = append(prompt, e.Tokens...)
	}
	expect(t, tb, ix, 1, w.tenantA, prompt)
	bar := h.BAR(d)
	before := d.Stats()
	bar.Store32(nic.RegCplHead, bar.Load32(nic.RegCplTail)+5)
	ch, err := d.Submit(t.Context(), nic.Request{ID: 2, Salt: w.tenantA, Tokens: prompt})
	if err != nil {
		t.Fatalf("submit to a device about to halt: %v", err)
	}
	out, err := collect(waitCtx(t), 2, ch)
	if err != nil {
		t.Fatal(err)
	}
	var de *nic.DeviceError
	if !errors.As(out.err, &de) || !de.Fatal || !errors.Is(out.err, nic.ErrDeviceFault) {
		t.Fatalf("request on a halted device ended with %v (done %v), want a fatal *nic.DeviceError", out.err, out.done)
	}
	// The recovery finishes before the next submission is accepted.
	ctx := waitCtx(t)
	for {
		ch, err = d.Submit(ctx, nic.Request{ID: 3, Salt: w.tenantA, Tokens: prompt})
		if !errors.Is(err, nic.ErrQueueFull) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("device still resetting: %v", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("submit after recovery: %v", err)
	}
	out, err = collect(waitCtx(t), 3, ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(tb.info, ix, w.tenantA, prompt, out); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	after := d.Stats()
	if after.Resets <= before.Resets || after.Errors <= before.Errors {
		t.Errorf("after a fault: Resets %d→%d, Errors %d→%d; want both to grow", before.Resets, after.Resets, before.Errors, after.Errors)
	}
	if after.Requests < before.Requests {
		t.Errorf("Stats.Requests went backwards across the reset: %d → %d", before.Requests, after.Requests)
	}
	if got := bar.Load32(nic.RegErrStatus); got != 0 {
		t.Errorf("ERR_STATUS = %#x after the reset, want 0", got)
	}
}
