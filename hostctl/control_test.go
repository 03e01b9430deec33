package hostctl

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/matcher"
)

// TestControlLoopHotChunk: a stored document that keeps appearing in
// prompts (seen through Hint, never yet reused) becomes hot in the sketch,
// and the control loop puts its chunk on the device; a pinned prefix goes
// there too; unpinned and cold, it leaves.
func TestControlLoopHotChunk(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Control.HotMinCount = 2
	dt := startDaemon(t, cfg)
	ctx := t.Context()
	doc := m.prompt("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy.")[1:]
	head := m.prompt("Tom had a red ball.")
	toks := append(slices.Clone(head), doc...)
	storePrompt(t, dt.c, m, "acme", toks, &api.ChunkSpan{Start: int32(len(head)), Length: int32(len(doc))})
	docKey := ""
	for _, q := range []string{"Sue went out to play.", "It was a sunny day in the town.", "Max liked to eat apples."} {
		p := append(m.prompt(q), doc...)
		h, err := dt.c.Hint(ctx, &api.HintRequest{Tenant: "acme", Model: "stories260K", Tokens: p})
		if err != nil {
			t.Fatal(err)
		}
		if h.Prefetching != 1 {
			t.Fatalf("hint started %d fetches, want the document's chunk", h.Prefetching)
		}
		lk, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: p})
		if err != nil || len(lk.Ranges) != 1 {
			t.Fatalf("lookup %v %v", lk, err)
		}
		docKey = lk.Ranges[0].Chunk
	}
	top := waitTop(t, dt, func(h *api.HotEntry) bool { return h.Chunk == docKey && !h.Prefix && h.OnDevice && h.Benefit > 0 })
	t.Logf("hot: %v", top)

	// Pin the stored prompt's prefix: it goes on the device regardless.
	pin, err := dt.c.Pin(ctx, &api.PinRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil || pin.Entries == 0 {
		t.Fatalf("pin %v %v", pin, err)
	}
	waitTop(t, dt, func(h *api.HotEntry) bool { return h.Pinned && h.Prefix && h.OnDevice })
	if _, err := dt.c.Pin(ctx, &api.PinRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Unpin: true}); err != nil {
		t.Fatal(err)
	}
	waitTop(t, dt, func(h *api.HotEntry) bool { return !h.Pinned })
}

