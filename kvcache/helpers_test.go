package kvcache

import (
	"os"
	"path/filepath"
	"testing"
)

// sharedTestdata returns ../shared/testdata relative to the module root,
// failing the test (never skipping) when it is absent.
func sharedTestdata(t testing.TB) string {
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
	td := filepath.Join(dir, "..", "shared", "testdata")
	if _, err := os.Stat(td); err != nil {
		t.Fatalf("shared test data missing at %s (the workspace's shared/testdata must sit beside the repository): %v", td, err)
	}
	return td
}

func stories260KDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join(sharedTestdata(t), "models", "stories260K")
	for _, f := range []string{"stories260K.bin", "reference_once_upon_a_time.json"} {
		if _, err := os.Stat(filepath.Join(d, f)); err != nil {
			t.Fatalf("stories260K test model file missing: %v", err)
		}
	}
	return d
}
