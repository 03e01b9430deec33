package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
)

func TestGenerateGreedyMatchesRunC(t *testing.T) {
	dir := testutil.Stories260K(t)
	// README reference 2: run -t 0 -i "Zoo" -n 60
	want := "Zoo was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but she didn't want to play with\n"
	for _, args := range [][]string{
		{"generate", "--model", dir, "--prompt", "Zoo", "--tokens", "60", "--temperature", "0"},
		{"generate", "--prompt", "Zoo", "--tokens", "60", "--temperature", "0"}, // default model dir
	} {
		out, err := runCLI(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(out, want) {
			t.Fatalf("%v printed\n%q\nwant\n%q", args, out, want)
		}
	}
}

// story drops the tok/s line that generate writes to stderr (runCLI
// captures both streams).
func story(out string) string {
	s, _, _ := strings.Cut(out, "achieved tok/s")
	return s
}

func TestGenerateSeeded(t *testing.T) {
	args := []string{"generate", "--prompt", "Once upon a time", "--tokens", "80", "--temperature", "0.9", "--seed", "7"}
	a, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	b, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	a, b = story(a), story(b)
	if a != b {
		t.Fatalf("same seed, different stories:\n%q\n%q", a, b)
	}
	args[len(args)-1] = "8"
	c, err := runCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	c = story(c)
	if c == a || !strings.HasPrefix(a, "Once upon a time") || !strings.HasPrefix(c, "Once upon a time") {
		t.Fatalf("seeds 7 and 8:\n%q\n%q", a, c)
	}
}

func TestGenerateErrors(t *testing.T) {
	if _, err := runCLI(t, "generate", "--model", t.TempDir(), "--temperature", "0"); err == nil {
		t.Fatal("empty model dir accepted")
	}
	if _, err := runCLI(t, "generate", "--temperature", "-1"); !errors.Is(err, errUsage) {
		t.Fatalf("negative temperature: %v", err)
	}
	if _, err := runCLI(t, "generate", "--tokens", "-5"); !errors.Is(err, errUsage) {
		t.Fatalf("negative tokens: %v", err)
	}
}
