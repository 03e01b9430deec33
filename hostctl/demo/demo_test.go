package demo

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvloom/kvloom/engine"
	"github.com/kvloom/kvloom/hostctl/api"
	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/kvcache"
	"github.com/kvloom/kvloom/matcher"
)

// small is a demo sized for tests: every part runs, on few requests.
func small(t *testing.T) Options {
	t.Helper()
	return Options{
		ModelDir: testutil.Stories260K(t), Conversations: 2, Turns: 3, Reply: 16,
		Docs: 6, Prompts: 6, MaxDocs: 4, Continue: 12, TempDir: t.TempDir(),
	}
}

func TestRun(t *testing.T) {
	opts := small(t)
	opts.Keep = true
	sum, err := Run(t.Context(), opts)
	if err != nil {
		t.Fatalf("Run: %v (summary %+v)", err, sum)
	}
	if !sum.OK || len(sum.Failures) != 0 {
		t.Fatalf("checks failed: %q", sum.Failures)
	}
	ck := sum.Checks
	if !ck.PrefixEqual || !ck.KVVerified || !ck.CountersAgree || !ck.LookupAgrees || !ck.Isolation || !ck.BlendedFinite || !ck.Shutdown || !ck.TempRemoved {
		t.Fatalf("checks: %+v", ck)
	}
	// Every request was served: 2 conversations x 3 turns and 6 RAG prompts.
	if n := 2*3 + 6; sum.Requests.Prepare != n || sum.Requests.Served != n || sum.Requests.Daemon != n {
		t.Fatalf("requests %+v, want %d prepared and served", sum.Requests, n)
	}
	// Turns after the first reuse their history, as a prefix only, and
	// their output is the full prefill's.
	if sum.Chat.WithReuse != 2*2 || sum.Chat.Prefix == 0 || sum.Chat.NonPrefix != 0 {
		t.Fatalf("chat reuse %+v, want 4 requests reusing a prefix", sum.Chat)
	}
	if e := sum.PrefixOnly; e.Requests < 4 || e.Equal != e.Requests || e.MaxLogitDiff > LogitTolerance {
		t.Fatalf("prefix-only equality %+v", e)
	}
	// Every RAG prompt reuses its stories; all but the first one are moved.
	if sum.RAG.WithReuse != 6 || sum.RAG.NonPrefix == 0 || sum.RAG.Prefix == 0 || sum.Reuse.Rotated != sum.RAG.NonPrefix {
		t.Fatalf("rag reuse %+v (rotated %d)", sum.RAG, sum.Reuse.Rotated)
	}
	if sum.Blended.Requests != 6 || len(sum.Blended.Policies) != 3 {
		t.Fatalf("blended %+v", sum.Blended)
	}
	kl := map[string]float64{}
	for _, q := range sum.Blended.Policies {
		if math.IsNaN(q.MeanKL) || q.MeanKL < 0 || q.Top1 <= 0 || q.Top1 > 1 {
			t.Fatalf("quality row %+v", q)
		}
		kl[strings.Fields(q.Policy)[0]] = q.MeanKL
	}
	// Recomputing what CacheBlend selects beats the stitched KV alone.
	if !(kl["engine"] < kl["stitched"]) || kl["stitched"] == 0 {
		t.Fatalf("mean KL %v: want CacheBlend below the stitched KV's, which is above 0", kl)
	}
	// The daemon moved bytes through its memory tier and wrote back to disk.
	tiers := map[string]Tier{}
	for _, tr := range sum.Tiers {
		name, _, _ := strings.Cut(tr.Tier, ":")
		tiers[name] = tr
	}
	if tiers["mem"].BytesRead == 0 || tiers["mem"].BytesWritten == 0 || tiers["disk"].BytesWritten == 0 {
		t.Fatalf("tiers %+v", sum.Tiers)
	}
	if sum.Device.Requests != uint64(sum.Requests.Prepare) || sum.Device.Backend != "sim" {
		t.Fatalf("device %+v", sum.Device)
	}
	if sum.Prefill.Total.Full <= 0 || sum.Prefill.Total.Reuse <= 0 {
		t.Fatalf("prefill times %+v", sum.Prefill.Total)
	}
	// Kept: the data directory holds the disk tier and the journal; the
	// socket and the segments are gone.
	if sum.Daemon.KeptDataDir != sum.Daemon.DataDir {
		t.Fatalf("kept %q, data dir %q", sum.Daemon.KeptDataDir, sum.Daemon.DataDir)
	}
	if _, err := os.Stat(filepath.Join(sum.Daemon.DataDir, "index.journal")); err != nil {
		t.Fatalf("kept data directory: %v", err)
	}
	for _, p := range []string{sum.Daemon.SegmentDir, strings.TrimPrefix(sum.Daemon.Socket, "unix://")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind (%v)", p, err)
		}
	}
	var out strings.Builder
	if err := sum.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"output equality with a full prefill", "engine CacheBlend ratio:0.15", "all checks passed", "data directory kept"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("text summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Options)
	}{
		{"no model", func(o *Options) { o.ModelDir = "" }},
		{"one turn", func(o *Options) { o.Turns = 1 }},
		{"negative conversations", func(o *Options) { o.Conversations = -1 }},
		{"one document", func(o *Options) { o.Docs = 1 }},
		{"more per prompt than documents", func(o *Options) { o.MaxDocs = 7 }},
		{"bad policy", func(o *Options) { o.Recompute = "sometimes" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{ModelDir: "x", Docs: 6}
			tc.edit(&o)
			if _, err := Run(t.Context(), o); !errors.Is(err, ErrOptions) {
				t.Fatalf("Run: %v, want ErrOptions", err)
			}
		})
	}
	// A conversation longer than the model's positions is refused with what
	// to change, and leaves nothing behind.
	o := small(t)
	o.Conversations, o.Turns, o.Reply = 1, 2, 500 // the second turn cannot fit
	_, err := Run(t.Context(), o)
	if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "fewer turns") {
		t.Fatalf("Run: %v, want ErrOptions naming the turns", err)
	}
	if ents, err := os.ReadDir(o.TempDir); err != nil || len(ents) != 0 {
		t.Fatalf("temp dir holds %v (%v) after a failed run", ents, err)
	}
}

