package hostctl

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// storePrompt stores toks' KV (the engine's own prefill) for tenant.
func storePrompt(t *testing.T, c api.KVLoomClient, m model260K, tenant string, toks []matcher.Token, chunks ...*api.ChunkSpan) *api.StoreResponse {
	t.Helper()
	resp, err := StoreKV(t.Context(), c, &api.StoreHeader{Tenant: tenant, Model: "stories260K", Tokens: toks, Chunks: chunks}, m.prefill(t, toks), 0)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	return resp
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want code %s", err, code)
	}
	if substr != "" && !strings.Contains(err.Error(), substr) {
		t.Fatalf("err = %v, want it to mention %q", err, substr)
	}
}

func TestHealthReflectionAndSocketMode(t *testing.T) {
	cfg := testConfig(t)
	dt := startDaemon(t, cfg)
	fi, err := os.Stat(dt.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}
	conn, err := Dial(dt.socket, DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: api.KVLoom_ServiceDesc.ServiceName})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	rc, err := grpc_reflection_v1.NewServerReflectionClient(conn).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&grpc_reflection_v1.ServerReflectionRequest{MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"kvloom.v1.KVLoom", "kvloom.v1.Peer", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	rc.CloseSend()
}

func TestMalformedRequests(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Limits.MaxPromptTokens = 300
	cfg.Listen.MaxRecvBytes = 64 << 10
	dt := startDaemon(t, cfg)
	ctx := t.Context()
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)

	_, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "gpt-17", Tokens: toks})
	wantCode(t, err, codes.NotFound, `model "gpt-17"`)
	_, err = dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: []uint32{1, 2, 9999}})
	wantCode(t, err, codes.InvalidArgument, "token 9999 at offset 2")
	_, err = dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K"})
	wantCode(t, err, codes.InvalidArgument, "no tokens")
	_, err = dt.c.Lookup(ctx, &api.LookupRequest{Model: "stories260K", Tokens: toks})
	wantCode(t, err, codes.InvalidArgument, "tenant is empty")
	_, err = dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: make([]uint32, 301)})
	wantCode(t, err, codes.OutOfRange, "limit 300")
	// Oversized message: refused by the transport's limit.
	_, err = dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: make([]uint32, 100000)})
	wantCode(t, err, codes.ResourceExhausted, "larger than max")
	_, err = PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "sometimes"})
	wantCode(t, err, codes.InvalidArgument, "sometimes")

	// Store: wrong sizes, out of order, a second header, a chunk too short.
	kv := m.prefill(t, toks)
	short, err := kvcache.NewKV(kv.Shape(), len(toks)-1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = StoreKV(ctx, dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, short, 0)
	wantCode(t, err, codes.InvalidArgument, "")
	_, err = StoreKV(ctx, dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks, Chunks: []*api.ChunkSpan{{Start: 5, Length: 8}}}, kv, 0)
	wantCode(t, err, codes.InvalidArgument, "min_chunk_tokens")
	_, err = StoreKV(ctx, dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks, Shared: true}, kv, 0)
	wantCode(t, err, codes.PermissionDenied, "allow_shared_writes")
	stream, err := dt.c.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Header{Header: &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}}})
	stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Layer{Layer: &api.StoreLayer{Layer: 1, Data: []byte{1}}}})
	_, err = stream.CloseAndRecv()
	wantCode(t, err, codes.InvalidArgument, "want layer 0 offset 0")

	// After all that, the stored prompt is intact and exact.
	checkExactPrefix(t, dt, m, "acme", toks)
}

// checkExactPrefix prepares toks and checks every reused position's KV
// against the engine's own full prefill.
func checkExactPrefix(t *testing.T, dt *daemonT, m model260K, tenant string, toks []matcher.Token) *api.Plan {
	t.Helper()
	res, err := PrepareAll(t.Context(), dt.c, &api.PrepareRequest{Tenant: tenant, Model: "stories260K", Tokens: toks, Recompute: "none"})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if res.Plan.Kv == nil {
		t.Fatalf("nothing reused: %+v", res.Plan)
	}
	verifyPlan(t, res.Plan, m.prefill(t, toks))
	if _, err := dt.c.Release(t.Context(), &api.ReleaseRequest{Handle: res.Plan.Kv.Handle}); err != nil {
		t.Fatalf("Release: %v", err)
	}
	return res.Plan
}

