package matcher

import "fmt"

// Anchor parameters the contract fixes by default: 32-token k-grams and a
// winnowing window of 33 k-grams, so that any common substring of at least
// 32+33-1 = 64 tokens shares an anchor. (Shorter k-grams select more
// boilerplate — phrases repeated across thousands of documents — as
// anchors; on real code 32 gives a fraction of the candidates of 16.)
const (
	DefaultAnchorK = 32
	DefaultMinLen  = 64
	MinAnchorK     = 4
	MaxAnchorK     = 64
	// MaxAnchorW bounds the winnowing window, so that it fits a fixed
	// 64-entry ring. Longer minimum match lengths keep W at 63: anchors are
	// then denser than needed, and the guarantee (every common run of K+W-1
	// tokens shares an anchor) covers them all the more.
	MaxAnchorW = 63
)

// Rolling-hash constants of the anchor fingerprint (docs/hashing.md).
const (
	anchorTokenMul = 0x9e3779b97f4a7c15 // g(t) = (t+1)·anchorTokenMul
	anchorBase     = 0x9fb21c651e98df25 // polynomial base P (odd)
)

// AnchorParams selects content-defined anchors by winnowing: every k-gram
// (K consecutive tokens) gets a 64-bit fingerprint, and in every window of W
// consecutive k-grams the one with the smallest fingerprint is selected (the
// rightmost one on ties). Because the choice depends only on the window's
// content, two token sequences that share a run of at least MinLen() = K+W-1
// tokens select the same k-gram inside it, at the same offset relative to
// the run: that shared anchor is what lets FindAll find a chunk at any
// offset without separators.
type AnchorParams struct {
	K int // tokens per k-gram, MinAnchorK..MaxAnchorK
	W int // k-grams per winnowing window, 1..MaxAnchorW
}

// DefaultAnchorParams returns K = 32, W = 33 (MinLen 64).
func DefaultAnchorParams() AnchorParams {
	return AnchorParams{K: DefaultAnchorK, W: DefaultMinLen - DefaultAnchorK + 1}
}

// AnchorParamsFor returns the parameters with k-gram length k under which
// every common run of minLen tokens shares an anchor: W = minLen-k+1,
// capped at MaxAnchorW (the guarantee then holds from K+W-1 ≤ minLen on).
func AnchorParamsFor(minLen, k int) (AnchorParams, error) {
	p := anchorParamsFor(minLen, k)
	return p, p.Validate()
}

func anchorParamsFor(minLen, k int) AnchorParams {
	return AnchorParams{K: k, W: min(minLen-k+1, MaxAnchorW)}
}

// MinLen is the guarantee length K+W-1: any common run at least this long
// contains a shared anchor.
func (p AnchorParams) MinLen() int { return p.K + p.W - 1 }

// Validate reports parameters outside the allowed ranges.
func (p AnchorParams) Validate() error {
	if p.K < MinAnchorK || p.K > MaxAnchorK {
		return fmt.Errorf("anchor k-gram length K=%d outside [%d, %d]: %w", p.K, MinAnchorK, MaxAnchorK, ErrOptions)
	}
	if p.W < 1 || p.W > MaxAnchorW {
		return fmt.Errorf("anchor window W=%d outside [1, %d]: %w", p.W, MaxAnchorW, ErrOptions)
	}
	return nil
}

// Anchor is one selected k-gram: it starts at token offset Off and FP is
// its fingerprint. FP depends on the K tokens only — not on the salt, the
// offset or the surrounding text — so a device indexes anchors by
// (Salt.ID(), FP) and one pass over a prompt serves every salt.
type Anchor struct {
	Off int
	FP  uint64
}

// fmix64 is MurmurHash3's 64-bit finalizer: a bijective avalanche step.
// The index applies it to fingerprints to spread them over its tables.
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func anchorG(t Token) uint64 { return (uint64(t) + 1) * anchorTokenMul }

// powBase returns anchorBase^e mod 2^64.
func powBase(e int) uint64 {
	r, b := uint64(1), uint64(anchorBase)
	for ; e > 0; e >>= 1 {
		if e&1 == 1 {
			r *= b
		}
		b *= b
	}
	return r
}

// Fingerprint returns the anchor fingerprint of one k-gram (all of kgram):
// Σ g(t_i)·P^(K-1-i) mod 2^64 with g(t) = (t+1)·0x9e3779b97f4a7c15 and
// P = 0x9fb21c651e98df25, a polynomial rolling hash. Anchors computes the
// same value with a rolling update; this form is the reference for other
// implementations. Its high bits are well mixed (winnowing compares whole
// values, so they decide), its low bits are not: hash it (for example with
// MurmurHash3's fmix64) before using it to index a table.
func Fingerprint(kgram []Token) uint64 {
	var h uint64
	for _, t := range kgram {
		h = h*anchorBase + anchorG(t)
	}
	return h
}

// Anchors appends to dst the anchors of toks in increasing Off order, each
// selected k-gram once. Sequences shorter than MinLen() have no complete
// window and yield none. It allocates only when dst's capacity is short: a
// caller that reuses dst pays nothing per call. p must be valid (Validate);
// Anchors panics otherwise.
func (p AnchorParams) Anchors(toks []Token, dst []Anchor) []Anchor {
	k, w := p.K, p.W
	if k < 1 || w < 1 || w > MaxAnchorW {
		panic(fmt.Sprintf("matcher: invalid AnchorParams %+v", p))
	}
	n := len(toks)
	if n < k+w-1 {
		return dst
	}
	// Classic winnowing with a rescan: keep the current window's rightmost
	// minimum; a new k-gram takes over when its fingerprint is ≤ it, and
	// the window is rescanned only when the minimum slides out. Both events
	// are rare (≈ 1/W per k-gram), so the branches predict well, which a
	// monotone deque's pop loop does not. W ≤ 63, so a fixed ring of 64
	// holds the window and needs no bounds checks.
	var ring [MaxAnchorW + 1]uint64
	const mask = MaxAnchorW

	// g(t)·P^(K-1) = (t+1)·(G·P^(K-1)): the leaving token's weight folded
	// into one multiplier.
	topG := uint64(anchorTokenMul) * powBase(k-1)
	var h uint64
	for _, t := range toks[:k-1] {
		h = h*anchorBase + anchorG(t)
	}
	out := toks[:n-k+1]         // the token leaving at step j
	in := toks[k-1:][:len(out)] // the token entering at step j
	minPos, minFP := -1, uint64(0)
	last := -1
	for j := range out {
		h = h*anchorBase + (uint64(in[j])+1)*anchorTokenMul
		fp := h
		h -= (uint64(out[j]) + 1) * topG
		ring[j&mask] = fp
		if fp <= minFP && minPos >= 0 {
			minPos, minFP = j, fp
		} else if minPos+w <= j || minPos < 0 {
			// The minimum left the window (or none yet): rescan it.
			s := max(j-w+1, 0)
			minPos, minFP = s, ring[s&mask]
			for i := s + 1; i <= j; i++ {
				if v := ring[i&mask]; v <= minFP {
					minPos, minFP = i, v
				}
			}
		}
		if minPos != last && j >= w-1 {
			dst = append(dst, Anchor{Off: minPos, FP: minFP})
			last = minPos
		}
	}
	return dst
}
