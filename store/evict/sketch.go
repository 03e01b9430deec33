package evict

import "math/bits"

// Sketch is TinyLFU's frequency sketch: a count-min sketch of 4-bit
// counters (4 rows, one 64-bit word per row and key), so that the estimate
// of a key's recent frequency saturates at 15. After SampleSize increments
// every counter is halved, which ages old popularity out (the "reset" of
// Einziger et al., TinyLFU, 2017).
//
// A Sketch is not safe for concurrent use.
type Sketch struct {
	table     []uint64 // width words; each word holds 16 counters
	mask      uint64
	additions int
	sample    int
}

// NewSketch returns a sketch sized for about n distinct keys (at least 64):
// the table has the next power of two ≥ n words (16 counters each) and it
// halves after 10·n increments.
func NewSketch(n int) *Sketch {
	n = max(n, 64)
	width := 1 << bits.Len(uint(n-1))
	return &Sketch{table: make([]uint64, width), mask: uint64(width - 1), sample: 10 * n}
}

// Width is the number of keys the sketch was sized for.
func (s *Sketch) Width() int { return len(s.table) }

// slot derives row i's (word, counter) position of a hash.
func (s *Sketch) slot(h uint64, i int) (word uint64, shift uint) {
	// Each row uses a different remix of h, so that keys colliding in one
	// row rarely collide in the others.
	x := h + uint64(i)*0x9e3779b97f4a7c15
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	word = x & s.mask
	// Counter i of the row sits in nibble (x>>40 % 4) + 4i of its word.
	shift = uint((x>>40)&3+uint64(4*i)) * 4
	return word, shift
}

// Add counts one occurrence of the key with hash h.
func (s *Sketch) Add(h uint64) {
	added := false
	for i := range 4 {
		w, sh := s.slot(h, i)
		if (s.table[w]>>sh)&0xf < 15 {
			s.table[w] += 1 << sh
			added = true
		}
	}
	if added {
		s.additions++
		if s.additions >= s.sample {
			s.halve()
		}
	}
}

// Estimate returns the key's estimated recent frequency, 0..15.
func (s *Sketch) Estimate(h uint64) int {
	m := uint64(15)
	for i := range 4 {
		w, sh := s.slot(h, i)
		m = min(m, (s.table[w]>>sh)&0xf)
	}
	return int(m)
}

// halve divides every counter by two.
func (s *Sketch) halve() {
	const keep = 0x7777777777777777 // drop the bit each nibble shifts into its neighbour
	for i, w := range s.table {
		s.table[i] = (w >> 1) & keep
	}
	s.additions /= 2
}
