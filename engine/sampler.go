package engine

import (
	"fmt"
	"math"
	"slices"
)

// Sampler picks the next token from logits the way run.c's sampler does:
// argmax at temperature 0; otherwise softmax(logits/temperature) and a
// draw from llama2.c's xorshift RNG, restricted to the top-p nucleus when
// 0 < TopP < 1. With the same seed and logits it draws what run.c draws.
type Sampler struct {
	temperature float32
	topP        float32
	rng         uint64
	probs       []float32
	index       []probIndex
}

type probIndex struct {
	p  float32
	id int
}

// NewSampler returns a sampler. seed must not be zero (xorshift would stay
// at zero); run.c seeds from the clock when given none, callers here pass
// one explicitly so that runs are reproducible.
func NewSampler(temperature, topP float32, seed uint64) (*Sampler, error) {
	if !(temperature >= 0) || math.IsInf(float64(temperature), 0) {
		return nil, fmt.Errorf("new sampler: temperature %v, want a finite value >= 0: %w", temperature, ErrBadInput)
	}
	if !(topP >= 0 && topP <= 1) {
		return nil, fmt.Errorf("new sampler: top-p %v, want 0..1: %w", topP, ErrBadInput)
	}
	if seed == 0 {
		return nil, fmt.Errorf("new sampler: seed 0 leaves xorshift stuck at zero: %w", ErrBadInput)
	}
	return &Sampler{temperature: temperature, topP: topP, rng: seed}, nil
}

// randomU32 is run.c's random_u32 (xorshift*).
func (s *Sampler) randomU32() uint32 {
	s.rng ^= s.rng >> 12
	s.rng ^= s.rng << 25
	s.rng ^= s.rng >> 27
	return uint32((s.rng * 0x2545F4914F6CDD1D) >> 32)
}

// randomF32 is run.c's random_f32: a float32 in [0, 1).
func (s *Sampler) randomF32() float32 {
	return float32(s.randomU32()>>8) / 16777216.0
}

// Sample returns the next token. It does not modify logits.
func (s *Sampler) Sample(logits []float32) Token {
	if s.temperature == 0 {
		return Argmax(logits)
	}
	if cap(s.probs) < len(logits) {
		s.probs = make([]float32, len(logits))
		s.index = make([]probIndex, len(logits))
	}
	p := s.probs[:len(logits)]
	for i, l := range logits {
		p[i] = l / s.temperature
	}
	softmax(p)
	coin := s.randomF32()
	if s.topP <= 0 || s.topP >= 1 {
		var cdf float32
		for i, v := range p {
			cdf += v
			if coin < cdf {
				return Token(i)
			}
		}
		return Token(len(p) - 1)
	}
	return s.sampleTopP(p, coin)
}

// sampleTopP is run.c's sample_topp. run.c sorts with qsort, which is not
// stable; a stable sort orders equal probabilities by id, which can differ
// from glibc only between tokens of exactly equal probability.
func (s *Sampler) sampleTopP(p []float32, coin float32) Token {
	if len(p) < 2 {
		return 0
	}
	cutoff := (1 - s.topP) / float32(len(p)-1)
	idx := s.index[:0]
	for i, v := range p {
		if v >= cutoff {
			idx = append(idx, probIndex{v, i})
		}
	}
	if len(idx) == 0 { // a near-uniform distribution under a tiny top-p; run.c would read past its array
		return Argmax(p)
	}
	slices.SortStableFunc(idx, func(a, b probIndex) int {
		switch {
		case a.p > b.p:
			return -1
		case a.p < b.p:
			return 1
		}
		return 0
	})
	var cum float32
	last := len(idx) - 1
	for i, pi := range idx {
		cum += pi.p
		if cum > s.topP {
			last = i
			break
		}
	}
	r := coin * cum
	var cdf float32
	for _, pi := range idx[:last+1] {
		cdf += pi.p
		if r < cdf {
			return Token(pi.id)
		}
	}
	return Token(idx[last].id)
}

// Argmax returns the index of the first largest logit, as run.c's
// sample_argmax.
func Argmax(logits []float32) Token {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return Token(best)
}
