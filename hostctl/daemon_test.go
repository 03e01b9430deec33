package hostctl

import (
	"bytes"
	"testing"

	"github.com/kvloom/kvloom/hostctl/api"
)

const story = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball under a tree and ran to get it."

func TestStorePrepareRoundTrip(t *testing.T) {
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	toks := m.prompt(story)
	kv := m.prefill(t, toks)
	ctx := t.Context()
	resp, err := StoreKV(ctx, dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, kv, 0)
	if err != nil {
		t.Fatalf("Store: %v", err)
	}
	blocks := len(toks) / 16
	if int(resp.Chunks) != blocks {
		t.Fatalf("Store queued %d chunks, want %d prefix blocks", resp.Chunks, blocks)
	}
	res, err := PrepareAll(ctx, dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none"})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if got, want := int(res.Plan.ReusedTokens), blocks*16; got != want {
		t.Fatalf("reused %d tokens, want %d", got, want)
	}
	if len(res.Layers) != kv.Shape().Layers {
		t.Fatalf("%d layer events, want %d", len(res.Layers), kv.Shape().Layers)
	}
	mp, err := MapSegment(res.Plan.Kv)
	if err != nil {
		t.Fatalf("map: %v", err)
	}
	defer mp.Close()
	for l := range kv.Shape().Layers {
		for _, v := range []bool{false, true} {
			for p := range blocks * 16 {
				if !bytes.Equal(mp.KV.Row(l, v, p), kv.Row(l, v, p)) {
					t.Fatalf("layer %d v=%v position %d: segment KV differs from the engine's prefill", l, v, p)
				}
			}
		}
	}
	// Another tenant sees nothing.
	other, err := dt.c.Lookup(ctx, &api.LookupRequest{Tenant: "globex", Model: "stories260K", Tokens: toks})
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if other.ReusableTokens != 0 {
		t.Fatalf("another tenant can reuse %d tokens", other.ReusableTokens)
	}
}

// TestPrepareToGPU: with gpu set, each layer is copied by the DMA backend
// (the sim one here) and reported ready only once it is on the device; the
// device copy equals the segment.
func TestPrepareToGPU(t *testing.T) {
	m := loadModel260K(t)
	dt := startDaemon(t, testConfig(t))
	toks := m.prompt(story)
	kv := m.prefill(t, toks)
	if _, err := StoreKV(t.Context(), dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, kv, 0); err != nil {
		t.Fatal(err)
	}
	res, err := PrepareAll(t.Context(), dt.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none", Gpu: true})
	if err != nil {
		t.Fatal(err)
	}
	g := res.Plan.Kv.GetGpu()
	if g == nil || g.Backend != "sim" || int(g.Layers) != kv.Shape().Layers {
		t.Fatalf("gpu buffer %v", g)
	}
	for _, l := range res.Layers {
		if !l.OnGpu {
			t.Fatalf("layer %d reported before its DMA finished", l.Layer)
		}
	}
	dt.d.segs.mu.Lock()
	seg := dt.d.segs.live[res.Plan.Kv.Handle]
	dt.d.segs.mu.Unlock()
	if seg == nil || seg.buf == nil {
		t.Fatal("segment has no GPU buffer")
	}
	for l := range kv.Shape().Layers {
		got := make([]byte, g.LayerBytes)
		if err := seg.dma.ReadLayer(t.Context(), seg.buf, l, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, seg.kv.Layer(l)) {
			t.Fatalf("layer %d on the GPU differs from the segment", l)
		}
	}
	verifyPlan(t, res.Plan, kv)
}
