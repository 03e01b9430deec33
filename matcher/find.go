package matcher

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/zeebo/xxh3"
)

// Result is what Find returns.
type Result struct {
	// Matches are in FindAll's order: the prefix match (if any) first, then
	// chunk matches sorted by CompareMatches.
	Matches []Match
	// Truncated is set when more than Options.MaxMatches chunk matches
	// exist; Matches then holds the first MaxMatches of them.
	Truncated bool
	// Anchors is the number of anchors the prompt has; Candidates the
	// number of index postings they hit (the quantity MaxCandidates
	// bounds); Passed how many of those passed the context filter and were
	// checked on tokens (docs/hashing.md).
	Anchors    int
	Candidates int
	Passed     int
}

// CompareMatches is FindAll's order: a prefix match first, then by ReqOff
// ascending, Len descending, Chunk (bytes) ascending, ChunkOff ascending.
func CompareMatches(a, b Match) int {
	if a.Prefix != b.Prefix {
		if a.Prefix {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.ReqOff, b.ReqOff); c != 0 {
		return c
	}
	if c := cmp.Compare(b.Len, a.Len); c != 0 {
		return c
	}
	if c := compareKeys(a.Chunk, b.Chunk); c != 0 {
		return c
	}
	return cmp.Compare(a.ChunkOff, b.ChunkOff)
}

// compareKeys orders keys as bytes.Compare would, in two word compares.
func compareKeys(a, b ChunkKey) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return cmp.Compare(binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:]))
}

// sortMatches sorts by CompareMatches. Runs are found in nearly that
// order (each from an anchor inside it, anchors in prompt order), so an
// insertion sort is linear in practice; past a budget of moves it hands
// over to a general sort, which bounds the worst case.
func sortMatches(ms []Match) {
	moves := 0
	for i := 1; i < len(ms); i++ {
		if CompareMatches(ms[i-1], ms[i]) <= 0 {
			continue
		}
		x := ms[i]
		j := i
		for j > 0 && CompareMatches(ms[j-1], x) > 0 {
			ms[j] = ms[j-1]
			j--
			moves++
		}
		ms[j] = x
		if moves > 8*len(ms) {
			slices.SortFunc(ms, CompareMatches)
			return
		}
	}
}

// pair is one candidate: prompt anchor at pos hit a posting of entry ent at
// offset off.
type pair struct{ pos, off, ent uint32 }

// diagSlot remembers, for one (entry, diagonal), where the last run found
// on it ends in the prompt. Slots are valid only when gen matches the
// scratch's current generation, so the table is never cleared.
type diagSlot struct {
	gen uint32
	ent uint32
	d   int32
	end int32
}

// scratch is per-call working memory, pooled per Index.
type scratch struct {
	anchors  []Anchor
	pairs    []pair
	touch    Token  // keeps the touching loads of phase 3a alive
	touchKey uint64 // and those of phase 2a
	pkeys    []ChunkKey
	prefs    [][]blockRef
	diag     []diagSlot
	gen      uint32
	matches  []Match
}

// scratchPool keeps a few scratches for reuse without locks. Unlike
// sync.Pool it never drops them at random (sync.Pool does under the race
// detector), so a steady caller allocates nothing in any build.
type scratchPool struct {
	slots [8]atomic.Pointer[scratch]
}

func (ix *Index) getScratch() *scratch {
	for i := range ix.pool.slots {
		if sc := ix.pool.slots[i].Swap(nil); sc != nil {
			return sc
		}
	}
	return &scratch{}
}

func (ix *Index) putScratch(sc *scratch) {
	// Do not let one huge prompt pin a huge buffer forever.
	if cap(sc.pairs) > 1<<20 {
		sc.pairs, sc.diag = nil, nil
	}
	if cap(sc.matches) > 1<<16 {
		sc.matches = nil
	}
	for i := range ix.pool.slots {
		if ix.pool.slots[i].CompareAndSwap(nil, sc) {
			return
		}
	}
}

// FindAll returns every occurrence of indexed content in prompt that the
// salt may see, verified token by token: the longest block-aligned prefix
// held by a prefix chain, and every maximal common run of at least MinLen
// tokens between the prompt and a chunk — whole chunks and parts of chunks,
// anywhere in the prompt. Eligible entries are those indexed under salt and
// under salt.Shared(). docs/hashing.md defines the output exactly: its
// order (CompareMatches), the MaxMatches truncation (the first MaxMatches
// chunk matches in that order; use Find to learn whether it happened) and
// the MaxCandidates bound (ErrTooManyCandidates, no matches).
//
// Errors (wrapping ErrZeroSalt, ErrEmpty, ErrTooLong, ErrTokenRange,
// ErrTooManyCandidates) come with a nil slice. FindAll is safe to call
// concurrently with writers and other readers.
func (ix *Index) FindAll(salt Salt, prompt []Token) ([]Match, error) {
	r, err := ix.Find(salt, prompt, nil)
	return r.Matches, err
}

