package matcher

import (
	"math/rand/v2"
	"testing"
)

func TestCommonPrefixSuffix(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for trial := range 2000 {
		n, m := r.IntN(40), r.IntN(40)
		a, b := randTokens(r, n, 3), randTokens(r, m, 3)
		if trial%3 == 0 {
			b = append(append([]Token{}, a[:min(len(a), m)]...), b...)
		}
		p := 0
		for p < len(a) && p < len(b) && a[p] == b[p] {
			p++
		}
		s := 0
		for s < len(a) && s < len(b) && a[len(a)-1-s] == b[len(b)-1-s] {
			s++
		}
		if got := CommonPrefix(a, b); got != p {
			t.Fatalf("CommonPrefix(%v, %v) = %d, want %d", a, b, got, p)
		}
		if got := CommonSuffix(a, b); got != s {
			t.Fatalf("CommonSuffix(%v, %v) = %d, want %d", a, b, got, s)
		}
		if tokensEqual(a, b) != (p == len(a) && p == len(b)) {
			t.Fatalf("tokensEqual(%v, %v) wrong", a, b)
		}
	}
}
