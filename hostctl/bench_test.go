package hostctl

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/benchutil"
)

// benchDaemon starts a daemon with a stored prompt and returns a client on
// its Unix socket, the prompt, and an empty-call baseline on the same
// connection.
func benchDaemon(b *testing.B) (*daemonT, []uint32, benchutil.Baseline) {
	b.Helper()
	m := loadModel260K(b)
	dir := b.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Tiers = "mem:256MiB"
	cfg.Metrics.Listen = ""
	cfg.ChunkTokens = 16
	cfg.MinChunkTokens = 32
	// Segments on tmpfs, as in production; they expire on their own so
	// the loop measures Prepare alone.
	shm, err := os.MkdirTemp("/dev/shm", "kvloom-bench-")
	if err != nil {
		b.Fatalf("segment directory on /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	cfg.Limits.SegmentDir = filepath.Join(shm, "seg")
	cfg.Limits.SegmentTTL = 100 * time.Millisecond
	dt := startDaemon(b, cfg)
	toks := m.prompt(story)
	if _, err := StoreKV(b.Context(), dt.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, m.prefill(b, toks), 0); err != nil {
		b.Fatal(err)
	}
	ping := benchutil.Baseline{PerOp: 1, Op: func() {
		if _, err := dt.c.Ping(b.Context(), &api.PingRequest{}); err != nil {
			b.Fatal(err)
		}
	}}
	return dt, toks, ping
}

// reportOverhead reports the call's cost as a multiple of an empty call's
// on the same connection (x-vs-empty-rpc: latency ÷ Ping's latency).
func reportOverhead(b *testing.B, ping benchutil.Baseline) {
	r := benchutil.ReportRatio(b, "rate-x-vs-empty-rpc", 1, ping)
	b.ReportMetric(1/r, "x-vs-empty-rpc")
}

// BenchmarkLookup: Lookup of a stored prompt (memory tier), over gRPC on a
// Unix socket.
func BenchmarkLookup(b *testing.B) {
	dt, toks, ping := benchDaemon(b)
	req := &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: toks}
	b.ReportAllocs()
	for b.Loop() {
		r, err := dt.c.Lookup(b.Context(), req)
		if err != nil || r.ReusableTokens == 0 {
			b.Fatalf("lookup: %v %v", r, err)
		}
	}
	reportOverhead(b, ping)
}

// BenchmarkPrepare: Prepare of a stored prompt whose chunks are in the
// memory tier: match, prefetch, stitch into a shared-memory segment, one
// readiness message per layer.
func BenchmarkPrepare(b *testing.B) {
	dt, toks, ping := benchDaemon(b)
	req := &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: toks, Recompute: "none"}
	m, err := dt.d.models.get(req.Model)
	if err != nil {
		b.Fatal(err)
	}
	var reused int32
	b.ReportAllocs()
	for b.Loop() {
		r, err := PrepareAll(b.Context(), dt.c, req)
		if err != nil || r.Plan.ReusedTokens == 0 {
			b.Fatalf("prepare: %v %v", r, err)
		}
		reused = r.Plan.ReusedTokens
	}
	// The KV each call stitches: the reused tokens in the served model's
	// shape.
	b.SetBytes(int64(reused) * int64(m.shape.TokenBytes()))
	reportOverhead(b, ping)
}
