package hostctl

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// testConfig is a configuration for a daemon inside a test: everything
// under t.TempDir, no metrics listener, small blocks for the tiny model.
func testConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.Tiers = "mem:256MiB,disk:" + filepath.Join(dir, "chunks") + ":1GiB"
	cfg.Limits.SegmentDir = filepath.Join(dir, "shm")
	cfg.Metrics.Listen = ""
	cfg.ChunkTokens = 16
	cfg.MinChunkTokens = 32
	cfg.Control.Interval = 50 * time.Millisecond
	cfg.Peers.SyncInterval = 50 * time.Millisecond
	cfg.GPU.DMA = "sim"
	return cfg
}

// daemonT is a daemon serving on a Unix socket in a test, and a client.
type daemonT struct {
	d      *Daemon
	conn   interface{ Close() error }
	c      api.KVLoomClient
	socket string
}

// startDaemon runs a daemon until the test ends (then shuts it down and
// checks the shutdown reports nothing lost).
func startDaemon(t testing.TB, cfg Config) *daemonT {
	t.Helper()
	return startDaemonOpts(t, cfg, Options{})
}

// startDaemonOpts is startDaemon with Options (a DMA engine, a clock).
func startDaemonOpts(t testing.TB, cfg Config, opts Options) *daemonT {
	t.Helper()
	d, err := New(t.Context(), cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	lis, err := d.ListenUnix()
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := d.Serve(context.Background(), lis); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := Dial(cfg.SocketPath(), DialOptions{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	dt := &daemonT{d: d, conn: conn, c: api.NewKVLoomClient(conn), socket: cfg.SocketPath()}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, err := d.Shutdown(ctx)
		if err != nil {
			t.Errorf("Shutdown: %v (report %+v)", err, rep)
		}
		if rep.Unflushed != 0 {
			t.Errorf("Shutdown left %d chunks unflushed", rep.Unflushed)
		}
		wg.Wait()
	})
	return dt
}

// serveExtra serves another listener of dt (TCP, metrics) until the test
// ends, stopping it before the daemon's own shutdown waits for it.
func serveExtra(t *testing.T, serve func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := serve(ctx); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// tcpListener listens on a free loopback port.
func tcpListener(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return lis
}

// model260K loads the real stories260K model and its engine.
type model260K struct {
	eng *engine.Engine
	tok *engine.Tokenizer
}

var (
	modelOnce sync.Once
	modelVal  model260K
	modelErr  error
)

func loadModel260K(t testing.TB) model260K {
	t.Helper()
	dir := testutil.Stories260K(t)
	modelOnce.Do(func() {
		e, tok, err := engine.Open(dir)
		modelVal, modelErr = model260K{e, tok}, err
	})
	if modelErr != nil {
		t.Fatalf("open stories260K: %v", modelErr)
	}
	return modelVal
}

// prefill computes the engine's own KV of toks (a full prefill).
func (m model260K) prefill(t testing.TB, toks []matcher.Token) *kvcache.KV {
	t.Helper()
	st := m.eng.NewState()
	if _, err := st.Forward(toks); err != nil {
		t.Fatalf("forward: %v", err)
	}
	kv, err := st.ExportKV(0, len(toks), kvcache.F32)
	if err != nil {
		t.Fatalf("export kv: %v", err)
	}
	return kv
}

// prompt encodes text with BOS.
func (m model260K) prompt(text string) []matcher.Token {
	return m.tok.Encode(text, true, false)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// writeTrust writes key's public half into a trust directory.
func writeTrust(t *testing.T, dir string, key ed25519.PrivateKey) {
	t.Helper()
	b, err := bitstream.MarshalPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.pub"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshotSalt returns the salt of the only entry.
func (o *owners) snapshotSalt(t *testing.T) matcher.Salt {
	t.Helper()
	for _, e := range o.snapshot() {
		return e.salt
	}
	t.Fatal("no entries")
	return matcher.Salt{}
}
