package engine

import (
	"fmt"
	"math"
)

// rmsEps is run.c's RMSNorm epsilon.
const rmsEps = 1e-5

// ropeTables holds cos and sin of pos·freq for every position and pair,
// computed in float32 exactly as run.c computes them per token.
type ropeTables struct {
	cos, sin []float32 // (seq_len, head_size/2)
}

func newRopeTables(c Config) *ropeTables {
	hs := c.HeadSize()
	half := hs / 2
	t := &ropeTables{cos: make([]float32, c.SeqLen*half), sin: make([]float32, c.SeqLen*half)}
	freqs := make([]float32, half)
	for p := range half {
		// run.c: 1.0f / powf(10000.0f, head_dim / (float)head_size)
		e := float32(2*p) / float32(hs)
		freqs[p] = 1 / float32(math.Pow(10000, float64(e)))
	}
	for pos := range c.SeqLen {
		for p, f := range freqs {
			val := float32(pos) * f
			t.cos[pos*half+p] = float32(math.Cos(float64(val)))
			t.sin[pos*half+p] = float32(math.Sin(float64(val)))
		}
	}
	return t
}

// Engine runs a Model. It holds what every sequence shares (the RoPE
// tables) and is safe for concurrent use; each sequence has its own State.
type Engine struct {
	m    *Model
	rope *ropeTables
}

// New returns an engine for m, which must not change afterwards.
func New(m *Model) (*Engine, error) {
	if m == nil {
		return nil, fmt.Errorf("new engine: nil model: %w", ErrBadInput)
	}
	if err := m.Config.Validate(); err != nil {
		return nil, fmt.Errorf("new engine: %w", err)
	}
	if _, err := m.MarshalBinary(); err != nil { // checks every tensor's length
		return nil, fmt.Errorf("new engine: %w", err)
	}
	if len(m.Weights.WCls) != m.Config.VocabSize*m.Config.Dim {
		return nil, fmt.Errorf("new engine: classifier has %d weights, want %d: %w", len(m.Weights.WCls), m.Config.VocabSize*m.Config.Dim, ErrInconsistent)
	}
	return &Engine{m: m, rope: newRopeTables(m.Config)}, nil
}

// Model returns the engine's model.
func (e *Engine) Model() *Model { return e.m }

// Config returns the model's configuration.
func (e *Engine) Config() Config { return e.m.Config }

// State is one sequence: its KV cache (keys after RoPE) and the scratch
// the forward pass reuses, so that steady-state decoding allocates
// nothing. A State is not safe for concurrent use.
type State struct {
	e *Engine
	c Config
	// k and v hold, per layer, [seq_len][kv_heads][head_size] float32:
	// kvcache's layer-major layout for f32.
	k, v   [][]float32
	tokens []Token // the token at each filled position
	n      int     // positions filled

	// scratch, sized for the largest batch seen so far
	rows    int
	pos     []int
	x, xb   []float32
	q       []float32
	kb, vb  []float32
	hb, hb2 []float32
	att     []float32
	logits  []float32
	toks    []Token
	want    []bool
}

// NewState returns an empty sequence.
func (e *Engine) NewState() *State {
	c := e.m.Config
	s := &State{e: e, c: c, k: make([][]float32, c.Layers), v: make([][]float32, c.Layers)}
	for l := range c.Layers {
		s.k[l] = make([]float32, c.SeqLen*c.KVDim())
		s.v[l] = make([]float32, c.SeqLen*c.KVDim())
	}
	s.att = make([]float32, c.KVMul()*c.SeqLen)
	s.tokens = make([]Token, c.SeqLen)
	return s
}

// Len is the number of positions in the cache.
func (s *State) Len() int { return s.n }

// Reset empties the cache.
func (s *State) Reset() { s.n = 0 }

// Truncate drops every position from n on.
func (s *State) Truncate(n int) error {
	if n < 0 || n > s.n {
		return fmt.Errorf("truncate to %d positions, cache holds %d: %w", n, s.n, ErrBadInput)
	}
	s.n = n
	return nil
}

// CopyFrom makes s a copy of o's cache (same engine).
func (s *State) CopyFrom(o *State) {
	for l := range s.c.Layers {
		w := o.n * s.c.KVDim()
		copy(s.k[l][:w], o.k[l][:w])
		copy(s.v[l][:w], o.v[l][:w])
	}
	copy(s.tokens[:o.n], o.tokens[:o.n])
	s.n = o.n
}

// Tokens returns the token at each position in the cache (aliasing it).
func (s *State) Tokens() []Token { return s.tokens[:s.n:s.n] }