// verifyPlan maps a plan's segment and checks each prefix range's KV equals
// want, bit for bit.
func verifyPlan(t *testing.T, p *api.Plan, want *kvcache.KV) {
	t.Helper()
	mp, err := MapSegment(p.Kv)
	if err != nil {
		t.Fatalf("map: %v", err)
	}
	defer mp.Close()
	for _, r := range p.Ranges {
		if !r.Prefix {
			continue
		}
		for l := range want.Shape().Layers {
			for _, v := range []bool{false, true} {
				for pos := r.Start; pos < r.Start+r.Length; pos++ {
					if !bytes.Equal(mp.KV.Row(l, v, int(pos)), want.Row(l, v, int(pos))) {
						t.Fatalf("WRONG KV: layer %d v=%v position %d differs from the engine's full prefill", l, v, pos)
					}
				}
			}
		}
	}
}

func TestChunkReuseAnywhere(t *testing.T) {
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	ctx := t.Context()
	doc := m.prompt("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy.")[1:]
	if len(doc) < 32 {
		t.Fatalf("doc has %d tokens", len(doc))
	}
	// Store a prompt that holds the document at offset 10.
	head := m.prompt("Tom had a red ball.")
	toks := append(slices.Clone(head), doc...)
	storePrompt(t, dt.c, m, "acme", toks, &api.ChunkSpan{Start: int32(len(head)), Length: int32(len(doc))})
	// A new prompt with the document elsewhere reuses it as a chunk.
	head2 := m.prompt("Once upon a time there was a girl who liked to read stories about animals.")
	toks2 := append(slices.Clone(head2), doc...)
	lk, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks2})
	if err != nil {
		t.Fatal(err)
	}
	if lk.ReusableTokens != int32(len(doc)) {
		t.Fatalf("lookup: %d reusable, want the %d-token document", lk.ReusableTokens, len(doc))
	}
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks2, Recompute: "epic:4"})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Plan
	if len(p.Ranges) != 1 || p.Ranges[0].Prefix || p.Ranges[0].Start != int32(len(head2)) || p.Ranges[0].Source != api.Source_SOURCE_MEMORY {
		t.Fatalf("ranges %v", p.Ranges)
	}
	// Recompute: the 4 first tokens of the chunk and everything before it.
	if got := len(p.Recompute); got != len(head2)+4 {
		t.Fatalf("%d positions to recompute, want %d", got, len(head2)+4)
	}
	// The chunk's V rows are its own prefill's (V is not rotated); its K
	// rows are the same keys moved to the new positions.
	checkMovedRows(t, p.Kv, m.prefill(t, toks), rowMove{from: len(head), to: len(head2), n: len(doc)})
}

// rowMove is a run of n tokens whose KV the daemon reused at another
// position: prefilled at from, placed at to.
type rowMove struct{ from, to, n int }

// checkMovedRows checks that seg holds orig's rows of mv at their new
// place: V rows as they were (V is not rotated), K rows the same keys
// re-rotated by to-from positions.
func checkMovedRows(t *testing.T, seg *api.Segment, orig *kvcache.KV, mv rowMove) {
	t.Helper()
	mp, err := MapSegment(seg)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	spec, _ := kvcache.Preset("stories260K")
	rot, err := kvcache.NewRotator(&spec)
	if err != nil {
		t.Fatal(err)
	}
	for l := range orig.Shape().Layers {
		for i := range mv.n {
			if !bytes.Equal(mp.KV.Row(l, true, mv.to+i), orig.Row(l, true, mv.from+i)) {
				t.Fatalf("layer %d token %d of the run at %d: V is not the prefill's at %d", l, i, mv.to, mv.from)
			}
			k := slices.Clone(orig.Row(l, false, mv.from+i))
			if err := rot.Rotate(k, kvcache.F32, mv.to-mv.from, 1); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mp.KV.Row(l, false, mv.to+i), k) {
				t.Fatalf("layer %d token %d of the run at %d: K is not the prefill's key re-rotated by %d", l, i, mv.to, mv.to-mv.from)
			}
		}
	}
}

func TestTenantIsolation(t *testing.T) {
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	ctx := t.Context()
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	for _, c := range []func() (int32, error){
		func() (int32, error) {
			r, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "globex", Model: "stories260K", Tokens: toks})
			return r.GetReusableTokens(), err
		},
		func() (int32, error) {
			r, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "globex", Model: "stories260K", Tokens: toks})
			if err != nil {
				return 0, err
			}
			return r.Plan.ReusedTokens, nil
		},
	} {
		n, err := c()
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("tenant globex reuses %d tokens of acme's prompt", n)
		}
	}
	// Evicting as globex touches nothing of acme's.
	ev, err := dt.c.Evict(ctx, &api.EvictRequest{Tenant: "globex", Model: "stories260K", Tokens: toks})
	if err != nil || ev.Entries != 0 {
		t.Fatalf("globex evict: %v %v", ev, err)
	}
	checkExactPrefix(t, dt, m, "acme", toks)
	ev, err = dt.c.Evict(ctx, &api.EvictRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil || ev.Entries != 1 {
		t.Fatalf("acme evict: %v %v", ev, err)
	}
	lk, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil || lk.ReusableTokens != 0 {
		t.Fatalf("after evict: %v %v", lk, err)
	}
}

