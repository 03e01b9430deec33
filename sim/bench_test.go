package sim

import (
	"testing"

	"github.com/kvloom/kvloom/internal/benchutil"
)

// heapBaseline is the cheapest an event can be: one push and one pop on
// the same event heap holding a steady 64 pending events, with no work
// attached. The simulator's events/s divided by this rate says how much of
// an event's cost is the model's work rather than the queue's.
func heapBaseline() benchutil.Baseline {
	var q eventQueue
	for i := range 64 {
		q.push(int64(i*1000), 1, int32(i), 0)
	}
	var now int64
	return benchutil.Baseline{
		Op: func() {
			e := q.pop()
			now = e.at
			q.push(now+64000, e.kind, e.a, e.b)
		},
		PerOp: 1,
	}
}

// BenchmarkEvents runs the first 3000 Mooncake requests on the 4-host rack
// under innet-blend (the policy with the most work per event) and reports
// simulated events per second of one core, and that rate as a ratio to the
// bare event-heap baseline.
func BenchmarkEvents(b *testing.B) {
	top := exampleTopology(b, "rack4-2storage.yaml")
	w := mooncake(b).Head(3000)
	o := RunOptions{Policies: []Policy{PolicyInNetBlend}}
	var events uint64
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Run(top, w, o)
		if err != nil {
			b.Fatal(err)
		}
		events = rep.Events
	}
	benchutil.ReportRate(b, "events/s", float64(events))
	benchutil.ReportRate(b, "requests/s", float64(len(w.Requests)))
	benchutil.ReportRatio(b, "x-vs-heap", float64(events), heapBaseline())
}

// BenchmarkMooncakeRack4 simulates the whole shared Mooncake trace (12,031
// requests) on the 4-host rack under all five policies: one iteration is
// the run the issue bounds at 30 s (ns/op).
func BenchmarkMooncakeRack4(b *testing.B) {
	top := exampleTopology(b, "rack4-2storage.yaml")
	w := mooncake(b)
	var events uint64
	for b.Loop() {
		rep, err := Run(top, w, RunOptions{})
		if err != nil {
			b.Fatal(err)
		}
		events = rep.Events
	}
	benchutil.ReportRate(b, "events/s", float64(events))
	benchutil.ReportRate(b, "requests/s", float64(len(w.Requests)*len(Policies())))
}

// BenchmarkEstimate times one analytic estimate, against a baseline of one
// Prefill evaluation (the estimate does a few of them plus a bisection).
func BenchmarkEstimate(b *testing.B) {
	e := mustEngine(b, "llama-3-70b", "H100-SXM", EngineOptions{TP: 4})
	in := EstimateInput{Tokens: 16000, Reused: 12000, Recompute: 0.15, LoadFrom: "peer"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Estimate(in); err != nil {
			b.Fatal(err)
		}
	}
	benchutil.ReportRatio(b, "x-vs-prefill", 1, benchutil.Baseline{Op: func() { _ = e.Prefill(12000, 4000) }, PerOp: 1})
}