// testClient starts a daemon as Run does and returns the engine client
// talking to it; the test's end stops it.
func testClient(t *testing.T) (*client, *engine.Tokenizer) {
	t.Helper()
	opts := small(t)
	if err := opts.defaults(); err != nil {
		t.Fatal(err)
	}
	e, tok, err := engine.Open(opts.ModelDir)
	if err != nil {
		t.Fatal(err)
	}
	model, models, err := modelConfig(e, opts.ModelDir)
	if err != nil || model != "stories260K" || models != nil {
		t.Fatalf("model config %q %v %v", model, models, err)
	}
	em, err := startDaemon(t.Context(), &opts, models)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if rep := em.stop(context.Background(), false); rep.Err != nil || rep.ServeErr != nil || !rep.Removed || rep.Unflushed != 0 {
			t.Errorf("stop: %+v", rep)
		}
	})
	cl, err := newClient(e, em.c, model)
	if err != nil {
		t.Fatal(err)
	}
	return cl, tok
}

// TestVerifyKV stores a story, prepares a prompt that moves it, and checks
// that the KV verification accepts the daemon's stitched KV and refuses it
// once what the engine stored no longer matches.
func TestVerifyKV(t *testing.T) {
	cl, tok := testClient(t)
	doc := tok.Encode("The little dog ran to the big tree and barked at the cat. The cat jumped down and ran away. The dog was happy.", false, false)
	st := cl.full
	st.Reset()
	if _, err := st.Forward(append([]engine.Token{engine.TokenBOS}, doc...)); err != nil {
		t.Fatal(err)
	}
	if err := cl.store(t.Context(), "library", true, st, []*api.ChunkSpan{{Start: 1, Length: int32(len(doc))}}); err != nil {
		t.Fatal(err)
	}
	prompt := append(tok.Encode("Tom had a red ball.", true, false), doc...)
	prompt = append(prompt, tok.Encode("Then", false, false)...)
	p, err := cl.prepare(t.Context(), "alice", prompt, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cl.release(context.Background(), p); err != nil {
			t.Errorf("release: %v", err)
		}
	}()
	if _, chunk := p.reused(); chunk != len(doc) {
		t.Fatalf("reused %d non-prefix tokens, want the %d-token story", chunk, len(doc))
	}
	if _, err := cl.reference(prompt, 4); err != nil {
		t.Fatal(err)
	}
	if bad := cl.verifyKV(p, prompt); len(bad) != 0 {
		t.Fatalf("verifyKV on the daemon's KV: %q", bad)
	}
	// Change one V value of the story as the engine remembers storing it:
	// the daemon's KV no longer matches it.
	key := matcher.ChunkKeyOf(cl.shared, doc)
	sk, ok := cl.stored[key]
	if !ok || sk.base != 1 {
		t.Fatalf("the story's chunk is not remembered (%v, base %d)", ok, sk.base)
	}
	altered, err := kvcache.WrapKV(sk.kv.Shape(), sk.kv.Tokens(), slices.Clone(sk.kv.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	altered.Row(2, true, sk.base+3)[0] ^= 0x40
	sk.kv = altered
	cl.stored[key] = sk
	bad := cl.verifyKV(p, prompt)
	if len(bad) == 0 || !strings.Contains(bad[0], "V differs") {
		t.Fatalf("verifyKV on altered KV: %q, want a V difference", bad)
	}
}

// TestWholePromptReused sends a prompt the daemon holds entirely: the
// engine computes the last position itself (it needs its logits) and the
// output is still the full prefill's.
func TestWholePromptReused(t *testing.T) {
	cl, tok := testClient(t)
	toks := tok.Encode("Once upon a time there was a little girl named Lily. She loved to play outside with her dog and her red ball.", true, false)
	if len(toks) < 2*chunkTokens {
		t.Fatalf("prompt of %d tokens", len(toks))
	}
	toks = toks[:2*chunkTokens]
	st := cl.full
	st.Reset()
	if _, err := st.Forward(toks); err != nil {
		t.Fatal(err)
	}
	if err := cl.store(t.Context(), "alice", false, st, nil); err != nil {
		t.Fatal(err)
	}
	p, err := cl.prepare(t.Context(), "alice", toks, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cl.release(context.Background(), p); err != nil {
			t.Errorf("release: %v", err)
		}
	}()
	if prefix, _ := p.reused(); prefix != len(toks) || p.tokens() != len(toks) {
		t.Fatalf("reused %d of %d tokens (segment %d)", prefix, len(toks), p.tokens())
	}
	ref, err := cl.reference(toks, 8)
	if err != nil {
		t.Fatal(err)
	}
	if bad := cl.verifyKV(p, toks); len(bad) != 0 {
		t.Fatalf("verifyKV: %q", bad)
	}
	run, err := cl.run(t.Context(), p, toks, ref, pathSpec{kind: pathPlan})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, match, diff := score(ref, run); diff > LogitTolerance || match != len(ref.cont) || run.stats.New != 1 {
		t.Fatalf("max |logit diff| %g, greedy match %d of %d, %d new tokens", diff, match, len(ref.cont), run.stats.New)
	}
}

// cancelWriter cancels the run the first time the progress bar draws.
type cancelWriter struct{ cancel context.CancelFunc }

func (w cancelWriter) Write(b []byte) (int, error) {
	w.cancel()
	return len(b), nil
}

// TestCancel interrupts a run (Ctrl-C): it ends with the context's error
// and still shuts the daemon down and removes its directories (TestMain
// checks the goroutines).
func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opts := small(t)
	opts.Progress = cancelWriter{cancel}
	sum, err := Run(ctx, opts)
	if !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
		t.Fatalf("Run: %v, want the cancellation", err)
	}
	if sum != nil {
		t.Fatalf("a cancelled run returned a summary: %+v", sum)
	}
	if ents, err := os.ReadDir(opts.TempDir); err != nil || len(ents) != 0 {
		t.Fatalf("temp dir holds %v (%v) after a cancelled run", ents, err)
	}
}

// TestOtherModel runs the demo on a llama2.c model that is not a built-in
// preset (stories260K with one weight changed, so its fingerprint differs):
// the daemon serves it from the checkpoint itself.
func TestOtherModel(t *testing.T) {
	src := testutil.Stories260K(t)
	dir := t.TempDir()
	for _, f := range []string{"stories260K.bin", "tok512.bin"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "stories260K.bin" {
			b[engine.HeaderSize+100] ^= 1 // the lowest mantissa bit of one weight
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{ModelDir: dir, Conversations: 1, Turns: 2, Reply: 16, Docs: 3, Prompts: 2, MaxDocs: 3, Continue: 4, TempDir: t.TempDir()}
	sum, err := Run(t.Context(), opts)
	if err != nil {
		t.Fatalf("Run: %v (summary %+v)", err, sum)
	}
	if sum.Model.Name != "demo-stories260K" || sum.Reuse.Reused == 0 || !sum.OK {
		t.Fatalf("model %+v, reused %d, failures %q", sum.Model, sum.Reuse.Reused, sum.Failures)
	}
}