// Find is FindAll that appends to dst[:0] (so a caller reusing dst does not
// allocate) and also reports truncation and work counts.
func (ix *Index) Find(salt Salt, prompt []Token, dst []Match) (Result, error) {
	if err := checkSalt("find", salt); err != nil {
		return Result{}, err
	}
	if err := ix.opts.checkTokens("find: prompt", prompt, 1); err != nil {
		return Result{}, err
	}
	s := ix.snap.Load()
	sc := ix.getScratch()
	defer ix.putScratch(sc)

	res := Result{Matches: dst[:0]}
	if s.prefixes > 0 {
		if m, ok := ix.findPrefix(s, sc, salt, prompt); ok {
			res.Matches = append(res.Matches, m)
		}
	}
	if s.chunks == 0 || len(prompt) < ix.opts.MinLen {
		return res, nil
	}

	// Which salts have chunks at all: a salt without any is not probed.
	var mixes [2]uint64
	nmix := 0
	if m := saltMix(salt.ID()); s.saltPostings[m] > 0 {
		mixes[nmix] = m
		nmix++
	}
	if !salt.IsShared() {
		if m := saltMix(salt.Shared().ID()); s.saltPostings[m] > 0 {
			mixes[nmix] = m
			nmix++
		}
	}
	if nmix == 0 {
		return res, nil
	}
	// Phase 1: the prompt's anchors.
	sc.anchors = ix.params.Anchors(prompt, sc.anchors[:0])
	res.Anchors = len(sc.anchors)

	// Phase 2a: touch the first slot of every probe, in a loop without
	// data-dependent branches, so that the CPU overlaps all the cache
	// misses; phase 2b then walks the probes in cache.
	var touchKey uint64
	for i := range sc.anchors {
		a := &sc.anchors[i]
		a.FP = fmix64(a.FP) // the anchors are ours: keep the mixed form
		for _, mix := range mixes[:nmix] {
			k := a.FP ^ mix
			if sh := s.shards[k>>(64-shardBits)]; sh != nil {
				touchKey ^= sh.slots[k&uint64(len(sh.slots)-1)].key
			}
		}
	}
	sc.touchKey = touchKey

	// Phase 2b: probe every anchor under each eligible salt.
	pairs := sc.pairs[:0]
	limit := ix.opts.MaxCandidates
	cands := 0
	for _, a := range sc.anchors {
		var lctx, rctx uint32
		ctxDone := false
		for _, mix := range mixes[:nmix] {
			k := a.FP ^ mix
			sh := s.shards[k>>(64-shardBits)]
			if sh == nil {
				continue
			}
			mask := uint64(len(sh.slots) - 1)
			for i := k & mask; ; i = (i + 1) & mask {
				p := &sh.slots[i]
				if p.ent == 0 {
					break
				}
				if p.key != k {
					continue
				}
				if cands == limit {
					sc.pairs = pairs
					return Result{}, fmt.Errorf("find: prompt of %d tokens has %d anchors hitting more than MaxCandidates %d index postings: %w", len(prompt), len(sc.anchors), limit, ErrTooManyCandidates)
				}
				cands++
				if !ctxDone {
					lctx, rctx = ix.contextHashes(prompt, a.Off)
					ctxDone = true
				}
				if contextFilter(lctx, rctx, p) {
					pairs = append(pairs, pair{pos: uint32(a.Off), off: p.off, ent: p.ent})
				}
			}
		}
	}
	sc.pairs = pairs
	res.Candidates = cands
	res.Passed = len(pairs)
	if len(pairs) == 0 {
		return res, nil
	}

	// Phase 3a: resolve every passing candidate's entry and touch its
	// tokens at the anchor, in a loop of independent loads whose cache
	// misses the CPU overlaps; phase 3b then finds them in cache.
	// (Storing the entries would need a pointer slice, whose clearing costs
	// write barriers while the GC runs; resolving twice is cheaper.)
	var touch Token
	for _, p := range pairs {
		if e := s.entry(p.ent); e != nil && int(p.off) < len(e.toks) {
			touch += e.toks[p.off]
		}
	}
	sc.touch = touch

	// Phase 3b: verify each candidate on tokens and extend it to the
	// maximal run on its diagonal. Pairs come in prompt order, so a later
	// anchor on an (entry, diagonal) whose run is already known lies inside
	// it or after it.
	sc.prepareDiag(len(pairs))
	shared := salt.Shared()
	minLen := ix.opts.MinLen
	maxM := ix.opts.MaxMatches
	found := sc.matches[:0]
	truncated := false
	for _, p := range pairs {
		d := int32(int64(p.pos) - int64(p.off))
		slot := sc.diagSlot(p.ent, d)
		if slot.gen == sc.gen && int32(p.pos) < slot.end {
			continue
		}
		e := s.entry(p.ent)
		if e == nil || e.prefix || (e.salt != salt && e.salt != shared) {
			continue // a posting key collision with another salt
		}
		pos, off := int(p.pos), int(p.off)
		left := CommonSuffix(prompt[:pos], e.toks[:off])
		right := CommonPrefix(prompt[pos:], e.toks[off:])
		r, n := pos-left, left+right
		*slot = diagSlot{gen: sc.gen, ent: p.ent, d: d, end: int32(r + n)}
		if n < minLen {
			continue
		}
		found = append(found, Match{ReqOff: r, Len: n, Chunk: e.key, ChunkOff: off - left, Shared: e.salt.IsShared()})
		if len(found) >= 2*maxM {
			sortMatches(found)
			found = found[:maxM]
			truncated = true
		}
	}
	sortMatches(found)
	if len(found) > maxM {
		found = found[:maxM]
		truncated = true
	}
	sc.matches = found
	res.Matches = append(res.Matches, found...)
	res.Truncated = truncated
	return res, nil
}

