package sim

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kvloom/kvloom/sim/topology"
)

// repoRoot walks up from the package directory to the one holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the package directory")
		}
		dir = parent
	}
}

// tracePath is the shared Mooncake trace; its absence fails the test.
func tracePath(t testing.TB) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "..", "shared", "testdata", "traces", "mooncake_conversation_trace.jsonl")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the shared Mooncake trace is missing (%v): the workspace's ../shared/testdata/traces must be present", err)
	}
	return p
}

var (
	traceOnce sync.Once
	traceW    *Workload
	traceErr  error
)

// mooncake reads the shared trace once per test binary.
func mooncake(t testing.TB) *Workload {
	t.Helper()
	p := tracePath(t)
	traceOnce.Do(func() { traceW, traceErr = ReadMooncakeFile(p, 512) })
	if traceErr != nil {
		t.Fatal(traceErr)
	}
	return traceW
}

func exampleTopology(t testing.TB, name string) *topology.Topology {
	t.Helper()
	top, err := topology.ReadFile(filepath.Join(repoRoot(t), "examples", "topologies", name))
	if err != nil {
		t.Fatal(err)
	}
	return top
}
