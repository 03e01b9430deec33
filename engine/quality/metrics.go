package quality

import (
	"math"
	"slices"

	"github.com/kvloom/kvloom/engine"
)

// logSoftmax returns log softmax(x) in float64.
func logSoftmax(dst []float64, x []float32) []float64 {
	dst = dst[:0]
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - m)
	}
	lse := m + math.Log(sum)
	for _, v := range x {
		dst = append(dst, float64(v)-lse)
	}
	return dst
}

// KL is KL(P‖Q) in nats between the next-token distributions of the
// reference logits p and the policy's logits q.
func KL(p, q []float32) float64 {
	lp := logSoftmax(make([]float64, 0, len(p)), p)
	lq := logSoftmax(make([]float64, 0, len(q)), q)
	var kl float64
	for i := range lp {
		kl += math.Exp(lp[i]) * (lp[i] - lq[i])
	}
	return math.Max(kl, 0) // rounding can leave -1e-17 for equal inputs
}

// Continuation is what a model said after a prompt, as Compare scores it:
// its greedy continuation, and its logits at each position of the
// reference's continuation, teacher-forced along it (ContinuationLogits).
type Continuation struct {
	Tokens []engine.Token
	Logits [][]float32
}

// Agreement is how closely a continuation follows the reference's.
type Agreement struct {
	// KL is the mean over the positions of KL(ref‖got), in nats.
	KL float64
	// Top1 is how many positions' argmaxes agree.
	Top1 int
	// Match is how many leading tokens the greedy continuations share.
	Match int
}

// Compare scores got against the reference ref (a full prefill's);
// got.Logits must have ref.Logits' positions and vocabulary.
func Compare(ref, got Continuation) Agreement {
	var a Agreement
	for i, l := range ref.Logits {
		a.KL += KL(l, got.Logits[i])
		if engine.Argmax(l) == engine.Argmax(got.Logits[i]) {
			a.Top1++
		}
	}
	a.KL /= float64(len(ref.Logits))
	for a.Match < len(got.Tokens) && a.Match < len(ref.Tokens) && got.Tokens[a.Match] == ref.Tokens[a.Match] {
		a.Match++
	}
	return a
}

// ContinuationLogits returns the logits at each continuation position: last
// (after the prompt), then after each token of cont but the final one,
// which it feeds to s (teacher forcing).
func ContinuationLogits(s *engine.State, last []float32, cont []engine.Token) ([][]float32, error) {
	out := [][]float32{slices.Clone(last)}
	if len(cont) > 1 {
		all, err := s.ForwardAll(cont[:len(cont)-1])
		if err != nil {
			return nil, err
		}
		v := len(last)
		for i := range len(cont) - 1 {
			out = append(out, slices.Clone(all[i*v:(i+1)*v]))
		}
	}
	return out, nil
}

// MeanStdErr returns the mean of x and its standard error.
func MeanStdErr(x []float64) (mean, se float64) {
	if len(x) == 0 {
		return 0, 0
	}
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	if len(x) < 2 {
		return mean, 0
	}
	var ss float64
	for _, v := range x {
		ss += (v - mean) * (v - mean)
	}
	return mean, math.Sqrt(ss / float64(len(x)-1) / float64(len(x)))
}
