package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/hostctl"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
)

// startEmbedded runs a daemon in-process on a Unix socket for the client
// commands, with one prompt stored; it returns the socket and the prompt.
func startEmbedded(t *testing.T) (string, []uint32) {
	t.Helper()
	dir := t.TempDir()
	cfg := hostctl.DefaultConfig()
	cfg.DataDir = dir
	cfg.Tiers = "mem:64MiB"
	cfg.Limits.SegmentDir = filepath.Join(dir, "shm")
	cfg.Metrics.Listen = ""
	cfg.ChunkTokens = 16
	cfg.MinChunkTokens = 32
	d, err := hostctl.New(t.Context(), cfg, hostctl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := d.ListenUnix()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { d.Serve(context.Background(), lis) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := d.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		wg.Wait()
	})
	e, tok, err := engine.Open(testutil.Stories260K(t))
	if err != nil {
		t.Fatal(err)
	}
	toks := tok.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside.", true, false)
	st := e.NewState()
	if _, err := st.Forward(toks); err != nil {
		t.Fatal(err)
	}
	kv, err := st.ExportKV(0, len(toks), kvcache.F32)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := hostctl.Dial(cfg.SocketPath(), hostctl.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := hostctl.StoreKV(t.Context(), api.NewKVLoomClient(conn), &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: toks}, kv, 0); err != nil {
		t.Fatal(err)
	}
	return cfg.SocketPath(), toks
}

func joinTokens(toks []uint32) string {
	b, _ := json.Marshal(toks)
	return strings.Trim(string(b), "[]")
}

func TestDaemonClientCommands(t *testing.T) {
	sock, toks := startEmbedded(t)
	reused := len(toks) / 16 * 16
	prompt := []string{"--daemon", sock, "--tenant", "acme", "--model", "stories260K", "--tokens", joinTokens(toks)}

	out, err := runCLI(t, "status", "--daemon", sock)
	if err != nil || !strings.Contains(out, "serving") || !strings.Contains(out, "device") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"lookup", "--json"}, prompt...)...)
	if err != nil {
		t.Fatalf("lookup: %v\n%s", err, out)
	}
	var lk struct {
		ReusableTokens int `json:"reusableTokens"`
	}
	if err := json.Unmarshal([]byte(out), &lk); err != nil || lk.ReusableTokens != reused {
		t.Fatalf("lookup --json: %v %s", err, out)
	}
	out, err = runCLI(t, append([]string{"prepare", "--recompute", "none"}, prompt...)...)
	if err != nil || !strings.Contains(out, "reused "+strconv.Itoa(reused)) || !strings.Contains(out, "layer 4 ready") {
		t.Fatalf("prepare: %v\n%s", err, out)
	}
	out, err = runCLI(t, "stats", "--daemon", sock)
	if err != nil || !strings.Contains(out, "1 prepare") || !strings.Contains(out, "control:") ||
		!strings.Contains(out, "hot spans materialised") || !strings.Contains(out, "promoted to local tiers") {
		t.Fatalf("stats: %v\n%s", err, out)
	}
	// The daemon's DMA backend (sim here): zero copy from its pinned pool,
	// no host segment with --gpu-only.
	out, err = runCLI(t, append([]string{"prepare", "--recompute", "none", "--gpu-only"}, prompt...)...)
	if err != nil || !strings.Contains(out, "segment: no host copy") || !strings.Contains(out, "zero copy from the pinned pool") || !strings.Contains(out, "layer 4 ready") || !strings.Contains(out, "(gpu true)") {
		t.Fatalf("prepare --gpu-only: %v\n%s", err, out)
	}
	out, err = runCLI(t, "devices", "--daemon", sock)
	if err != nil || !strings.Contains(out, "driven by kvloomd") {
		t.Fatalf("devices --daemon: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"evict"}, prompt...)...)
	if err != nil || !strings.Contains(out, "evicted 1 index entries") {
		t.Fatalf("evict: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"lookup"}, prompt...)...)
	if err != nil || !strings.Contains(out, "reusable: 0 of") {
		t.Fatalf("lookup after evict: %v\n%s", err, out)
	}
	_, err = runCLI(t, "lookup", "--daemon", sock, "--model", "stories260K", "--tokens", "1,2")
	if err == nil || !strings.Contains(err.Error(), "--tenant") {
		t.Fatalf("lookup without a tenant: %v", err)
	}
	_, err = runCLI(t, "status", "--daemon", filepath.Join(t.TempDir(), "none.sock"), "--timeout", "300ms")
	if err == nil {
		t.Fatal("status against no daemon succeeded")
	}
}
