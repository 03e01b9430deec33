package sim

import (
	"errors"
	"reflect"
	"testing"
)

func TestChatGenerator(t *testing.T) {
	w, err := Chat(ChatOptions{Sessions: 50, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	again, err := Chat(ChatOptions{Sessions: 50, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(w, again) {
		t.Fatal("the same seed gave a different workload")
	}
	other, _ := Chat(ChatOptions{Sessions: 50, Seed: 8})
	if reflect.DeepEqual(w, other) {
		t.Fatal("another seed gave the same workload")
	}
	// Every prompt starts with the shared system prompt's two full blocks,
	// and a later turn of a conversation extends an earlier turn's full
	// blocks: prefix keys recur.
	sys := w.Requests[0].Prefix[1]
	seen := map[uint64]int{}
	reused := 0
	for _, r := range w.Requests {
		if r.Prefix[1] != sys || r.Blocks[0].Tokens != 512 {
			t.Fatal("a prompt does not start with the system prompt")
		}
		for j, k := range r.Prefix {
			if j >= 2 && seen[k] > 0 {
				reused++
			}
			seen[k]++
		}
	}
	if reused == 0 {
		t.Fatal("no conversation reuses its history")
	}
	if _, err := Chat(ChatOptions{SessionRate: -1}); !errors.Is(err, ErrConfig) {
		t.Fatalf("negative rate: %v", err)
	}
}

func TestRAGGenerator(t *testing.T) {
	w, err := RAG(RAGOptions{Requests: 400, Documents: 50, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	// A popular document's chunks appear at several positions: the same
	// content id after different prefixes (non-prefix reuse).
	pos := map[uint64]map[int]bool{}
	for _, r := range w.Requests {
		for j, b := range r.Blocks {
			if pos[b.ID] == nil {
				pos[b.ID] = map[int]bool{}
			}
			pos[b.ID][j] = true
		}
	}
	moved := 0
	for _, ps := range pos {
		if len(ps) > 1 {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no document chunk appears at two positions")
	}
	// Zipf popularity: the most used document chunk is used far more often
	// than the median one.
	counts := map[uint64]int{}
	for _, r := range w.Requests {
		for _, b := range r.Blocks[1:] {
			counts[b.ID]++
		}
	}
	top := 0
	for _, c := range counts {
		top = max(top, c)
	}
	if top < 40 {
		t.Fatalf("the most popular chunk is in only %d of 400 prompts; Zipf(1.1) over 50 documents should give far more", top)
	}
	if _, err := RAG(RAGOptions{Zipf: 0.9}); !errors.Is(err, ErrConfig) {
		t.Fatalf("Zipf exponent 0.9: %v", err)
	}
	if _, err := RAG(RAGOptions{Documents: 2, DocsPerRequest: 3}); !errors.Is(err, ErrConfig) {
		t.Fatalf("more documents per prompt than in the corpus: %v", err)
	}
}