func TestQuotas(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	toks := m.prompt(story)
	blob := kvcache.RawBlobSize(&kvcache.ChunkInfo{Tokens: toks[:16], Shape: m.eng.Model().Spec.Shape()})
	cfg.Limits.TenantStoredBytes = Size(blob*int64(len(toks)/16) + blob/2)
	dt := startDaemon(t, cfg)
	storePrompt(t, dt.c, m, "acme", toks)
	other := m.prompt("A big fish swam in the blue sea and found a shiny shell on the sand near the rocks.")
	_, err := StoreKV(t.Context(), dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: other}, m.prefill(t, other), 0)
	wantCode(t, err, codes.ResourceExhausted, "tenant_stored_bytes")
	// Another tenant has its own quota; evicting gives acme's back.
	storePrompt(t, dt.c, m, "globex", other)
	if _, err := dt.c.Evict(t.Context(), &api.EvictRequest{Tenant: "acme", Model: "stories260K", Tokens: toks}); err != nil {
		t.Fatal(err)
	}
	storePrompt(t, dt.c, m, "acme", other)
}

func TestInflightLimit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits.MaxInflight = 1
	cfg.Limits.TenantInflight = 1
	dt := startDaemon(t, cfg)
	// Hold the only slot with a Store stream that never finishes its header.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := dt.c.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Header{Header: &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: make([]uint32, 20)}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the Store stream to take the slot", func() bool { return dt.d.inflight() != 0 })
	_, err = dt.c.Ping(t.Context(), &api.PingRequest{})
	wantCode(t, err, codes.ResourceExhausted, "max_inflight")
	cancel()
	testutil.Eventually(t, "the cancelled Store stream to give the slot back", func() bool { return dt.d.inflight() == 0 })
	if _, err := dt.c.Ping(t.Context(), &api.PingRequest{}); err != nil {
		t.Fatalf("after the stream ended: %v", err)
	}
}

func TestSegmentsReleaseAndExpire(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	cfg.Limits.SegmentTTL = 100 * time.Millisecond
	dt := startDaemon(t, cfg)
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	res, err := PrepareAll(t.Context(), dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil {
		t.Fatal(err)
	}
	path := res.Plan.Kv.Path
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("segment file: %v", err)
	}
	testutil.Eventually(t, "the segment file deleted after its TTL", func() bool {
		_, err := os.Stat(path)
		return errors.Is(err, os.ErrNotExist)
	})
	_, err = dt.c.Release(t.Context(), &api.ReleaseRequest{Handle: res.Plan.Kv.Handle})
	wantCode(t, err, codes.NotFound, "segment")
}

func TestStatusStatsDevices(t *testing.T) {
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	ctx := t.Context()
	toks := m.prompt(story)
	storePrompt(t, dt.c, m, "acme", toks)
	for range 3 {
		checkExactPrefix(t, dt, m, "acme", toks)
	}
	st, err := dt.c.Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Serving || !slices.Contains(st.Models, "stories260K") {
		t.Fatalf("status %v", st)
	}
	up := map[string]bool{}
	for _, b := range st.Backends {
		up[b.Name] = b.Up
	}
	if !up["device"] || !up["dma"] || !up["tier_mem"] || !up["tier_disk"] {
		t.Fatalf("backends %v", st.Backends)
	}
	// The control loop puts the reused prefix on the device.
	var stats *api.StatsResponse
	testutil.Eventually(t, "the control loop to fill the device table", func() bool {
		if stats, err = dt.c.Stats(ctx, &api.StatsRequest{}); err != nil {
			t.Fatal(err)
		}
		return stats.Control.GetTableEntries() > 0
	})
	if stats.Control.GetTableEntries() == 0 || len(stats.Control.Top) == 0 || !stats.Control.Top[0].OnDevice {
		t.Fatalf("control loop put nothing on the device: %v", stats.Control)
	}
	if stats.Prepares != 3 || stats.ReusedTokens == 0 {
		t.Fatalf("stats %v", stats)
	}
	dev, err := dt.c.Devices(ctx, &api.DevicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dev.Devices) == 0 || !dev.Devices[0].Active || dev.Devices[0].TableEntries == 0 {
		t.Fatalf("devices %v", dev)
	}
	// Now a Prepare sees the device's hot table.
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Plan.Ranges[0].Device || res.Plan.DeviceBackend != "sim" {
		t.Fatalf("the device's hot table did not see the prefix: %v", res.Plan)
	}
}

