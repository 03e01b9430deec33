package engine

// The kernels below sum every dot product in index order and round each
// product to float32 before adding it (the explicit float32 conversion
// forbids the compiler to fuse them into FMA on any architecture), which
// is what run.c's scalar loops do when compiled without -ffast-math. The
// speed comes from computing several independent dot products at once,
// never from reordering one of them.
//
// The kernels carry //go:norace: they only read the read-only weights and
// write the calling State's own scratch, and race instrumentation of their
// inner loops makes the engine about 30 times slower, which would put the
// quality tests far past the CI budget under go test -race. Everything
// around them (State, the hooks, the eval) stays instrumented.

// matmul sets out[r*o+i] = Σ_j w[i*n+j]·x[r*n+j] for every row r < rows
// and output i < o.
//
//go:norace
func matmul(out, x, w []float32, rows, n, o int) {
	r := 0
	for ; r+2 <= rows; r += 2 {
		x0 := x[r*n : r*n+n]
		x1 := x[(r+1)*n : (r+1)*n+n]
		o0 := out[r*o : r*o+o]
		o1 := out[(r+1)*o : (r+1)*o+o]
		i := 0
		for ; i+4 <= o; i += 4 {
			w0 := w[i*n : i*n+n]
			w1 := w[(i+1)*n : (i+1)*n+n]
			w2 := w[(i+2)*n : (i+2)*n+n]
			w3 := w[(i+3)*n : (i+3)*n+n]
			x1 := x1[:len(x0)]
			w0, w1, w2, w3 = w0[:len(x0)], w1[:len(x0)], w2[:len(x0)], w3[:len(x0)]
			var s00, s10, s20, s30, s01, s11, s21, s31 float32
			for j, a := range x0 {
				b := x1[j]
				s00 += float32(w0[j] * a)
				s10 += float32(w1[j] * a)
				s20 += float32(w2[j] * a)
				s30 += float32(w3[j] * a)
				s01 += float32(w0[j] * b)
				s11 += float32(w1[j] * b)
				s21 += float32(w2[j] * b)
				s31 += float32(w3[j] * b)
			}
			o0[i], o0[i+1], o0[i+2], o0[i+3] = s00, s10, s20, s30
			o1[i], o1[i+1], o1[i+2], o1[i+3] = s01, s11, s21, s31
		}
		for ; i < o; i++ {
			wi := w[i*n : i*n+n]
			wi = wi[:len(x0)]
			x1 := x1[:len(x0)]
			var s0, s1 float32
			for j, a := range x0 {
				s0 += float32(wi[j] * a)
				s1 += float32(wi[j] * x1[j])
			}
			o0[i], o1[i] = s0, s1
		}
	}
	for ; r < rows; r++ {
		matvec(out[r*o:r*o+o], x[r*n:r*n+n], w, n, o)
	}
}

// matvec sets out[i] = Σ_j w[i*n+j]·x[j] for i < o, four rows at a time.
//
//go:norace
func matvec(out, x, w []float32, n, o int) {
	x = x[:n]
	i := 0
	for ; i+4 <= o; i += 4 {
		w0 := w[i*n : i*n+n]
		w1 := w[(i+1)*n : (i+1)*n+n]
		w2 := w[(i+2)*n : (i+2)*n+n]
		w3 := w[(i+3)*n : (i+3)*n+n]
		w0, w1, w2, w3 = w0[:len(x)], w1[:len(x)], w2[:len(x)], w3[:len(x)]
		var s0, s1, s2, s3 float32
		for j, a := range x {
			s0 += float32(w0[j] * a)
			s1 += float32(w1[j] * a)
			s2 += float32(w2[j] * a)
			s3 += float32(w3[j] * a)
		}
		out[i], out[i+1], out[i+2], out[i+3] = s0, s1, s2, s3
	}
	for ; i < o; i++ {
		wi := w[i*n : i*n+n]
		wi = wi[:len(x)]
		var s float32
		for j, a := range x {
			s += float32(wi[j] * a)
		}
		out[i] = s
	}
}
