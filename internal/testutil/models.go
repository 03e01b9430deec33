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
	dir := SharedTestdata(t, "models", "stories260K")
	for _, f := range []string{"stories260K.bin", "tok512.bin", "reference_once_upon_a_time.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("stories260K model file missing: %v (the workspace's shared/ directory must sit beside the repository, see shared/testdata/models/stories260K/README.md)", err)
		}
	}
	return dir
}
