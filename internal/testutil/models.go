package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// Stories260K returns the directory of the stories260K model in the
// workspace (../shared/testdata/models/stories260K beside the repository
// root), failing t with what to do when it is missing.
func Stories260K(t testing.TB) string {
	t.Helper()
	root := moduleRootForModels(t)
	dir := filepath.Join(filepath.Dir(root), "shared", "testdata", "models", "stories260K")
	for _, f := range []string{"stories260K.bin", "tok512.bin", "reference_once_upon_a_time.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("stories260K model file missing: %v (the workspace's shared/ directory must sit beside the repository, see shared/testdata/models/stories260K/README.md)", err)
		}
	}
	return dir
}

// moduleRootForModels returns the directory holding go.mod, walking up
// from the test's working directory.
func moduleRootForModels(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the test's working directory")
		}
		dir = parent
	}
}
