package benchutil

import (
	"testing"
	"time"
)

// Baseline is one iteration of the work a figure is compared against, and
// how many bytes (or items) that iteration processes.
type Baseline struct {
	Op      func()
	PerOp   float64       // bytes or items one call of Op processes
	MinTime time.Duration // how long to time it; zero means 300ms
}

// measure times Op for at least MinTime and returns units per second. It does
// not use testing.Benchmark: that takes the testing package's benchmark lock,
// which the running benchmark already holds.
func (bl Baseline) measure() float64 {
	minTime := bl.MinTime
	if minTime == 0 {
		minTime = 300 * time.Millisecond
	}
	bl.Op() // warm caches and lazily built state
	n := 1
	for {
		start := time.Now()
		for range n {
			bl.Op()
		}
		elapsed := time.Since(start)
		if elapsed >= minTime || n >= 1<<30 {
			return bl.PerOp * float64(n) / elapsed.Seconds()
		}
		// aim for minTime with headroom, growing at most 100× at a time
		next := int(float64(n) * 1.2 * float64(minTime) / float64(max(elapsed, time.Microsecond)))
		n = min(max(next, n+1), n*100)
	}
}

// ReportRatio reports (subject rate) ÷ (baseline rate) under unit, by
// convention "x-vs-<baseline>" (for example "x-vs-copy"). Call it after b's
// timed loop; perOp is the bytes or items one iteration of b processed, in the
// same unit as the baseline's PerOp. It also reports the baseline's rate so
// that the figure can be checked by hand.
func ReportRatio(b *testing.B, unit string, perOp float64, baseline Baseline) float64 {
	b.Helper()
	if b.N == 0 || b.Elapsed() <= 0 || perOp <= 0 {
		b.Fatalf("report %s: subject ran zero iterations or processed nothing", unit)
	}
	subject := perOp * float64(b.N) / b.Elapsed().Seconds()
	base := baseline.measure()
	if base <= 0 {
		b.Fatalf("report %s: baseline processed nothing", unit)
	}
	r := subject / base
	b.ReportMetric(r, unit)
	b.ReportMetric(base/1e6, "baseline-M/s")
	return r
}

// ReportRate reports itemsPerOp × iterations per second of b's loop under
// unit (for example "tokens/s"). Call it after the timed loop.
func ReportRate(b *testing.B, unit string, itemsPerOp float64) float64 {
	b.Helper()
	if b.N == 0 || b.Elapsed() <= 0 {
		b.Fatalf("report %s: zero iterations", unit)
	}
	r := itemsPerOp * float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(r, unit)
	return r
}

// CopyBaseline is the memcpy baseline most figures use: copy() of size bytes
// between two buffers that are reused across iterations.
func CopyBaseline(size int) Baseline {
	src := make([]byte, size)
	dst := make([]byte, size)
	for i := range src {
		src[i] = byte(i * 7)
	}
	return Baseline{Op: func() { copy(dst, src) }, PerOp: float64(size)}
}
