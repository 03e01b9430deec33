package evict

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func traceFile(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory: cannot locate ../shared/testdata")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", "traces", "mooncake_conversation_trace.jsonl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Mooncake trace missing at %s (the workspace's shared/testdata must sit beside the repository): %v", p, err)
	}
	return p
}

func TestReadMooncake(t *testing.T) {
	good := `{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}

{"timestamp": 3.5, "input_length": 512, "output_length": 0, "hash_ids": [1]}`
	tr, err := ReadMooncake(strings.NewReader(good), "t", 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Requests) != 2 || tr.Requests[0].BlockTokens(1, 512) != 88 || tr.Requests[1].Timestamp != 3.5 {
		t.Fatalf("trace %+v", tr)
	}
	bad := []struct{ name, in, want string }{
		{"unknown field", `{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1], "x": 3}`, "line 1"},
		{"missing ids", `{"timestamp": 0, "input_length": 10, "output_length": 1}`, "missing hash_ids"},
		{"count", `{"timestamp": 0, "input_length": 1500, "output_length": 1, "hash_ids": [1, 2]}`, "want 3"},
		{"negative id", `{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [-1]}`, "hash_ids[0] = -1"},
		{"order", "{\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n{\"timestamp\": 4, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}", "line 2"},
		{"empty", "", "no requests"},
		{"zero length", `{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}`, "input_length 0"},
	}
	for _, tc := range bad {
		tr, err := ReadMooncake(strings.NewReader(tc.in), "t", 512)
		if tr != nil || !errors.Is(err, ErrTrace) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v (trace %v), want ErrTrace mentioning %q", tc.name, err, tr != nil, tc.want)
		}
	}
}

func TestReplayPrefixSemantics(t *testing.T) {
	tr := &Trace{BlockTokens: 512, Requests: []Request{
		{InputLength: 1500, Blocks: []uint64{1, 2, 3}},
		{InputLength: 1100, Blocks: []uint64{1, 2, 9}}, // hits 1, 2
		{InputLength: 1100, Blocks: []uint64{7, 2, 3}}, // 2, 3 resident but after a miss: no hit
	}}
	res := Replay(tr, NewLRU[uint64](100))
	if res.HitTokens != 1024 || res.BlockHits != 2 || res.Tokens != 3700 {
		t.Fatalf("replay %+v: want 1024 hit tokens from 2 prefix blocks", res)
	}
}

// The shipped policy must match or beat LRU's token hit ratio on the real
// trace at 1K, 10K and 50K blocks (issue 5).
func TestShippedPolicyBeatsLRUOnMooncake(t *testing.T) {
	tr, err := ReadMooncakeFile(traceFile(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Requests) != 12031 {
		t.Fatalf("%d requests, the published trace has 12031", len(tr.Requests))
	}
	for _, c := range []int64{1000, 10000, 50000} {
		lru, err := ReplayPolicy(tr, LRU, c)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := ReplayPolicy(tr, DefaultPolicy, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("capacity %d blocks: %s %.4f, lru %.4f", c, DefaultPolicy, ours.TokenHitRatio, lru.TokenHitRatio)
		if ours.TokenHitRatio < lru.TokenHitRatio {
			t.Errorf("capacity %d: %s token hit ratio %.4f < lru %.4f", c, DefaultPolicy, ours.TokenHitRatio, lru.TokenHitRatio)
		}
		if lru.TokenHitRatio <= 0 || lru.TokenHitRatio > 0.3736 {
			t.Errorf("capacity %d: lru ratio %.4f outside (0, unbounded 0.3736]", c, lru.TokenHitRatio)
		}
	}
	unbounded, err := ReplayPolicy(tr, LRU, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	// The trace README: about 37% of prompt tokens are reusable.
	if r := unbounded.TokenHitRatio; r < 0.36 || r > 0.38 {
		t.Fatalf("unbounded hit ratio %.4f, the trace README says about 37%%", r)
	}
}

func FuzzReadMooncake(f *testing.F) {
	f.Add([]byte(`{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}`))
	f.Add([]byte("{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [7]}\n\n{\"timestamp\": 2, \"input_length\": 1024, \"output_length\": 0, \"hash_ids\": [7, 8]}"))
	f.Add([]byte(`{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [-1]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := ReadMooncake(strings.NewReader(string(b)), "fuzz", 512)
		if err != nil {
			if tr != nil {
				t.Fatal("error with a non-nil trace")
			}
			if !errors.Is(err, ErrTrace) {
				t.Fatalf("error %v does not wrap ErrTrace", err)
			}
			return
		}
		last := 0.0
		for i, r := range tr.Requests {
			if r.InputLength <= 0 || len(r.Blocks) != (r.InputLength+511)/512 || r.Timestamp < last {
				t.Fatalf("request %d inconsistent: %+v", i, r)
			}
			last = r.Timestamp
			if n := r.BlockTokens(len(r.Blocks)-1, 512); n <= 0 || n > 512 {
				t.Fatalf("request %d: last block has %d tokens", i, n)
			}
		}
		// Replaying whatever parsed never panics and stays consistent.
		res := Replay(tr, NewSLRU[uint64](4))
		if res.HitTokens > res.Tokens {
			t.Fatalf("hit tokens %d > tokens %d", res.HitTokens, res.Tokens)
		}
	})
}