// Layer returns layer l's keys (after RoPE) and values for the positions
// in the cache, each [Len][kv_heads][head_size]. The slices alias the
// cache: they are valid until the next call that changes it.
func (s *State) Layer(l int) (k, v []float32) {
	w := s.n * s.c.KVDim()
	return s.k[l][:w:w], s.v[l][:w:w]
}

// grow sizes the scratch for rows rows.
func (s *State) grow(rows int) {
	if rows <= s.rows {
		return
	}
	c := s.c
	s.rows = rows
	s.pos = make([]int, rows)
	s.toks = make([]Token, rows)
	s.want = make([]bool, rows)
	s.x = make([]float32, rows*c.Dim)
	s.xb = make([]float32, rows*max(c.Dim, c.HiddenDim))
	s.q = make([]float32, rows*c.Dim)
	s.kb = make([]float32, rows*c.KVDim())
	s.vb = make([]float32, rows*c.KVDim())
	s.hb = make([]float32, rows*c.HiddenDim)
	s.hb2 = make([]float32, rows*c.HiddenDim)
	s.logits = make([]float32, rows*c.VocabSize)
}

// Forward appends tokens at the next positions and returns the logits
// after the last of them. The slice is valid until the next call on s.
func (s *State) Forward(tokens []Token) ([]float32, error) {
	out, err := s.appendTokens(tokens, false)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ForwardAll appends tokens at the next positions and returns the logits
// after each of them, [len(tokens)][vocab]. The slice is valid until the
// next call on s.
func (s *State) ForwardAll(tokens []Token) ([]float32, error) {
	return s.appendTokens(tokens, true)
}

func (s *State) appendTokens(tokens []Token, all bool) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("forward: no tokens: %w", ErrBadInput)
	}
	if s.n+len(tokens) > s.c.SeqLen {
		return nil, fmt.Errorf("forward %d tokens at position %d: seq_len is %d: %w", len(tokens), s.n, s.c.SeqLen, ErrContextFull)
	}
	s.grow(len(tokens))
	for i, t := range tokens {
		s.toks[i] = t
		s.pos[i] = s.n + i
		s.want[i] = all || i == len(tokens)-1
	}
	return s.run(len(tokens), nil)
}

// layerHook runs after a layer's keys and values are computed for the
// active rows (kb, vb, after RoPE) and before they are written to the
// cache. It may drop rows with s.keepRows; it returns an error to stop.
type layerHook func(l, rows int) (int, error)

// run computes the rows s.toks[:rows] at positions s.pos[:rows] through
// every layer, writing their K/V into the cache, and returns the logits
// of the rows marked in s.want, in row order. Every position a row
// attends to (0..pos) must be in the cache or among the rows.
func (s *State) run(rows int, hook layerHook) ([]float32, error) {
	end, err := s.embed(rows)
	if err != nil {
		return nil, err
	}
	for l := range s.c.Layers {
		s.layerQKV(l, rows)
		if hook != nil {
			if rows, err = hook(l, rows); err != nil {
				return nil, err
			}
		}
		s.layerRest(l, rows)
	}
	s.n = max(s.n, end)
	return s.classify(rows), nil
}

// embed checks the rows and loads their token embeddings into x; it
// returns one past the highest position.
func (s *State) embed(rows int) (int, error) {
	c := s.c
	dim := c.Dim
	end := 0
	for i := range rows {
		t := s.toks[i]
		if int(t) >= c.VocabSize {
			return 0, fmt.Errorf("forward: token %d at position %d, vocabulary has %d: %w", t, s.pos[i], c.VocabSize, ErrBadToken)
		}
		if p := s.pos[i]; p < 0 || p >= c.SeqLen {
			return 0, fmt.Errorf("forward: position %d, seq_len is %d: %w", p, c.SeqLen, ErrContextFull)
		}
	}
	for i := range rows {
		t := s.toks[i]
		end = max(end, s.pos[i]+1)
		s.tokens[s.pos[i]] = t
		copy(s.x[i*dim:(i+1)*dim], s.e.m.Weights.TokenEmbedding[int(t)*dim:int(t+1)*dim])
	}
	return end, nil
}

