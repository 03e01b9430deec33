package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/hostctl"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// This file runs kvloomd as a real process (built by the test), with a real
// Redis, and the reference engine computing real KV as its client.

// buildDaemon compiles kvloomd into a temporary directory once per run.
var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

func kvloomdBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvloomd-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "kvloomd")
		out, err := exec.Command("go", "build", "-o", buildPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build kvloomd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
	os.Exit(code)
}

// lockedBuffer collects a process's log.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is one running kvloomd.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    *lockedBuffer
	done   chan error
	socket string
	conn   *grpc.ClientConn
	c      api.KVLoomClient
}

// startProc runs kvloomd with the configuration cfg and waits until it
// answers on its socket.
func startProc(t *testing.T, cfg hostctl.Config) *proc {
	t.Helper()
	data, err := hostctl.MarshalConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.DataDir, "kvloomd.yaml")
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, log: &lockedBuffer{}, done: make(chan error, 1), socket: cfg.SocketPath()}
	p.cmd = exec.Command(kvloomdBinary(t), "--config", path)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if p.conn != nil {
			p.conn.Close()
		}
	})
	if p.conn, err = hostctl.Dial(p.socket, hostctl.DialOptions{}); err != nil {
		t.Fatal(err)
	}
	p.c = api.NewKVLoomClient(p.conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := p.c.Status(ctx, &api.StatusRequest{})
		cancel()
		if err == nil {
			return p
		}
		select {
		case err := <-p.done:
			t.Fatalf("kvloomd exited at start: %v\n%s", err, p.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kvloomd did not answer: %v\n%s", err, p.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends sig and waits for the exit; it returns the exit code.
func (p *proc) stop(sig os.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
		p.t.Fatalf("kvloomd did not exit after %v\n%s", sig, p.log)
	}
	return p.cmd.ProcessState.ExitCode()
}

// client is the engine as kvloomd's client.
type client struct {
	eng *engine.Engine
	tok *engine.Tokenizer
}

func newClient(t *testing.T) client {
	t.Helper()
	e, tok, err := engine.Open(testutil.Stories260K(t))
	if err != nil {
		t.Fatal(err)
	}
	return client{e, tok}
}

func (c client) prefill(t testing.TB, toks []matcher.Token) *kvcache.KV {
	st := c.eng.NewState()
	if _, err := st.Forward(toks); err != nil {
		t.Fatalf("forward: %v", err)
	}
	kv, err := st.ExportKV(0, len(toks), kvcache.F32)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	return kv
}

// corpus is every prompt a test stores, with the engine's own full
// prefill of each: the only KV any plan may hand out.
type corpus struct {
	prompts [][]matcher.Token
	kvs     []*kvcache.KV
	rot     *kvcache.Rotator
	// chunks counts the chunk ranges verified.
	chunks atomic.Int64
}

func newCorpus(t *testing.T, cl client, prompts [][]matcher.Token) *corpus {
	t.Helper()
	spec, err := kvcache.Preset("stories260K")
	if err != nil {
		t.Fatal(err)
	}
	rot, err := kvcache.NewRotator(&spec)
	if err != nil {
		t.Fatal(err)
	}
	c := &corpus{prompts: prompts, kvs: make([]*kvcache.KV, len(prompts)), rot: rot}
	for i, p := range prompts {
		c.kvs[i] = cl.prefill(t, p)
	}
	return c
}

// verify checks a Prepare's plan for prompt i. Every prefix range's KV in
// the segment equals the engine's own full prefill of the prompt, bit for
// bit. Every chunk range (a span the daemon found in several prompts and
// made a chunk of) is the KV of the same tokens in one of the stored
// prompts: its V rows as computed there, its K rows those keys re-rotated
// by the distance moved.
func (c *corpus) verify(p *api.Plan, i int) error {
	if p.Kv == nil {
		if p.ReusedTokens != 0 {
			return fmt.Errorf("%d tokens reused without a segment", p.ReusedTokens)
		}
		return nil
	}
	mp, err := hostctl.MapSegment(p.Kv)
	if err != nil {
		return err
	}
	defer mp.Close()
	want, toks := c.kvs[i], c.prompts[i]
	for _, r := range p.Ranges {
		if !r.Prefix {
			if !c.chunkFrom(mp.KV, r, toks) {
				return fmt.Errorf("WRONG KV: chunk range [%d, %d) from %s is no stored prompt's KV of those tokens", r.Start, r.Start+r.Length, r.Where)
			}
			c.chunks.Add(1)
			continue
		}
		for l := range want.Shape().Layers {
			for _, v := range []bool{false, true} {
				for pos := r.Start; pos < r.Start+r.Length; pos++ {
					if !bytes.Equal(mp.KV.Row(l, v, int(pos)), want.Row(l, v, int(pos))) {
						return fmt.Errorf("WRONG KV at layer %d v=%v position %d (range from %s)", l, v, pos, r.Where)
					}
				}
			}
		}
	}
	return nil
}

// chunkFrom reports whether the segment's rows of chunk range r are some
// corpus prompt's KV of the same tokens, moved to r's place.
func (c *corpus) chunkFrom(seg *kvcache.KV, r *api.Range, toks []matcher.Token) bool {
	run := toks[r.Start : r.Start+r.Length]
	for j, p := range c.prompts {
		for q := range len(p) - len(run) + 1 {
			if slices.Equal(p[q:q+len(run)], run) && c.same(seg, int(r.Start), c.kvs[j], q, len(run)) {
				return true
			}
		}
	}
	return false
}

func (c *corpus) same(seg *kvcache.KV, at int, src *kvcache.KV, from, n int) bool {
	for l := range src.Shape().Layers {
		for i := range n {
			if !bytes.Equal(seg.Row(l, true, at+i), src.Row(l, true, from+i)) {
				return false
			}
			k := slices.Clone(src.Row(l, false, from+i))
			if err := c.rot.Rotate(k, kvcache.F32, at-from, 1); err != nil || !bytes.Equal(seg.Row(l, false, at+i), k) {
				return false
			}
		}
	}
	return true
}

// prefixTokens are the tokens a plan reuses through prefix ranges.
func prefixTokens(p *api.Plan) int32 {
	n := int32(0)
	for _, r := range p.Ranges {
		if r.Prefix {
			n += r.Length
		}
	}
	return n
}

// prompts are the workload: multi-turn chats whose turns extend each other.
func (c client) prompts(n int) [][]matcher.Token {
	lines := []string{
		"Once upon a time, there was a little girl named Lily.",
		"She loved to play outside in the park with her friends.",
		"One day, she saw a big red ball under a tree.",
		"She ran to get it, but a dog took it first.",
		"Lily was sad, but her mom gave her a hug.",
		"Then the dog came back and gave her the ball.",
	}
	starts := []string{"Tom and Sue went to the beach.", "A little bird lived in a tall tree.", "Ben had a new toy car.", "The sun was shining on the farm."}
	var out [][]matcher.Token
	for i := range n {
		text := starts[i%len(starts)]
		for j := range 1 + (i/len(starts))%len(lines) {
			text += " " + lines[j]
		}
		out = append(out, c.tok.Encode(text, true, false))
	}
	return out
}

func e2eConfig(t *testing.T, dir string) hostctl.Config {
	cfg := hostctl.DefaultConfig()
	cfg.DataDir = dir
	cfg.Tiers = "mem:64MiB,disk:" + filepath.Join(dir, "chunks") + ":256MiB"
	cfg.Limits.SegmentDir = filepath.Join(dir, "shm")
	cfg.Listen.Socket = filepath.Join(dir, "d.sock")
	cfg.Metrics.Listen = ""
	cfg.ChunkTokens = 16
	cfg.MinChunkTokens = 32
	cfg.Control.Interval = 100 * time.Millisecond
	cfg.Peers.SyncInterval = 100 * time.Millisecond
	cfg.Peers.Timeout = time.Second
	cfg.Peers.Token = "e2e-token"
	cfg.Limits.ShutdownTimeout = 10 * time.Second
	cfg.Limits.SegmentTTL = time.Second
	return cfg
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestEndToEnd drives real kvloomd processes with the reference engine:
// stores, peer loads, a concurrent load with hits and misses during which
// Redis is killed and restarted, clients that vanish mid-stream, malformed
// requests, a graceful SIGTERM and a restart that finds everything stored,
// and a peer that is killed. No request may get wrong KV.
func TestEndToEnd(t *testing.T) {
	cl := newClient(t)
	rds := testutil.StartRedis(t)
	ctx := t.Context()

	dirA := t.TempDir()
	cfgA := e2eConfig(t, dirA)
	cfgA.Tiers += "," + rds.URL()
	cfgA.Listen.TCP = freeAddr(t)
	cfgA.Listen.InsecureTCP = true
	cfgA.Peers.Redis = rds.URL()
	cfgA.Listen.MaxRecvBytes = 8 << 20
	a := startProc(t, cfgA)

	cfgB := e2eConfig(t, t.TempDir())
	cfgB.Tiers = "mem:64MiB"
	cfgB.Listen.TCP = freeAddr(t)
	cfgB.Listen.InsecureTCP = true
	cfgB.Peers.Redis = rds.URL()
	b := startProc(t, cfgB)

	prompts := cl.prompts(24)
	stored := prompts[:12]
	cp := newCorpus(t, cl, prompts)
	kvs := cp.kvs
	for i, p := range stored {
		if _, err := hostctl.StoreKV(ctx, a.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: p}, kvs[i], 0); err != nil {
			t.Fatalf("store %d: %v", i, err)
		}
	}

	// B finds A through the Redis directory and loads from it.
	testutil.Eventually(t, "daemon B to learn A's entries", func() bool {
		r, err := b.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: stored[0]})
		return err == nil && r.ReusableTokens > 0
	})
	res, err := hostctl.PrepareAll(ctx, b.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: stored[0], Recompute: "none"})
	if err != nil {
		t.Fatalf("B prepare: %v", err)
	}
	if res.Plan.ReusedTokens == 0 || res.Plan.Ranges[0].Source != api.Source_SOURCE_PEER {
		t.Fatalf("B did not load from A: %v", res.Plan)
	}
	if err := cp.verify(res.Plan, 0); err != nil {
		t.Fatalf("peer load: %v", err)
	}

	// Load: N clients × M requests, hits and misses, Redis killed and
	// restarted in the middle.
	const clients, perClient = 8, 30
	var done atomic.Int64
	var mu sync.Mutex
	var prepLat, lookLat []time.Duration
	var errs []error
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range perClient {
				i := rng.IntN(len(prompts))
				start := time.Now()
				lk, err := a.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: prompts[i]})
				lookDur := time.Since(start)
				var prepDur time.Duration
				if err == nil {
					start = time.Now()
					var r *hostctl.PrepareResult
					r, err = hostctl.PrepareAll(ctx, a.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: prompts[i], Recompute: "none"})
					prepDur = time.Since(start)
					if err == nil {
						err = cp.verify(r.Plan, i)
						if r.Plan.Kv != nil {
							if _, rerr := a.c.Release(ctx, &api.ReleaseRequest{Handle: r.Plan.Kv.Handle}); rerr != nil {
								err = errors.Join(err, rerr)
							}
						}
						if i < len(stored) && r.Plan.ReusedTokens == 0 && lk.ReusableTokens > 0 {
							err = errors.Join(err, fmt.Errorf("prompt %d: lookup said %d reusable, prepare reused none", i, lk.ReusableTokens))
						}
					}
				}
				// A miss is written back, as an engine does after its prefill.
				if err == nil && i >= len(stored) && rng.IntN(3) == 0 {
					_, err = hostctl.StoreKV(ctx, a.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: prompts[i]}, kvs[i], 0)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("prompt %d: %w", i, err))
				} else {
					lookLat = append(lookLat, lookDur)
					prepLat = append(prepLat, prepDur)
				}
				mu.Unlock()
				done.Add(1)
			}
		})
	}
	total := int64(clients * perClient)
	testutil.Eventually(t, "a third of the load", func() bool { return done.Load() >= total/3 })
	rds.Kill(t)
	testutil.Eventually(t, "two thirds of the load", func() bool { return done.Load() >= 2*total/3 })
	// Degrade, don't fail: the daemon says Redis is gone.
	testutil.Eventually(t, "status to report Redis down", func() bool {
		st, err := a.c.Status(ctx, &api.StatusRequest{})
		if err != nil {
			return false
		}
		for _, bk := range st.Backends {
			if bk.Name == "redis_directory" && !bk.Up && bk.Reason != "" {
				return true
			}
		}
		return false
	})
	rds.Restart(t)
	wg.Wait()
	for _, e := range errs {
		t.Error(e)
	}
	t.Logf("load: %d clients × %d requests: Lookup p50 %v p99 %v; Prepare p50 %v p99 %v",
		clients, perClient, pct(lookLat, 50), pct(lookLat, 99), pct(prepLat, 50), pct(prepLat, 99))

	// A client that vanishes mid-stream: a Store cut after part of a layer,
	// a Prepare cancelled after its plan.
	sctx, cancel := context.WithCancel(ctx)
	stream, err := a.c.Store(sctx)
	if err != nil {
		t.Fatal(err)
	}
	cut := prompts[20]
	stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Header{Header: &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: cut}}})
	stream.Send(&api.StoreRequest{Msg: &api.StoreRequest_Layer{Layer: &api.StoreLayer{Layer: 0, Data: kvs[20].Layer(0)[:100]}}})
	cancel()
	pctx, pcancel := context.WithCancel(ctx)
	ps, err := a.c.Prepare(pctx, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: stored[3]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Recv(); err != nil {
		t.Fatal(err)
	}
	pcancel()
	testutil.Eventually(t, "the cut streams to be cleaned up", func() bool {
		s, err := a.c.Stats(ctx, &api.StatsRequest{})
		return err == nil && s.Segments == 0
	})
	lk, err := a.c.Lookup(ctx, &api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: cut})
	if err != nil {
		t.Fatal(err)
	}
	if lk.ReusableTokens != 0 {
		// Only a complete Store indexes anything; prompt 20 may have been
		// stored whole during the load.
		t.Logf("prompt 20 reusable (%d tokens): stored during the load", lk.ReusableTokens)
	}

	// Malformed requests get clear errors and change nothing.
	for _, tc := range []struct {
		req  *api.LookupRequest
		code codes.Code
		msg  string
	}{
		{&api.LookupRequest{Tenant: "acme", Model: "llama-9000", Tokens: stored[0]}, codes.NotFound, "llama-9000"},
		{&api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: []uint32{1, 700, 2}}, codes.InvalidArgument, "token 700 at offset 1"},
		{&api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: make([]uint32, 600)}, codes.OutOfRange, "600 tokens"},
		{&api.LookupRequest{Tenant: "acme", Model: "stories260K", Tokens: make([]uint32, 10<<20)}, codes.ResourceExhausted, "larger than max"},
	} {
		_, err := a.c.Lookup(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("malformed request: %v, want %s mentioning %q", err, tc.code, tc.msg)
		}
	}

	// SIGTERM: graceful, everything flushed; a restart finds it all.
	if code := a.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("kvloomd exited %d after SIGTERM\n%s", code, a.log)
	}
	if !strings.Contains(a.log.String(), "unflushed=0") {
		t.Errorf("shutdown log does not report the flush:\n%s", a.log)
	}
	a2 := startProc(t, cfgA)
	for i, p := range stored {
		r, err := hostctl.PrepareAll(ctx, a2.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: p, Recompute: "none"})
		if err != nil {
			t.Fatalf("after restart, prompt %d: %v", i, err)
		}
		// Every stored block comes back as the prefix; chunks the daemon
		// made of spans shared between prompts may add to it.
		if want := int32(len(p) / 16 * 16); prefixTokens(r.Plan) != want || r.Plan.ReusedTokens < want {
			t.Errorf("after restart, prompt %d: reused %d tokens, %d of them prefix, of %d stored", i, r.Plan.ReusedTokens, prefixTokens(r.Plan), want)
		}
		if err := cp.verify(r.Plan, i); err != nil {
			t.Fatalf("after restart, prompt %d: %v", i, err)
		}
	}

	// A peer killed: B keeps serving, misses instead of failing.
	testutil.Eventually(t, "B to see the restarted A", func() bool {
		r, err := hostctl.PrepareAll(ctx, b.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: stored[5], Recompute: "none"})
		return err == nil && r.Plan.ReusedTokens > 0
	})
	a2.stop(syscall.SIGKILL)
	for i, p := range stored {
		r, err := hostctl.PrepareAll(ctx, b.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: p, Recompute: "none", DeadlineNs: int64(2 * time.Second)})
		if err != nil {
			t.Fatalf("B with its peer dead, prompt %d: %v", i, err)
		}
		if err := cp.verify(r.Plan, i); err != nil {
			t.Fatalf("B with its peer dead, prompt %d: %v", i, err)
		}
	}
	if code := b.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("B exited %d\n%s", code, b.log)
	}
	t.Logf("%d chunk ranges verified (spans shared between prompts that the daemons made chunks of)", cp.chunks.Load())
}