func waitTop(t *testing.T, dt *daemonT, ok func(*api.HotEntry) bool) []*api.HotEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := dt.c.Stats(t.Context(), &api.StatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range st.Control.Top {
			if ok(h) {
				return st.Control.Top
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("control loop never decided as expected: %v", st.Control)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShutdownCancelsAtDeadline: a call still running at the drain deadline
// is cancelled and counted; what Store accepted is flushed.
func TestShutdownCancelsAtDeadline(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	d, err := New(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := d.ListenUnix()
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- d.Serve(context.Background(), lis) }()
	conn, err := Dial(cfg.SocketPath(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := api.NewKVLoomClient(conn)
	toks := m.prompt(story)
	if _, err := StoreKV(t.Context(), c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, m.prefill(t, toks), 0); err != nil {
		t.Fatal(err)
	}
	stream, err := c.Store(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Header{Header: &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the Store stream to be in flight", func() bool { return d.inflight() != 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	rep, err := d.Shutdown(ctx)
	if err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if rep.Cancelled != 1 || rep.Unflushed != 0 || rep.Flushed < len(toks)/16 {
		t.Fatalf("report %+v", rep)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("shutdown took %v", el)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := stream.CloseAndRecv(); err == nil {
		t.Fatal("the cut Store succeeded")
	}
	// A restart finds the stored prompt on disk.
	d2, err := New(t.Context(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Shutdown(context.Background())
	lk, err := d2.Lookup(t.Context(), &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil || lk.ReusableTokens != int32(len(toks)/16*16) || lk.Ranges[0].Source != api.Source_SOURCE_DISK {
		t.Fatalf("after restart: %v %v", lk, err)
	}
}

// TestPruneEvictedEntries: entries whose chunks every tier has dropped
// leave the index (and give their bytes back), so the index stays bounded.
func TestPruneEvictedEntries(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Tiers = "mem:64MiB"
	cfg.Limits.MaxIndexEntries = 1
	dt := startDaemon(t, cfg)
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	other := m.prompt("A big fish swam in the blue sea and found a shiny shell on the sand near the rocks.")
	_, err := StoreKV(t.Context(), dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: other}, m.prefill(t, other), 0)
	wantCode(t, err, codes.ResourceExhausted, "max_index_entries")
	// The tiers lose the chunks (as an eviction would).
	keys, err := matcher.PrefixKeys(dt.d.owners.snapshotSalt(t), toks, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := dt.d.st.delete(t.Context(), keys); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the entry whose chunks are gone to be pruned", func() bool { return dt.d.index.Len() == 0 })
	storePrompt(t, dt.c, m, "acme", other)
}

// TestHotSpanMaterialized: two prompts share a long span at different
// offsets and nobody declared it. The hot sketch sees it twice; the control
// loop finds it inside the first prompt's stored prefix blocks, slices its
// KV rows out of them into a position-independent chunk whose base
// position is the span's offset there, and stores and indexes it. The
// second prompt, which reused nothing before, then reuses the span as a
// chunk: V rows as the engine computed them, K rows re-rotated to the
// span's new place.
func TestHotSpanMaterialized(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Control.HotMinCount = 1.5 // two sightings
	dt := startDaemon(t, cfg)
	ctx := t.Context()
	span := m.prompt("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy.")[1:]
	tail := m.prompt("Then the sun went down and everybody went home to sleep in their warm beds.")[1:]
	a := slices.Concat(m.prompt("Tom had a red ball and a blue kite."), span, tail)
	b := slices.Concat(m.prompt("Once upon a time there was a girl who liked to read stories about animals."), span, tail[3:])
	storePrompt(t, dt.c, m, "acme", a) // its prefix blocks only: nothing declared
	before, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: b, Recompute: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if before.Plan.ReusedTokens != 0 {
		t.Fatalf("b reuses %d tokens before the span is a chunk", before.Plan.ReusedTokens)
	}
	if _, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: a, Recompute: "none"}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the span materialised", func() bool { return dt.d.Stats().Control.GetMaterialized() > 0 })
	st := dt.d.Stats().Control
	if st.MaterializedTokens < uint64(len(span)) || st.MaterializeFailures != 0 {
		t.Fatalf("control stats %v", st)
	}
	if n := counterValue(t, dt.d.m.materialized.WithLabelValues("stored")); n != float64(st.Materialized) {
		t.Fatalf("kvloom_control_materialized_chunks_total{result=stored} = %v", n)
	}
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: b, Recompute: "none"})
	if err != nil {
		t.Fatal(err)
	}
	off := len(b) - len(tail[3:]) - len(span)
	var r *api.Range
	for _, x := range res.Plan.Ranges {
		if !x.Prefix && x.Start <= int32(off) && x.Start+x.Length >= int32(off+len(span)) {
			r = x
		}
	}
	if r == nil {
		t.Fatalf("b's plan %v does not reuse the span at %d", res.Plan.Ranges, off)
	}
	// The chunk's KV is a's, from where the run sits in a.
	run := b[r.Start : r.Start+r.Length]
	pa := -1
	for i := range len(a) - len(run) + 1 {
		if slices.Equal(a[i:i+len(run)], run) {
			pa = i
			break
		}
	}
	if pa <= 0 {
		t.Fatalf("the reused run is not inside a (at %d)", pa)
	}
	checkMovedRows(t, res.Plan.Kv, m.prefill(t, a), rowMove{from: pa, to: int(r.Start), n: len(run)})
	// Another tenant's identical prompt finds nothing.
	lk, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "globex", Model: "stories260K", Tokens: b})
	if err != nil || lk.ReusableTokens != 0 {
		t.Fatalf("globex lookup %v %v", lk, err)
	}
}