// layerQKV computes layer l's queries, keys and values of the rows (keys
// and queries rotated for their positions) into q, kb and vb.
func (s *State) layerQKV(l, rows int) {
	c := s.c
	w := &s.e.m.Weights
	dim, kvDim := c.Dim, c.KVDim()
	rmsnormRows(s.xb, s.x, w.RMSAtt[l*dim:(l+1)*dim], rows, dim)
	matmul(s.q, s.xb, w.WQ[l*dim*dim:(l+1)*dim*dim], rows, dim, dim)
	matmul(s.kb, s.xb, w.WK[l*kvDim*dim:(l+1)*kvDim*dim], rows, dim, kvDim)
	matmul(s.vb, s.xb, w.WV[l*kvDim*dim:(l+1)*kvDim*dim], rows, dim, kvDim)
	for i := range rows {
		s.rotate(s.q[i*dim:(i+1)*dim], s.pos[i])
		s.rotate(s.kb[i*kvDim:(i+1)*kvDim], s.pos[i])
	}
}

// layerRest writes the rows' layer-l K/V into the cache, then runs
// attention over the cache and the feed-forward block, updating x.
func (s *State) layerRest(l, rows int) {
	c := s.c
	w := &s.e.m.Weights
	dim, kvDim, hid := c.Dim, c.KVDim(), c.HiddenDim
	kc, vc := s.k[l], s.v[l]
	for i := range rows {
		p := s.pos[i]
		copy(kc[p*kvDim:(p+1)*kvDim], s.kb[i*kvDim:(i+1)*kvDim])
		copy(vc[p*kvDim:(p+1)*kvDim], s.vb[i*kvDim:(i+1)*kvDim])
	}
	s.attention(rows, kc, vc)
	matmul(s.q, s.xb, w.WO[l*dim*dim:(l+1)*dim*dim], rows, dim, dim) // q is free now: reuse it for wo·att
	addInto(s.x[:rows*dim], s.q[:rows*dim])
	rmsnormRows(s.xb, s.x, w.RMSFFN[l*dim:(l+1)*dim], rows, dim)
	matmul(s.hb, s.xb, w.W1[l*hid*dim:(l+1)*hid*dim], rows, dim, hid)
	matmul(s.hb2, s.xb, w.W3[l*hid*dim:(l+1)*hid*dim], rows, dim, hid)
	hb, hb2 := s.hb[:rows*hid], s.hb2[:rows*hid]
	hb2 = hb2[:len(hb)]
	for i, val := range hb {
		val *= 1 / (1 + float32(math.Exp(float64(-val))))
		hb[i] = val * hb2[i]
	}
	matmul(s.xb, s.hb, w.W2[l*dim*hid:(l+1)*dim*hid], rows, hid, dim)
	addInto(s.x[:rows*dim], s.xb[:rows*dim])
}

// classify returns the logits of the rows marked in want, packed in row
// order.
func (s *State) classify(rows int) []float32 {
	c := s.c
	w := &s.e.m.Weights
	dim := c.Dim
	nw := 0
	for i := range rows {
		if !s.want[i] {
			continue
		}
		xr := s.xb[:dim]
		rmsnorm(xr, s.x[i*dim:(i+1)*dim], w.RMSFinal)
		matvec(s.logits[nw*c.VocabSize:(nw+1)*c.VocabSize], xr, w.WCls, dim, c.VocabSize)
		nw++
	}
	return s.logits[: nw*c.VocabSize : nw*c.VocabSize]
}

// attention computes each row's attention output into xb, reading keys
// and values of positions 0..pos from the cache. The query heads that
// share a KV head are done together so that each key and value row is
// loaded once; every sum still runs in run.c's order (over the head's
// elements for a score, over positions for an output), so the results
// are the same bits as run.c's loops.
//
//go:norace
func (s *State) attention(rows int, kc, vc []float32) {
	c := s.c
	dim, kvDim, hs := c.Dim, c.KVDim(), c.HeadSize()
	scale := float32(math.Sqrt(float64(hs)))
	kvMul := c.KVMul()
	for i := range rows {
		p := s.pos[i]
		n := p + 1
		qrow := s.q[i*dim : (i+1)*dim]
		out := s.xb[i*dim : (i+1)*dim]
		for g := range c.KVHeads {
			off := g * hs
			for m := range kvMul {
				h := g*kvMul + m
				q := qrow[h*hs : (h+1)*hs]
				att := s.att[m*c.SeqLen : m*c.SeqLen+n]
				if hs == 8 {
					scores8(att, q, kc[off:], kvDim, scale)
				} else {
					for t := range att {
						kt := kc[t*kvDim+off : t*kvDim+off+hs]
						kt = kt[:len(q)]
						var score float32
						for j, a := range q {
							score += float32(a * kt[j])
						}
						att[t] = score / scale
					}
				}
				softmax(att)
				o := out[h*hs : (h+1)*hs]
				if hs == 8 {
					values8(o, att, vc[off:], kvDim)
					continue
				}
				clear(o)
				for t, a := range att {
					vt := vc[t*kvDim+off : t*kvDim+off+hs]
					vt = vt[:len(o)]
					for j := range o {
						o[j] += float32(a * vt[j])
					}
				}
			}
		}
	}
}