// TestFullDisk: the disk tier's filesystem fills up (a 256 KiB tmpfs); the
// daemon keeps serving from memory, every Prepare stays exact, and the
// shutdown reports the chunks it could not write.
func TestFullDisk(t *testing.T) {
	cl := newClient(t)
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.MkdirAll(disk, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=256k"); err != nil {
		t.Fatalf("mount a 256 KiB tmpfs for the full-disk test (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
	cfg := e2eConfig(t, dir)
	cfg.Tiers = "mem:64MiB,disk:" + disk + ":1GiB"
	d := startProc(t, cfg)
	ctx := t.Context()
	cp := newCorpus(t, cl, cl.prompts(24))
	for i, p := range cp.prompts {
		kv := cp.kvs[i]
		if _, err := hostctl.StoreKV(ctx, d.c, &api.StoreHeader{Tenant: "acme", Model: "stories260K", Tokens: p}, kv, 0); err != nil {
			t.Fatalf("store %d with the disk full: %v", i, err)
		}
		r, err := hostctl.PrepareAll(ctx, d.c, &api.PrepareRequest{Tenant: "acme", Model: "stories260K", Tokens: p, Recompute: "none"})
		if err != nil {
			t.Fatalf("prepare %d: %v", i, err)
		}
		if err := cp.verify(r.Plan, i); err != nil {
			t.Fatalf("prepare %d: %v", i, err)
		}
		if prefixTokens(r.Plan) != int32(len(p)/16*16) {
			t.Fatalf("prepare %d reused %d prefix tokens, want %d", i, prefixTokens(r.Plan), len(p)/16*16)
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(disk, &fs); err != nil {
		t.Fatal(err)
	}
	t.Logf("disk tier filesystem: %d of %d blocks free", fs.Bfree, fs.Blocks)
	code := d.stop(syscall.SIGTERM)
	log := d.log.String()
	if code == 0 && !strings.Contains(log, "unflushed=0") {
		t.Fatalf("exit 0 without a flush report:\n%s", log)
	}
	if code != 0 && !strings.Contains(log, "writeback_failed") {
		t.Fatalf("exit %d without naming what could not be written:\n%s", code, log)
	}
	t.Logf("shutdown with a full disk: exit %d\n%s", code, log[max(0, len(log)-3000):])
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
