package hostctl

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/store"
)

// story2 makes prompts of several blocks with a tail.
const story2 = "The sun was warm and the birds sang in the trees. Lily smiled and threw the ball to her dog, who ran after it."

// longPrompt is a prompt of at least five whole blocks and a tail.
func longPrompt(t *testing.T, m model260K) []matcher.Token {
	t.Helper()
	toks := m.prompt(story + " " + story2)
	toks = toks[:len(toks)/16*16-16+5]
	if len(toks) < 5*16 {
		t.Fatalf("a %d-token prompt: want at least 5 blocks and a tail", len(toks))
	}
	return toks
}

// checkBlend is the engine's side of a plan: it loads the segment, prefills
// the rest of the prompt computing the recompute positions afresh, and
// checks the logits against the engine's own full prefill. With
// prefix-only reuse this is exact: any wrong KV the engine is not told to
// recompute shows here.
func checkBlend(t *testing.T, m model260K, p *api.Plan, recompute []int32, toks []matcher.Token) {
	t.Helper()
	mp, err := MapSegment(p.Kv)
	if err != nil {
		t.Fatalf("map: %v", err)
	}
	defer mp.Close()
	n := mp.KV.Tokens()
	st := m.eng.NewState()
	if err := st.LoadKV(mp.KV, toks[:n]); err != nil {
		t.Fatalf("load kv: %v", err)
	}
	rec := make([]int, len(recompute))
	for i, r := range recompute {
		rec[i] = int(r)
	}
	got, _, err := st.Blend(toks[n:], engine.BlendOptions{Recompute: rec})
	if err != nil {
		t.Fatalf("blend: %v", err)
	}
	full := m.eng.NewState()
	want, err := full.Forward(toks)
	if err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	if worst > 1e-5 {
		t.Fatalf("WRONG KV: logits after the load differ from a full prefill by %g", worst)
	}
}