// contextHashes returns the hashes of the ctxLen tokens left and right of
// the k-gram at off in toks, 0 for a side that has fewer tokens.
//
// Why this is exact: a common run of at least MinLen tokens through a
// shared k-gram extends a tokens left and b right of it with
// a+b ≥ MinLen-K, so max(a, b) ≥ ceil((MinLen-K)/2) = ctxLen: on that side
// both contexts exist and are equal. A candidate whose contexts differ on
// both sides therefore cannot lie on a run long enough to report, and is
// dropped without touching the entry's tokens. Hash collisions only let a
// candidate through to verification.
func (ix *Index) contextHashes(toks []Token, off int) (l, r uint32) {
	c := ix.ctxLen
	if c == 0 {
		return 0, 0
	}
	var scratch []byte
	if off >= c {
		l = uint32(xxh3.Hash(tokenBytes(toks[off-c:off], &scratch))) | 1
	}
	if e := off + ix.params.K; e+c <= len(toks) {
		r = uint32(xxh3.Hash(tokenBytes(toks[e:e+c], &scratch))) | 1
	}
	return l, r
}

// contextFilter reports whether a candidate can lie on a reportable run
// (see contextHashes). With no context (MinLen = K) every candidate
// passes.
func contextFilter(lctx, rctx uint32, p *posting) bool {
	if lctx|rctx|p.lctx|p.rctx == 0 {
		return true
	}
	return (lctx != 0 && lctx == p.lctx) || (rctx != 0 && rctx == p.rctx)
}

// prepareDiag sizes the diagonal table for n candidates and starts a new
// generation.
func (sc *scratch) prepareDiag(n int) {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	sc.gen++
	if len(sc.diag) < size || sc.gen == 0 {
		sc.diag = make([]diagSlot, size)
		sc.gen = 1
	}
}

// diagSlot returns the slot of (ent, d): its current one, or the free slot
// where it goes.
func (sc *scratch) diagSlot(ent uint32, d int32) *diagSlot {
	mask := uint64(len(sc.diag) - 1)
	for i := fmix64(uint64(ent)<<32|uint64(uint32(d))) & mask; ; i = (i + 1) & mask {
		s := &sc.diag[i]
		if s.gen != sc.gen || (s.ent == ent && s.d == d) {
			return s
		}
	}
}

// findPrefix returns the prefix match: the longest verified block-aligned
// prefix over the eligible salts, the tenant's own on a tie.
func (ix *Index) findPrefix(s *snapshot, sc *scratch, salt Salt, prompt []Token) (Match, bool) {
	salts := [2]Salt{salt, salt.Shared()}
	nsalts := 2
	if salt.IsShared() {
		nsalts = 1
	}
	var best Match
	ok := false
	b := ix.opts.BlockSize
	for _, es := range salts[:nsalts] {
		// Walk the chain while some prefix entry holds the block key; the
		// deepest hit is verified first, falling back on a (vanishingly
		// rare) hash collision.
		keys, refs := sc.pkeys[:0], sc.prefs[:0]
		var parent ChunkKey
		for i := 0; (i+1)*b <= len(prompt); i++ {
			parent = PrefixBlockKey(es, parent, prompt[i*b:(i+1)*b])
			r := s.blocks[parent[0]][parent]
			if len(r) == 0 {
				break
			}
			keys = append(keys, parent)
			refs = append(refs, r)
		}
		sc.pkeys, sc.prefs = keys, refs
		for i := len(keys) - 1; i >= 0; i-- {
			n := (i + 1) * b
			if ok && n <= best.Len {
				break
			}
			if ix.verifyPrefix(s, es, refs[i], uint32(i), prompt[:n]) {
				best = Match{ReqOff: 0, Len: n, Chunk: keys[i], ChunkOff: 0, Prefix: true, Shared: es.IsShared()}
				ok = true
				break
			}
		}
	}
	return best, ok
}

func (ix *Index) verifyPrefix(s *snapshot, salt Salt, refs []blockRef, block uint32, want []Token) bool {
	for _, r := range refs {
		e := s.entry(r.ent)
		if e == nil || !e.prefix || r.block != block || e.salt != salt || len(e.toks) < len(want) {
			continue
		}
		if tokensEqual(e.toks[:len(want)], want) {
			return true
		}
	}
	return false
}
