package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the repository root: the nearest directory holding
// go.mod at or above the test's working directory (go test runs a test in
// its package's directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod at or above %s: run the tests inside the kvloom checkout", wd)
		}
		dir = parent
	}
}

// SharedTestdata returns the path of rel (path elements, none meaning the
// directory itself) under the workspace's shared test data,
// ../shared/testdata beside the repository root, failing t with where it
// must be when it is absent.
func SharedTestdata(t testing.TB, rel ...string) string {
	t.Helper()
	root := RepoRoot(t)
	base := filepath.Join(filepath.Dir(root), "shared", "testdata")
	p := filepath.Join(append([]string{base}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("shared test data missing: %v (the workspace's shared/ directory must sit beside the repository %s, holding testdata/; each data set's README there says where it comes from)", err, root)
	}
	return p
}

// MooncakeTrace returns the path of the Mooncake conversation trace
// (../shared/testdata/traces/mooncake_conversation_trace.jsonl: 12,031
// requests, see the README beside it), failing t when it is absent.
func MooncakeTrace(t testing.TB) string {
	t.Helper()
	return SharedTestdata(t, "traces", "mooncake_conversation_trace.jsonl")
}