// blockKeys are a prompt's prefix block keys for tenant acme.
func blockKeys(t *testing.T, d *Daemon, toks []matcher.Token) []matcher.ChunkKey {
	t.Helper()
	salt, err := d.models.salt(mustModel(t, d), "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := matcher.PrefixKeys(salt, toks, 16, nil)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestPartialResultsOverLateOnes: a prompt of several prefix blocks, most
// in memory; block 3 only in a Redis that does not answer before the
// deadline (CLIENT PAUSE); block 1 only on disk, where its layer 2 fails
// its checksum. The plan serves every block that made the deadline — those
// before the late one and those after it — and marks block 3's positions
// for recompute. Block 1 is planned (its layer 0 was in) and then dropped:
// the stream says so before layer 2 is marked ready, its positions join
// the final recompute set, and its rows from layer 2 on are zeros. The
// engine that recomputes what it is told gets a full prefill's output.
// Once Redis answers again, block 3 is reused too.
func TestPartialResultsOverLateOnes(t *testing.T) {
	m := loadModel260K(t)
	rds := testutil.StartRedis(t)
	cfg := testConfig(t)
	disk := filepath.Join(t.TempDir(), "chunks")
	// A pack per blob: the corrupt block's quarantine takes no other.
	cfg.Tiers = "mem:64MiB,disk:" + disk + ":1GiB:pack=4KiB," + rds.URL()
	dt := startDaemon(t, cfg)
	ctx := t.Context()
	toks := longPrompt(t, m)
	kv := m.prefill(t, toks)
	if _, err := StoreKV(ctx, dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, kv, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := dt.d.st.wb.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	keys := blockKeys(t, dt.d, toks)
	blocks := len(keys)
	// The test's own client of the same Redis (store's API).
	rc, err := store.OpenRedis(ctx, store.RedisOptions{URL: rds.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Block 1: on disk only, its layer 2 (K rows of 16..31, then V) corrupt.
	if err := dt.d.st.first.Delete(ctx, keys[1]); err != nil {
		t.Fatal(err)
	}
	if err := rc.Delete(ctx, keys[1]); err != nil {
		t.Fatal(err)
	}
	var layer2 []byte
	for _, v := range []bool{false, true} {
		for q := 16; q < 32; q++ {
			layer2 = append(layer2, kv.Row(2, v, q)...)
		}
	}
	corruptOnDisk(t, disk, layer2)
	// Block 3: in Redis only.
	spec, err := kvcache.Preset("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	salt, err := dt.d.models.salt(mustModel(t, dt.d), "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	b3, err := kvcache.ChunkFromKV(kv, 48, kvcache.ChunkInfo{Key: keys[3], Model: spec.Fingerprint(), SaltID: salt.ID(), Tokens: toks[48:64], BasePos: 48})
	if err != nil {
		t.Fatal(err)
	}
	if err := dt.d.st.delete(ctx, keys[3:4]); err != nil {
		t.Fatal(err)
	}
	if err := rc.Put(ctx, b3); err != nil {
		t.Fatal(err)
	}

	rds.Do(t, "CLIENT", "PAUSE", "1500", "ALL")
	paused := time.Now()
	stream, err := dt.c.Prepare(ctx, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none", DeadlineNs: int64(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	res := &PrepareResult{}
	var order []string
	for {
		ev, err := stream.Recv()
		if err != nil {
			if err != io.EOF {
				t.Fatalf("prepare: %v", err)
			}
			break
		}
		switch e := ev.Event.(type) {
		case *api.PrepareEvent_Plan:
			res.Plan = e.Plan
			order = append(order, "plan")
		case *api.PrepareEvent_Layer:
			res.Layers = append(res.Layers, e.Layer)
			order = append(order, fmt.Sprintf("layer%d", e.Layer.Layer))
		case *api.PrepareEvent_Dropped:
			res.Dropped = append(res.Dropped, e.Dropped)
			order = append(order, "dropped")
		case *api.PrepareEvent_Done:
			res.Done = e.Done
			order = append(order, "done")
		}
	}
	if el := time.Since(paused); el > 1200*time.Millisecond {
		t.Fatalf("the Prepare waited %v for the paused tier", el)
	}
	// The plan: every block but the late one, which is recomputed.
	p := res.Plan
	if !p.Partial || int(p.ReusedTokens) != (blocks-1)*16 || len(p.Ranges) != blocks-1 {
		t.Fatalf("plan reuses %d tokens in %d ranges (partial %v), want every block but block 3: ranges %v, recompute %v", p.ReusedTokens, len(p.Ranges), p.Partial, p.Ranges, p.Recompute)
	}
	for _, r := range p.Ranges {
		if r.Start == 48 {
			t.Fatalf("range %v is the late block", r)
		}
	}
	if want := seq(48, 64); !slices.Equal(p.Recompute, want) {
		t.Fatalf("plan's recompute %v, want block 3's positions", p.Recompute)
	}
	// Block 1 dropped at layer 2, announced before layer 2.
	if want := []string{"plan", "layer0", "layer1", "dropped", "layer2", "layer3", "layer4", "done"}; !slices.Equal(order, want) {
		t.Fatalf("stream %v, want %v", order, want)
	}
	dr := res.Dropped[0]
	if dr.Layer != 2 || dr.Chunk != keys[1].String() || dr.Reason != "corrupt" || len(dr.Ranges) != 1 || dr.Ranges[0].Start != 16 || dr.Ranges[0].Length != 16 {
		t.Fatalf("dropped %v, want block 1 at layer 2 for corruption", dr)
	}
	if want := append(seq(16, 32), seq(48, 64)...); res.Done.DroppedTokens != 16 || !slices.Equal(res.Done.Recompute, want) {
		t.Fatalf("done %v, want blocks 1 and 3 to recompute", res.Done)
	}
	plan := proto.Clone(p).(*api.Plan)
	if err := res.applyDrops(); err != nil {
		t.Fatal(err)
	}
	if int(res.Plan.ReusedTokens) != (blocks-2)*16 || len(res.Plan.Ranges) != blocks-2 || !slices.Equal(res.Plan.Recompute, res.Done.Recompute) {
		t.Fatalf("plan with the drop applied: %v", res.Plan)
	}
	// The segment: block 1's rows hold its KV below layer 2, zeros from
	// there; block 3's are zeros; the rest is the engine's own KV.
	mp, err := MapSegment(plan.Kv)
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	zero := make([]byte, kv.Shape().RowBytes())
	for l := range kv.Shape().Layers {
		for q := range mp.KV.Tokens() {
			for _, v := range []bool{false, true} {
				got := mp.KV.Row(l, v, q)
				switch {
				case q >= 48 && q < 64, q >= 16 && q < 32 && l >= 2:
					if !bytes.Equal(got, zero) {
						t.Fatalf("layer %d position %d: a recomputed row is not zero", l, q)
					}
				case !bytes.Equal(got, kv.Row(l, v, q)):
					t.Fatalf("WRONG KV: layer %d v=%v position %d", l, v, q)
				}
			}
		}
	}
	checkBlend(t, m, plan, res.Done.Recompute, toks)
	if _, err := dt.c.Release(ctx, &api.ReleaseRequest{Handle: plan.Kv.Handle}); err != nil {
		t.Fatal(err)
	}
	if st := dt.d.Stats(); st.DroppedChunks != 1 || st.PartialPrepares != 1 {
		t.Fatalf("stats: %d dropped chunks, %d partial prepares", st.DroppedChunks, st.PartialPrepares)
	}
	if n := counterValue(t, dt.d.m.dropped.WithLabelValues("corrupt")); n != 1 {
		t.Fatalf("kvloom_reuse_dropped_chunks_total{reason=corrupt} = %v", n)
	}
	// Once Redis answers, block 3 is back; block 1 was quarantined: a
	// miss, recomputed. PrepareAll hands back plans ready to use.
	testutil.Eventually(t, "block 3 reused once Redis answers", func() bool {
		res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none"})
		if err != nil {
			t.Fatal(err)
		}
		defer dt.c.Release(ctx, &api.ReleaseRequest{Handle: res.Plan.GetKv().GetHandle()})
		for _, r := range res.Plan.Ranges {
			if r.Chunk == keys[1].String() {
				t.Fatalf("the corrupt block is planned again: %v", r)
			}
		}
		for _, r := range res.Plan.Ranges {
			if r.Start == 48 {
				checkBlend(t, m, res.Plan, res.Plan.Recompute, toks)
				return true
			}
		}
		return false
	})
}

// seq is the positions [from, to).
func seq(from, to int32) []int32 {
	var out []int32
	for q := from; q < to; q++ {
		out = append(out, q)
	}
	return out
}

// corruptOnDisk flips a byte in the middle of the one place the disk tier
// stored payload.
func corruptOnDisk(t *testing.T, dir string, payload []byte) {
	t.Helper()
	packs, err := filepath.Glob(filepath.Join(dir, "packs", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, payload)
		if i < 0 {
			continue
		}
		b[i+len(payload)/2] ^= 0x40
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("the payload is in none of the %d pack files under %s (is the codec raw?)", len(packs), dir)
}
