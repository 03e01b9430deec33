package sim

// index maps 64-bit keys to node numbers (> 0) with open addressing and
// linear probing; deletion shifts later entries back, so there are no
// tombstones. It replaces a Go map on the simulator's hottest path (cache
// lookups), where it is about twice as fast.
type index struct {
	keys []uint64
	vals []int32 // 0 marks an empty slot
	mask uint64
	n    int
}

func newIndex() *index {
	const size = 64
	return &index{keys: make([]uint64, size), vals: make([]int32, size), mask: size - 1}
}

func (x *index) slot(k uint64) uint64 { return mix64(k) & x.mask }

func (x *index) get(k uint64) (int32, bool) {
	for i := x.slot(k); ; i = (i + 1) & x.mask {
		v := x.vals[i]
		if v == 0 {
			return 0, false
		}
		if x.keys[i] == k {
			return v, true
		}
	}
}

// put sets k's value to v (> 0).
func (x *index) put(k uint64, v int32) {
	if 4*(x.n+1) > 3*len(x.vals) {
		x.grow()
	}
	for i := x.slot(k); ; i = (i + 1) & x.mask {
		if x.vals[i] == 0 {
			x.keys[i], x.vals[i] = k, v
			x.n++
			return
		}
		if x.keys[i] == k {
			x.vals[i] = v
			return
		}
	}
}

func (x *index) del(k uint64) {
	i := x.slot(k)
	for {
		if x.vals[i] == 0 {
			return
		}
		if x.keys[i] == k {
			break
		}
		i = (i + 1) & x.mask
	}
	x.n--
	// Shift back every following entry of the probe run whose home slot is
	// not between the hole and it.
	for j := (i + 1) & x.mask; x.vals[j] != 0; j = (j + 1) & x.mask {
		home := x.slot(x.keys[j])
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.keys[i], x.vals[i] = x.keys[j], x.vals[j]
			i = j
		}
	}
	x.vals[i] = 0
}

func (x *index) grow() {
	keys, vals := x.keys, x.vals
	size := 2 * len(vals)
	x.keys, x.vals, x.mask, x.n = make([]uint64, size), make([]int32, size), uint64(size-1), 0
	for i, v := range vals {
		if v != 0 {
			x.put(keys[i], v)
		}
	}
}
