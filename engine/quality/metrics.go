package quality

import "math"

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

// meanStdErr returns the mean of x and its standard error.
func meanStdErr(x []float64) (mean, se float64) {
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
