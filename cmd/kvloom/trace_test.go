package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/store/evict"
)

func TestTraceReplay(t *testing.T) {
	tr := testutil.MooncakeTrace(t)
	out, err := runCLI(t, "trace", "replay", "--trace", tr, "--capacity", "1000", "--json")
	if err != nil {
		t.Fatalf("trace replay: %v\n%s", err, out)
	}
	var rep replayReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("output is not the JSON report: %v\n%s", err, out)
	}
	if rep.Requests != 12031 || len(rep.Results) != 1 {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Results[0]
	if r.Capacity != 1000 || r.LRU.Policy != "lru" || r.Policy.TokenHitRatio < r.LRU.TokenHitRatio || r.LRU.TokenHitRatio <= 0 {
		t.Fatalf("row %+v: want the shipped policy at or above LRU", r)
	}
	text, err := runCLI(t, "trace", "replay", "--trace", tr, "--capacity", "500", "--policy", "all")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"slru", "s3fifo", "wtinylfu", "arc", "vs lru"} {
		if !strings.Contains(text, p) {
			t.Errorf("text report lacks %q:\n%s", p, text)
		}
	}
	for _, args := range [][]string{
		{"trace", "replay"},
		{"trace", "replay", "--trace", tr, "--policy", "mru"},
		{"trace", "replay", "--trace", tr, "--capacity", "0"},
	} {
		if _, err := runCLI(t, args...); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	if err := os.WriteFile(bad, []byte(`{"timestamp": 0, "input_length": 1500, "output_length": 1, "hash_ids": [1]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, "trace", "replay", "--trace", bad); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("malformed trace: %v, want an error naming the line", err)
	}
}

// The shipped policy must match or beat LRU's token hit ratio on the real
// trace at 1K, 10K and 50K blocks (issue 5), read as `trace replay` reads it.
func TestShippedPolicyBeatsLRUOnMooncake(t *testing.T) {
	tr, err := readReplayTrace(testutil.MooncakeTrace(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Requests) != 12031 || tr.BlockTokens != 512 {
		t.Fatalf("%d requests of %d-token blocks, the published trace has 12031 of 512", len(tr.Requests), tr.BlockTokens)
	}
	for _, c := range []int64{1000, 10000, 50000} {
		lru, err := evict.ReplayPolicy(tr, evict.LRU, c)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := evict.ReplayPolicy(tr, evict.DefaultPolicy, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("capacity %d blocks: %s %.4f, lru %.4f", c, evict.DefaultPolicy, ours.TokenHitRatio, lru.TokenHitRatio)
		if ours.TokenHitRatio < lru.TokenHitRatio {
			t.Errorf("capacity %d: %s token hit ratio %.4f < lru %.4f", c, evict.DefaultPolicy, ours.TokenHitRatio, lru.TokenHitRatio)
		}
		if lru.TokenHitRatio <= 0 || lru.TokenHitRatio > 0.3736 {
			t.Errorf("capacity %d: lru ratio %.4f outside (0, unbounded 0.3736]", c, lru.TokenHitRatio)
		}
	}
	unbounded, err := evict.ReplayPolicy(tr, evict.LRU, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	// The trace README: about 37% of prompt tokens are reusable.
	if r := unbounded.TokenHitRatio; r < 0.36 || r > 0.38 {
		t.Fatalf("unbounded hit ratio %.4f, the trace README says about 37%%", r)
	}
}
