package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mooncakeTrace(t *testing.T) string {
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
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "testdata", "traces", "mooncake_conversation_trace.jsonl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Mooncake trace missing at %s (the workspace's shared/testdata must sit beside the repository): %v", p, err)
	}
	return p
}

func TestTraceReplay(t *testing.T) {
	tr := mooncakeTrace(t)
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
