package sim

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/sim/topology"
)

var (
	traceOnce sync.Once
	traceW    *Workload
	traceErr  error
)

// mooncake reads the shared trace once per test binary.
func mooncake(t testing.TB) *Workload {
	t.Helper()
	p := testutil.MooncakeTrace(t)
	traceOnce.Do(func() { traceW, traceErr = ReadMooncakeFile(p, 512) })
	if traceErr != nil {
		t.Fatal(traceErr)
	}
	return traceW
}

func exampleTopology(t testing.TB, name string) *topology.Topology {
	t.Helper()
	top, err := topology.ReadFile(filepath.Join(testutil.RepoRoot(t), "examples", "topologies", name))
	if err != nil {
		t.Fatal(err)
	}
	return top
}