// scores8 is the score loop for head size 8: att[t] = (q·k_t)/scale with
// k_t at k[t*stride:], summed in index order.
//
//go:norace
func scores8(att, q, k []float32, stride int, scale float32) {
	q = q[:8]
	q0, q1, q2, q3, q4, q5, q6, q7 := q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]
	for t := range att {
		kt := k[t*stride : t*stride+8 : t*stride+8]
		score := float32(q0 * kt[0])
		score += float32(q1 * kt[1])
		score += float32(q2 * kt[2])
		score += float32(q3 * kt[3])
		score += float32(q4 * kt[4])
		score += float32(q5 * kt[5])
		score += float32(q6 * kt[6])
		score += float32(q7 * kt[7])
		att[t] = score / scale
	}
}

// values8 is the output loop for head size 8: o = Σ_t att[t]·v_t, in
// position order.
//
//go:norace
func values8(o, att, v []float32, stride int) {
	var o0, o1, o2, o3, o4, o5, o6, o7 float32
	for t, a := range att {
		vt := v[t*stride : t*stride+8 : t*stride+8]
		o0 += float32(a * vt[0])
		o1 += float32(a * vt[1])
		o2 += float32(a * vt[2])
		o3 += float32(a * vt[3])
		o4 += float32(a * vt[4])
		o5 += float32(a * vt[5])
		o6 += float32(a * vt[6])
		o7 += float32(a * vt[7])
	}
	o = o[:8]
	o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7] = o0, o1, o2, o3, o4, o5, o6, o7
}

// keepRows compacts the active rows to those listed in keep (ascending
// row indices), moving everything run carries per row.
func (s *State) keepRows(keep []int) int {
	dim, kvDim := s.c.Dim, s.c.KVDim()
	for dst, src := range keep {
		if dst == src {
			continue
		}
		s.pos[dst], s.toks[dst], s.want[dst] = s.pos[src], s.toks[src], s.want[src]
		copy(s.x[dst*dim:(dst+1)*dim], s.x[src*dim:(src+1)*dim])
		copy(s.q[dst*dim:(dst+1)*dim], s.q[src*dim:(src+1)*dim])
		copy(s.kb[dst*kvDim:(dst+1)*kvDim], s.kb[src*kvDim:(src+1)*kvDim])
		copy(s.vb[dst*kvDim:(dst+1)*kvDim], s.vb[src*kvDim:(src+1)*kvDim])
	}
	return len(keep)
}

// rotate applies RoPE (GPT-J adjacent pairs) to vec, one or more heads.
func (s *State) rotate(vec []float32, pos int) {
	hs := s.c.HeadSize()
	half := hs / 2
	cos := s.e.rope.cos[pos*half : (pos+1)*half]
	sin := s.e.rope.sin[pos*half : (pos+1)*half]
	for i := 0; i+1 < len(vec); i += 2 {
		p := (i % hs) / 2
		fcr, fci := cos[p], sin[p]
		v0, v1 := vec[i], vec[i+1]
		vec[i] = float32(v0*fcr) - float32(v1*fci)
		vec[i+1] = float32(v0*fci) + float32(v1*fcr)
	}
}

func rmsnormRows(out, x, weight []float32, rows, dim int) {
	for i := range rows {
		rmsnorm(out[i*dim:(i+1)*dim], x[i*dim:(i+1)*dim], weight)
	}
}

// rmsnorm is run.c's: o = w * (x / sqrt(mean(x²) + eps)).
//
//go:norace
func rmsnorm(o, x, weight []float32) {
	x = x[:len(weight)]
	o = o[:len(weight)]
	var ss float32
	for _, v := range x {
		ss += float32(v * v)
	}
	ss /= float32(len(x))
	ss += rmsEps
	ss = 1 / float32(math.Sqrt(float64(ss)))
	for j, v := range x {
		o[j] = weight[j] * float32(ss*v)
	}
}

// softmax is run.c's, in place.
//
//go:norace
func softmax(x []float32) {
	maxv := x[0]
	for _, v := range x[1:] {
		if v > maxv {
			maxv = v
		}
	}
	var sum float32
	for i, v := range x {
		e := float32(math.Exp(float64(v - maxv)))
		x[i] = e
		sum += e
	}
	for i := range x {
		x[i] /= sum
	}
}

func addInto(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}
