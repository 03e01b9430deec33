package store

import (
	"math/bits"
	"sync"
)

// bufPool recycles payload buffers by power-of-two size class, so that
// reading a layer from disk or Redis does not fault in fresh pages every
// time. A buffer goes back only when the reader that holds it is closed,
// and a reader that is never closed just leaves its buffers to the garbage
// collector: nothing is pinned.
type bufPool struct {
	classes [maxClass + 1]sync.Pool
}

const (
	minClass = 12 // 4 KiB
	maxClass = 32 // 4 GiB
)

func classOf(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}

// get returns a buffer of length n (contents undefined).
func (p *bufPool) get(n int) []byte {
	c := classOf(n)
	if c > maxClass {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<c)
}

// put returns a buffer that get handed out.
func (p *bufPool) put(b []byte) {
	c := cap(b)
	if c == 0 || c&(c-1) != 0 {
		return // not one of ours
	}
	k := bits.Len(uint(c)) - 1
	if k < minClass || k > maxClass {
		return
	}
	b = b[:c]
	p.classes[k].Put(&b)
}