// TestCoverKeepsPrefix: a chunk that overlaps a prompt's prefix match and
// is longer than it does not displace the exact prefix: the plan keeps the
// prefix blocks and takes the rest of the chunk after them.
func TestCoverKeepsPrefix(t *testing.T) {
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	ctx := t.Context()
	doc := m.prompt("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy.")[1:]
	head := m.prompt("Tom had a red ball.")
	q := append(slices.Clone(head), doc...)
	storePrompt(t, dt.c, m, "acme", q, &api.ChunkSpan{Start: int32(len(head)), Length: int32(len(doc))})
	// p starts with one stored block, then holds the document from
	// position 5 on: the document is longer than the prefix match.
	p := slices.Concat(m.prompt("Sue went out.")[:5], doc)
	storePrompt(t, dt.c, m, "acme", p[:20])
	if len(doc) <= 16 {
		t.Fatalf("a %d-token document does not outgrow a block", len(doc))
	}
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: p, Recompute: "none"})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Plan.Ranges
	if len(r) != 2 || !r[0].Prefix || r[0].Length != 16 || r[1].Prefix || r[1].Start != 16 || r[1].ChunkOffset != 11 || r[1].Start+r[1].Length != int32(len(p)) {
		t.Fatalf("ranges %v, want the prefix block then the document from its token 11", r)
	}
	if res.Plan.ReusedTokens != int32(len(p)) {
		t.Fatalf("reused %d of %d", res.Plan.ReusedTokens, len(p))
	}
	verifyPlan(t, res.Plan, m.prefill(t, p))
	lk, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: p})
	if err != nil || lk.ReusableTokens != int32(len(p)) || lk.PrefixTokens != 16 {
		t.Fatalf("lookup %v %v", lk, err)
	}
}

// TestCoverTakesChunkTailPastPrefix: a chunk shorter than the prefix match
// it overlaps, whose rest past the prefix is at least a chunk match long,
// is still used for that rest (the prefix alone would leave it computed).
func TestCoverTakesChunkTailPastPrefix(t *testing.T) {
	m := loadModel260K(t)
	cfg := testConfig(t)
	dt := startDaemon(t, cfg)
	ctx := t.Context()
	text := m.prompt("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy and went home to sleep by the fire.")[1:]
	filler := m.prompt("Tom had a red ball. He liked to play with it in the park every day with his friends. One day the ball rolled into the pond and Tom was sad.")
	const start, docLen, prefixLen = 42, 44, 48
	if len(text) < docLen || len(filler) < start {
		t.Fatalf("texts too short: %d and %d tokens", len(text), len(filler))
	}
	doc := text[:docLen]
	storePrompt(t, dt.c, m, "acme", slices.Concat(m.prompt("Once upon a time."), doc), &api.ChunkSpan{Start: int32(len(m.prompt("Once upon a time."))), Length: docLen})
	p := slices.Concat(filler[:start], doc)
	storePrompt(t, dt.c, m, "acme", p[:prefixLen])
	if tail := start + docLen - prefixLen; docLen >= prefixLen || tail < cfg.MinChunkTokens {
		t.Fatalf("set-up: chunk of %d tokens, tail %d past a %d-token prefix", docLen, tail, prefixLen)
	}
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: p, Recompute: "none"})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Plan.Ranges
	prefix := int32(0)
	for _, g := range r {
		if g.Prefix && g.Start == prefix {
			prefix += g.Length
		}
	}
	last := r[len(r)-1]
	if prefix != prefixLen || last.Prefix || last.Start != prefixLen || last.ChunkOffset != prefixLen-start || last.Start+last.Length != int32(len(p)) {
		t.Fatalf("ranges %v, want the %d prefix tokens, then the document from its token %d", r, prefixLen, prefixLen-start)
	}
	if res.Plan.ReusedTokens != int32(len(p)) {
		t.Fatalf("reused %d of %d", res.Plan.ReusedTokens, len(p))
	}
	verifyPlan(t, res.Plan, m.prefill(t, p))
}
