package benchutil

import (
	"testing"
	"time"
)

func TestBaselineMeasure(t *testing.T) {
	calls := 0
	bl := Baseline{Op: func() { calls++; time.Sleep(time.Millisecond) }, PerOp: 10, MinTime: 20 * time.Millisecond}
	rate := bl.measure()
	// 10 units per ≥1ms call: the rate cannot exceed 10,000/s.
	if rate <= 0 || rate > 10_000 {
		t.Fatalf("rate = %v units/s, want in (0, 10000]", rate)
	}
	if calls < 2 {
		t.Fatalf("Op called %d times, want the warm-up and at least one timed call", calls)
	}
}

func BenchmarkCopyVsCopy(b *testing.B) {
	const size = 1 << 20
	src := make([]byte, size)
	dst := make([]byte, size)
	for i := range src {
		src[i] = byte(i) // never-written memory maps the zero page and reads unrealistically fast
	}
	b.SetBytes(size)
	for b.Loop() {
		copy(dst, src)
	}
	if r := ReportRatio(b, "x-vs-copy", size, CopyBaseline(size)); r <= 0 {
		b.Fatalf("ratio %v must be positive", r)
	}
}
