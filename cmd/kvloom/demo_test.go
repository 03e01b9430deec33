package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	out, err := runCLI(t, "demo", "--prompts", "20", "--cache-dir", t.TempDir())
	if err != nil {
		t.Fatalf("kvloom demo: %v\n%s", err, out)
	}
	for _, want := range []string{"corpus ", "index ", "RAG ", "chat ", "hot ", "tokens of alice's history leaked: 0", "done in"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Every retrieved document is found: "found whole: N of N".
	i := strings.Index(out, "found whole: ")
	if i < 0 {
		t.Fatalf("demo output lacks the found-documents line:\n%s", out)
	}
	var found, of int
	if _, err := fmt.Sscanf(out[i:], "found whole: %d of %d", &found, &of); err != nil || found != of || of == 0 {
		t.Fatalf("demo found %d of %d retrieved documents (%v)", found, of, err)
	}
}
