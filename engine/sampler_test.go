package engine

import (
	"errors"
	"testing"
)

// TestSamplerRNG pins run.c's xorshift* (random_u32) for seed 42; the
// values were computed independently from run.c's formula.
func TestSamplerRNG(t *testing.T) {
	s, err := NewSampler(1, 0.9, 42)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint32{1456360119, 3359763283, 3393612768, 4054632243} {
		if got := s.randomU32(); got != want {
			t.Fatalf("draw %d = %d, want %d", i, got, want)
		}
	}
	if f := s.randomF32(); f < 0 || f >= 1 {
		t.Fatalf("random_f32 = %v", f)
	}
}

func TestSamplerDistributions(t *testing.T) {
	logits := []float32{0, 5, 1, 4.9, -3}
	if Argmax(logits) != 1 || Argmax([]float32{2, 2}) != 0 {
		t.Fatal("argmax is not the first maximum")
	}
	greedy, err := NewSampler(0, 0.9, 1)
	if err != nil {
		t.Fatal(err)
	}
	if greedy.Sample(logits) != 1 {
		t.Fatal("temperature 0 is not greedy")
	}
	// top-p 0.8 keeps only the two near-equal leaders (0.51 + 0.46); plain sampling
	// reaches the others too
	counts := map[string]map[Token]int{}
	for _, tc := range []struct {
		name string
		topP float32
	}{{"topp", 0.8}, {"all", 1}} {
		s, err := NewSampler(1, tc.topP, 7)
		if err != nil {
			t.Fatal(err)
		}
		counts[tc.name] = map[Token]int{}
		for range 4000 {
			counts[tc.name][s.Sample(logits)]++
		}
	}
	if len(counts["topp"]) != 2 || counts["topp"][1] == 0 || counts["topp"][3] == 0 {
		t.Fatalf("top-p 0.8 drew %v", counts["topp"])
	}
	if counts["all"][2] == 0 || counts["all"][0] == 0 {
		t.Fatalf("top-p 1 drew %v", counts["all"])
	}
	for _, bad := range []struct {
		temp, topP float32
		seed       uint64
	}{{-1, 0.9, 1}, {1, 1.5, 1}, {1, 0.9, 0}} {
		if _, err := NewSampler(bad.temp, bad.topP, bad.seed); !errors.Is(err, ErrBadInput) {
			t.Errorf("NewSampler(%v, %v, %d): %v", bad.temp, bad.topP, bad.seed, err)
		}
	}
}
