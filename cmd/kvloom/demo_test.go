package main

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/kvloom/kvloom/hostctl/demo"
)

// TestDemo runs `kvloom demo --json` in-process on small sizes and checks
// the summary's invariants, and that the run left nothing behind: no
// goroutine, no directory, no socket.
func TestDemo(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	out, err := runCLI(t, "demo", "--json", "--conversations", "2", "--turns", "3", "--reply", "16",
		"--docs", "6", "--prompts", "5", "--max-docs", "4", "--continue", "12", "--seed", "3")
	if err != nil {
		t.Fatalf("kvloom demo: %v\n%s", err, out)
	}
	var sum demo.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("demo --json printed no summary: %v\n%s", err, out)
	}
	if !sum.OK || len(sum.Failures) != 0 {
		t.Fatalf("demo checks failed: %q", sum.Failures)
	}
	// Every request served.
	if n := 2*3 + 5; sum.Requests.Prepare != n || sum.Requests.Served != n || sum.Requests.Daemon != n {
		t.Fatalf("requests %+v, want %d prepared and served", sum.Requests, n)
	}
	// Prefix reuse gives the full prefill's output.
	if e := sum.PrefixOnly; !sum.Checks.PrefixEqual || e.Requests == 0 || e.Equal != e.Requests || e.MaxLogitDiff > e.Tolerance {
		t.Fatalf("prefix-only equality %+v (check %v)", e, sum.Checks.PrefixEqual)
	}
	// Both workloads reuse; RAG outside the prefix too.
	if sum.Chat.Prefix == 0 || sum.RAG.Prefix+sum.RAG.NonPrefix == 0 || sum.RAG.NonPrefix == 0 {
		t.Fatalf("reuse: chat %+v, rag %+v", sum.Chat, sum.RAG)
	}
	// Blended quality: finite, and the stitched KV alone is worse than
	// CacheBlend's recompute.
	kl := map[string]float64{}
	for _, q := range sum.Blended.Policies {
		if math.IsNaN(q.MeanKL) || math.IsInf(q.MeanKL, 0) || q.MeanKL < 0 {
			t.Fatalf("blended KL %v for %s", q.MeanKL, q.Policy)
		}
		kl[strings.Fields(q.Policy)[0]] = q.MeanKL
	}
	if len(kl) != 3 || !(kl["engine"] < kl["stitched"]) {
		t.Fatalf("blended mean KL %v: want CacheBlend below the stitched KV's", kl)
	}
	if !sum.Checks.KVVerified || sum.Checks.RangesChecked == 0 || !sum.Checks.Shutdown || !sum.Checks.TempRemoved {
		t.Fatalf("checks %+v", sum.Checks)
	}
	// Nothing left running or lying around.
	for _, p := range []string{filepath.Dir(sum.Daemon.DataDir), sum.Daemon.SegmentDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left behind (%v)", p, err)
		}
	}
}

func TestDemoText(t *testing.T) {
	out, err := runCLI(t, "demo", "--conversations", "1", "--turns", "2", "--reply", "16",
		"--docs", "4", "--prompts", "2", "--max-docs", "3", "--continue", "4")
	if err != nil {
		t.Fatalf("kvloom demo: %v\n%s", err, out)
	}
	for _, want := range []string{"chat ", "rag ", "output equality with a full prefill", "quality of", "tiers ", "prefill ", "device ", "all checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if _, err := runCLI(t, "demo", "--turns", "1"); !errors.Is(err, errUsage) {
		t.Fatalf("demo --turns 1: %v, want a usage error", err)
	}
}
