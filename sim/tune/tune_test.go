package tune

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kvloom/kvloom/internal/testutil"
	"github.com/kvloom/kvloom/sim"
	"github.com/kvloom/kvloom/sim/topology"
)

func inputs(t *testing.T, n int) (*topology.Topology, *sim.Workload) {
	t.Helper()
	top, err := topology.ReadFile(filepath.Join(testutil.RepoRoot(t), "examples", "topologies", "rack4-2storage.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := sim.ReadMooncakeFile(testutil.MooncakeTrace(t), 512)
	if err != nil {
		t.Fatal(err)
	}
	return top, w.Head(n).Speed(6)
}

func TestTune(t *testing.T) {
	top, w := inputs(t, 150)
	o := Options{Budget: 6, Seed: 1, Objective: ObjP99TTFT}
	res, err := Tune(top, w, o)
	if err != nil {
		t.Fatal(err)
	}
	// Deterministic for a seed.
	again, err := Tune(top, w, o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res, again) {
		t.Fatal("two searches with the same seed disagree")
	}
	if res.Runs > float64(o.Budget)+1 {
		t.Fatalf("spent %.2f runs on a budget of %d", res.Runs, o.Budget)
	}
	// The best is no worse than the defaults and heads the top list,
	// which is sorted and at most five long.
	if res.Best.Score > res.Baseline.Score {
		t.Fatalf("best %v is worse than the defaults' %v", res.Best.Score, res.Baseline.Score)
	}
	if len(res.Top) == 0 || len(res.Top) > 5 || res.Top[0].Score != res.Best.Score {
		t.Fatalf("top = %+v", res.Top)
	}
	for i := 1; i < len(res.Top); i++ {
		if res.Top[i].Score < res.Top[i-1].Score {
			t.Fatalf("top list not sorted: %v after %v", res.Top[i].Score, res.Top[i-1].Score)
		}
	}
	// Sensitivity covers every knob, each sweep includes the best value,
	// whose objective equals the best's.
	if len(res.Sensitivity) != nKnobs {
		t.Fatalf("%d knobs in the sensitivity report, want %d", len(res.Sensitivity), nKnobs)
	}
	for _, s := range res.Sensitivity {
		found := false
		for _, p := range s.Points {
			if p.Value == s.Best {
				found = true
				if p.Score != res.Best.Score {
					t.Errorf("%s=%s scores %v, the best scores %v", s.Knob, s.Best, p.Score, res.Best.Score)
				}
			}
		}
		if !found || s.Spread < 0 {
			t.Errorf("sensitivity of %s: %+v", s.Knob, s)
		}
	}
	// The two-NIC hosts give the NIC knob real choices.
	if len(res.NICMaps) < 3 {
		t.Fatalf("NIC assignments tried: %v", res.NICMaps)
	}
}

func TestTuneObjectives(t *testing.T) {
	top, w := inputs(t, 80)
	for _, obj := range []Objective{ObjThroughput, ObjCost} {
		res, err := Tune(top, w, Options{Budget: 3, Objective: obj})
		if err != nil {
			t.Fatal(err)
		}
		switch obj {
		case ObjThroughput:
			if res.Best.Score < res.Baseline.Score || res.Best.Score != res.Best.Metrics.TokensPerGPUS {
				t.Fatalf("throughput: best %v, defaults %v", res.Best.Score, res.Baseline.Score)
			}
		case ObjCost:
			if res.Best.Score > res.Baseline.Score || res.Best.Score != res.Best.Metrics.DollarsPerMTokens || res.Best.Score <= 0 {
				t.Fatalf("cost: best %v, defaults %v", res.Best.Score, res.Baseline.Score)
			}
		}
	}
}

func TestTuneErrors(t *testing.T) {
	top, w := inputs(t, 50)
	for name, o := range map[string]Options{
		"budget":    {Budget: 1},
		"objective": {Objective: "joy"},
	} {
		if _, err := Tune(top, w, o); !errors.Is(err, ErrTune) {
			t.Errorf("%s: %v, want ErrTune", name, err)
		}
	}
	if _, err := Tune(top, w.Head(3), Options{}); !errors.Is(err, ErrTune) {
		t.Errorf("tiny workload: %v", err)
	}
	if _, err := Tune(top, w, Options{Model: "gpt-5"}); !errors.Is(err, sim.ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
}

func TestDaemonConfig(t *testing.T) {
	top, _ := inputs(t, 10)
	k := Knobs{ChunkTokens: 512, PrefetchDepth: 16, TableEntries: 16384, NICAssignment: "round-robin",
		MemFraction: 0.5, RecomputeRatio: 0.1, Compression: 1}
	nics := map[string]string{"node0/gpu0": "nic1", "node0/gpu4": "nic0"}
	cfg := DaemonConfigFor(top, k, nics)
	want := &DaemonConfig{
		Version: 1, Device: DeviceConfig{Backend: "auto", TableEntries: 16384},
		ChunkTokens: 512, PrefetchDepth: 16,
		Tiers:     "mem:256GiB,disk:/var/lib/kvloom:6TB,redis://stor0:6379",
		Recompute: "ratio:0.1", Codec: "fp8", NICMap: nics,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("DaemonConfigFor = %+v\nwant %+v", cfg, want)
	}
	data, err := cfg.Marshal("written by a test\nsecond line")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "# written by a test\n# second line\nversion: 1\n") {
		t.Fatalf("config starts:\n%s", data)
	}
	back, err := ParseDaemonConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip: %+v", back)
	}
	again, _ := cfg.Marshal("written by a test\nsecond line")
	if string(again) != string(data) {
		t.Fatal("marshal is not deterministic")
	}
	if _, err := ParseDaemonConfig([]byte("version: 1\nbogus: 2\n")); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := ParseDaemonConfig([]byte("version: 2\n")); !errors.Is(err, ErrTune) {
		t.Fatalf("version 2: %v", err)
	}
}
