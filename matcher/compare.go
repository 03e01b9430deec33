package matcher

import (
	"bytes"
	"unsafe"
)

// Verification compares token runs in bulk: four tokens (16 bytes) per step
// as one array comparison, and memequal for whole-slice equality. Only
// equality is computed, so the host's byte order does not matter.

func tokensEqual(a, b []Token) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 {
		return true
	}
	return bytes.Equal(unsafe.Slice((*byte)(unsafe.Pointer(&a[0])), 4*len(a)), unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), 4*len(b)))
}

// CommonPrefix returns the length of the longest common prefix of a and b:
// how far a match anchored at their starts extends to the right. It
// compares four tokens per step, so callers that extend matches (the
// matcher's own verification, the XDP backend's) share one fast loop.
func CommonPrefix(a, b []Token) int {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		if *(*[4]Token)(a[i:]) != *(*[4]Token)(b[i:]) {
			break
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// CommonSuffix returns the length of the longest common suffix of a and b:
// how far a match anchored at their ends extends to the left. Like
// CommonPrefix it compares four tokens per step.
func CommonSuffix(a, b []Token) int {
	n := min(len(a), len(b))
	a, b = a[len(a)-n:], b[len(b)-n:]
	j := n // a[j:] == b[j:]
	for ; j >= 4; j -= 4 {
		if *(*[4]Token)(a[j-4:]) != *(*[4]Token)(b[j-4:]) {
			break
		}
	}
	for j > 0 && a[j-1] == b[j-1] {
		j--
	}
	return n - j
}
