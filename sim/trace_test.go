package sim

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// TestMooncakeTrace checks the reader against the facts the trace's README
// states: 12,031 requests, mean input 12,035 tokens, and about 37% of
// prompt tokens served by an unbounded prefix cache in arrival order.
func TestMooncakeTrace(t *testing.T) {
	w := mooncake(t)
	if len(w.Requests) != 12031 {
		t.Fatalf("%d requests, want 12031", len(w.Requests))
	}
	mean := float64(w.PromptTokens()) / float64(len(w.Requests))
	if math.Abs(mean-12035) > 1 {
		t.Fatalf("mean input %v tokens, want 12035", mean)
	}
	seen := map[uint64]bool{}
	var hit int64
	for i := range w.Requests {
		r := &w.Requests[i]
		for j, b := range r.Blocks {
			if !seen[r.Prefix[j]] {
				break
			}
			hit += int64(b.Tokens)
		}
		for _, k := range r.Prefix {
			seen[k] = true
		}
	}
	ratio := float64(hit) / float64(w.PromptTokens())
	if ratio < 0.36 || ratio > 0.38 {
		t.Fatalf("unbounded prefix-cache hit ratio %.3f, want about 0.37", ratio)
	}
	last := w.Requests[len(w.Requests)-1]
	if last.Arrival != 3536999*time.Millisecond {
		t.Fatalf("last arrival %v, want 3536.999s", last.Arrival)
	}
	// Equal hash ids mean equal prefixes: the prefix keys follow the ids.
	a, b := &w.Requests[0], &w.Requests[1]
	if a.Blocks[0].ID != b.Blocks[0].ID || a.Prefix[0] != b.Prefix[0] || a.Prefix[1] == b.Prefix[1] {
		t.Fatal("prefix keys do not follow the hash ids")
	}
	if s := w.Speed(2); s.Requests[len(s.Requests)-1].Arrival != last.Arrival/2 || w.Requests[len(w.Requests)-1].Arrival != last.Arrival {
		t.Fatal("Speed must halve arrivals of a copy")
	}
}

// TestMooncakeSmall checks block sizes, arrivals and blank lines on a
// trace small enough to read.
func TestMooncakeSmall(t *testing.T) {
	src := `{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}

{"timestamp": 3.5, "input_length": 512, "output_length": 0, "hash_ids": [1]}`
	w, err := ReadMooncake(strings.NewReader(src), "t", 512)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Requests) != 2 {
		t.Fatalf("%d requests, want 2 (the blank line skipped)", len(w.Requests))
	}
	a, b := &w.Requests[0], &w.Requests[1]
	if a.Tokens != 600 || a.Output != 5 || len(a.Blocks) != 2 || a.Blocks[0] != (Block{ID: 1, Tokens: 512}) || a.Blocks[1] != (Block{ID: 2, Tokens: 88}) {
		t.Fatalf("request 0 = %+v, want blocks 1 (512 tokens) and 2 (88)", a)
	}
	if b.Arrival != 3500*time.Microsecond || b.Tokens != 512 || b.Blocks[0] != (Block{ID: 1, Tokens: 512}) || b.Prefix[0] != a.Prefix[0] {
		t.Fatalf("request 1 = %+v, want block 1 at 3.5ms sharing request 0's first prefix key", b)
	}
}

func TestMooncakeErrors(t *testing.T) {
	good := `{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}`
	cases := []struct {
		name, src string
		want      []string
	}{
		{"empty", "\n\n", []string{"no requests"}},
		{"not json", good + "\n{nope", []string{"line 2"}},
		{"unknown field", `{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1], "tenant": 3}`, []string{"line 1", "tenant"}},
		{"missing hash_ids", `{"timestamp": 0, "input_length": 10, "output_length": 1}`, []string{"line 1", "missing hash_ids"}},
		{"missing timestamp", `{"input_length": 10, "output_length": 1, "hash_ids": [1]}`, []string{"missing timestamp"}},
		{"wrong count", `{"timestamp": 0, "input_length": 1500, "output_length": 1, "hash_ids": [1, 2]}`, []string{"line 1", "2 hash_ids", "want 3"}},
		{"negative length", `{"timestamp": 0, "input_length": -4, "output_length": 1, "hash_ids": []}`, []string{"input_length -4"}},
		{"zero length", `{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}`, []string{"input_length 0"}},
		{"too long", `{"timestamp": 0, "input_length": 99999999999, "output_length": 1, "hash_ids": [1]}`, []string{"input_length 99999999999"}},
		{"backwards", good + "\n" + strings.Replace(good, `"timestamp": 0`, `"timestamp": 5`, 1) + "\n" + good, []string{"line 3", "before the previous"}},
		{"negative id", `{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [-1]}`, []string{"hash_ids[0] = -1"}},
		{"two values", good + " " + good, []string{"more than one"}},
		{"nan-ish timestamp", `{"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [1]}`, []string{"timestamp -1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w, err := ReadMooncake(strings.NewReader(c.src), "t.jsonl", 512)
			if err == nil {
				t.Fatal("read succeeded, want an error")
			}
			if w != nil {
				t.Fatal("a failed read returned a workload")
			}
			if !errors.Is(err, ErrTrace) {
				t.Errorf("error %q does not wrap ErrTrace", err)
			}
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	if _, err := ReadMooncake(strings.NewReader(good), "x", 0); !errors.Is(err, ErrConfig) {
		t.Errorf("block size 0: %v", err)
	}
	if _, err := ReadMooncakeFile("/nonexistent/trace.jsonl", 512); err == nil || !strings.Contains(err.Error(), "open trace") {
		t.Errorf("missing file: %v", err)
	}
}

// FuzzReadMooncake: no input panics the reader; an error wraps ErrTrace and
// comes with no workload; a workload is consistent (token counts add up,
// arrivals are ordered, one prefix key per block).
func FuzzReadMooncake(f *testing.F) {
	f.Add([]byte(`{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [1, 2]}`))
	f.Add([]byte("{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [7]}\n\n{\"timestamp\": 2, \"input_length\": 1024, \"output_length\": 0, \"hash_ids\": [7, 8]}"))
	f.Add([]byte(`{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [-1]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ReadMooncake(strings.NewReader(string(data)), "fuzz", 512)
		if err != nil {
			if w != nil {
				t.Fatal("error with a workload")
			}
			if !errors.Is(err, ErrTrace) {
				t.Fatalf("error %v does not wrap ErrTrace", err)
			}
			return
		}
		var last time.Duration
		for i := range w.Requests {
			r := &w.Requests[i]
			if r.Arrival < last || len(r.Prefix) != len(r.Blocks) || len(r.Blocks) == 0 {
				t.Fatalf("request %d inconsistent: %+v", i, r)
			}
			last = r.Arrival
			var sum int32
			for j, b := range r.Blocks {
				if b.Tokens <= 0 || b.Tokens > 512 || (j < len(r.Blocks)-1 && b.Tokens != 512) {
					t.Fatalf("request %d block %d has %d tokens", i, j, b.Tokens)
				}
				sum += b.Tokens
			}
			if sum != r.Tokens {
				t.Fatalf("request %d: blocks hold %d tokens, Tokens = %d", i, sum, r.Tokens)
			}
		}
	})
}
