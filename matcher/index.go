package matcher

import (
	"fmt"
	"iter"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Index layout. Postings (one per anchor of each indexed chunk) live in
// numShards flat open-addressing tables picked by the top bits of the
// posting key; entries live in pages of pageSize pointers; keys and prefix
// block keys live in numKeyShards Go maps picked by the key's first byte.
// A writer copies only the shards, pages and maps it touches (copy on
// write) and publishes a new snapshot with one atomic store, so readers
// never lock and always see one consistent index.
const (
	shardBits    = 10
	numShards    = 1 << shardBits
	numKeyShards = 256
	pageBits     = 10
	pageSize     = 1 << pageBits
	maxEntryID   = 1<<32 - 2
)

// saltMixSeed domain-separates the per-salt posting key mix.
const saltMixSeed = 0x6b766c6f6f6d4d01 // "kvloomM\x01"

// saltMix turns a salt id into the value XORed into mixed fingerprints to
// form posting keys, so that one table serves every salt.
func saltMix(id uint64) uint64 { return fmix64(id ^ saltMixSeed) }

// postingKey is the table key of fingerprint fp under a salt's mix:
// fmix64 spreads the fingerprint's bits (its low bits pick the slot, its
// top bits the table); the XOR keeps salts apart.
func postingKey(fp, mix uint64) uint64 { return fmix64(fp) ^ mix }

// Entry is indexed content: a position-independent chunk (matched anywhere
// in a prompt, whole or in part) or, with Prefix, a prefix chain (matched
// only from prompt offset 0, in whole blocks).
type Entry struct {
	Salt   Salt
	Tokens []Token
	// Prefix marks a prefix chain. Only its full blocks are stored; a
	// trailing partial block is dropped.
	Prefix bool
}

type entry struct {
	key    ChunkKey
	salt   Salt
	toks   []Token
	prefix bool
}

// posting is one anchor of one chunk entry. key = postingKey(FP, mix).
// lctx and rctx hash the ctxLen tokens left and right of the k-gram (0:
// the entry has fewer there); see contextFilter.
type posting struct {
	key  uint64
	ent  uint32 // entry id; 0 marks an empty slot
	off  uint32 // the anchor's offset in the entry
	lctx uint32
	rctx uint32
}

type postShard struct {
	slots []posting // power-of-two length, load ≤ 1/2
	n     int
}

// blockRef says that block number block of prefix entry ent has some key.
type blockRef struct{ ent, block uint32 }

type page [pageSize]*entry

type snapshot struct {
	shards   [numShards]*postShard
	pages    []*page
	keys     [numKeyShards]map[ChunkKey]uint32
	blocks   [numKeyShards]map[ChunkKey][]blockRef
	chunks   int
	prefixes int
	tokens   int64
	postings int
	// saltPostings counts postings per salt mix, so that Find skips
	// probing for a salt that has no chunks at all (a tenant that keeps
	// everything shared, say).
	saltPostings map[uint64]int
}

func (s *snapshot) entry(id uint32) *entry {
	p := int(id >> pageBits)
	if p >= len(s.pages) || s.pages[p] == nil {
		return nil
	}
	return s.pages[p][id&(pageSize-1)]
}

func (s *snapshot) lookupKey(k ChunkKey) (uint32, bool) {
	id, ok := s.keys[k[0]][k]
	return id, ok
}

// Index holds chunks and prefix chains under salts and finds them in
// prompts (FindAll). Any number of goroutines may call its read methods
// (Find, FindAll, Get, Entries, Len, Stats) while one writer at a time
// (Add, Remove, Update; writers serialise on an internal mutex) changes it;
// readers take no lock and see each write entirely or not at all.
type Index struct {
	opts   Options
	params AnchorParams
	ctxLen int // tokens of context hashed on each side of an anchor

	mu   sync.Mutex // serialises writers; guards free and next
	free []uint32
	next uint32

	snap atomic.Pointer[snapshot]
	pool scratchPool
}

// New returns an empty index. Errors wrap ErrOptions and name every field
// out of range.
func New(opts Options) (*Index, error) {
	o, err := opts.resolved()
	if err != nil {
		return nil, fmt.Errorf("new index: %w", err)
	}
	ix := &Index{opts: o, params: o.anchorParams(), next: 1}
	ix.ctxLen = (o.MinLen - o.AnchorK + 1) / 2
	ix.snap.Store(&snapshot{})
	return ix, nil
}

// Options returns the index's options with defaults filled in.
func (ix *Index) Options() Options { return ix.opts }

// AnchorParams returns the anchor parameters the index selects postings
// with; a device that computes anchors must use the same.
func (ix *Index) AnchorParams() AnchorParams { return ix.params }

// KeyOf returns the key e has (or would have) in this index: ChunkKeyOf for
// a chunk, the key of the last full block for a prefix chain.
func (ix *Index) KeyOf(e Entry) (ChunkKey, error) {
	toks, err := ix.checkEntry(e)
	if err != nil {
		return ChunkKey{}, err
	}
	return ix.entryKey(e.Salt, toks, e.Prefix), nil
}

// checkEntry validates e and returns the tokens that would be stored.
func (ix *Index) checkEntry(e Entry) ([]Token, error) {
	what := "chunk"
	minLen := ix.opts.MinLen
	if e.Prefix {
		what, minLen = "prefix chain", ix.opts.BlockSize
	}
	if err := checkSalt(what, e.Salt); err != nil {
		return nil, err
	}
	if err := ix.opts.checkTokens(what, e.Tokens, minLen); err != nil {
		return nil, err
	}
	toks := e.Tokens
	if e.Prefix {
		toks = toks[:len(toks)/ix.opts.BlockSize*ix.opts.BlockSize]
	}
	return toks, nil
}

func (ix *Index) entryKey(salt Salt, toks []Token, prefix bool) ChunkKey {
	if !prefix {
		return ChunkKeyOf(salt, toks)
	}
	keys := ix.chainKeys(salt, toks)
	return keys[len(keys)-1]
}

// chainKeys returns the block keys of a prefix chain of at least one full
// block (checkEntry ensures it).
func (ix *Index) chainKeys(salt Salt, toks []Token) []ChunkKey {
	keys, _ := PrefixKeys(salt, toks, ix.opts.BlockSize, nil) // New checked BlockSize
	return keys
}

// Add indexes entries and returns their keys, in order. It copies the
// tokens. Adding content that is already indexed (same key) is a no-op that
// still returns the key. Add is atomic: if any entry is invalid it returns
// an error naming it and changes nothing.
func (ix *Index) Add(entries ...Entry) ([]ChunkKey, error) {
	keys, _, err := ix.Update(entries, nil)
	return keys, err
}

// Remove drops the entries with the given keys and returns how many it
// dropped; keys not in the index are ignored.
func (ix *Index) Remove(keys ...ChunkKey) int {
	_, n, _ := ix.Update(nil, keys)
	return n
}

// Update applies removals, then additions, as one atomic change (one new
// snapshot): readers see all of it or none. It returns the added entries'
// keys and the number of entries removed. If an addition is invalid it
// changes nothing.
func (ix *Index) Update(add []Entry, remove []ChunkKey) ([]ChunkKey, int, error) {
	stored := make([][]Token, len(add))
	keys := make([]ChunkKey, len(add))
	for i, e := range add {
		toks, err := ix.checkEntry(e)
		if err != nil {
			return nil, 0, fmt.Errorf("add entry %d: %w", i, err)
		}
		stored[i] = toks
		keys[i] = ix.entryKey(e.Salt, toks, e.Prefix)
	}

	ix.mu.Lock()
	defer ix.mu.Unlock()
	w := ix.newWriter()
	removed := 0
	for _, k := range remove {
		if w.remove(k) {
			removed++
		}
	}
	if len(add) > 0 && int64(ix.next)+int64(len(add))-int64(len(ix.free)) > maxEntryID {
		return nil, 0, fmt.Errorf("add %d entries: index holds %d entries, limit %d: %w", len(add), w.s.chunks+w.s.prefixes, maxEntryID, ErrTooLong)
	}
	for i, e := range add {
		w.add(keys[i], e.Salt, stored[i], e.Prefix)
	}
	w.commit()
	return keys, removed, nil
}

// writer builds the next snapshot. It is used under ix.mu only.
type writer struct {
	ix      *Index
	s       *snapshot
	old     *snapshot
	pageNew map[int]bool
	keyNew  [numKeyShards]bool
	blkNew  [numKeyShards]bool
	saltNew bool
	pending map[int][]posting // new postings per shard
	touched map[int]bool      // shards to rebuild
	dead    map[uint32]bool   // entries removed in this batch
	freed   []uint32
	anchors []Anchor
}

func (ix *Index) newWriter() *writer {
	old := ix.snap.Load()
	s := *old
	s.pages = slices.Clone(old.pages)
	return &writer{
		ix: ix, s: &s, old: old,
		pageNew: map[int]bool{},
		pending: map[int][]posting{},
		touched: map[int]bool{},
		dead:    map[uint32]bool{},
	}
}

func (w *writer) setEntry(id uint32, e *entry) {
	p := int(id >> pageBits)
	for len(w.s.pages) <= p {
		w.s.pages = append(w.s.pages, nil)
	}
	if !w.pageNew[p] {
		np := new(page)
		if w.s.pages[p] != nil {
			*np = *w.s.pages[p]
		}
		w.s.pages[p] = np
		w.pageNew[p] = true
	}
	w.s.pages[p][id&(pageSize-1)] = e
}

func (w *writer) keyMap(k ChunkKey) map[ChunkKey]uint32 {
	i := k[0]
	if !w.keyNew[i] {
		w.s.keys[i] = maps.Clone(w.s.keys[i])
		if w.s.keys[i] == nil {
			w.s.keys[i] = map[ChunkKey]uint32{}
		}
		w.keyNew[i] = true
	}
	return w.s.keys[i]
}

func (w *writer) blockMap(k ChunkKey) map[ChunkKey][]blockRef {
	i := k[0]
	if !w.blkNew[i] {
		w.s.blocks[i] = maps.Clone(w.s.blocks[i])
		if w.s.blocks[i] == nil {
			w.s.blocks[i] = map[ChunkKey][]blockRef{}
		}
		w.blkNew[i] = true
	}
	return w.s.blocks[i]
}

func (w *writer) countSalt(mix uint64, n int) {
	if !w.saltNew {
		w.s.saltPostings = maps.Clone(w.s.saltPostings)
		if w.s.saltPostings == nil {
			w.s.saltPostings = map[uint64]int{}
		}
		w.saltNew = true
	}
	if c := w.s.saltPostings[mix] + n; c > 0 {
		w.s.saltPostings[mix] = c
	} else {
		delete(w.s.saltPostings, mix)
	}
}

func (w *writer) allocID() uint32 {
	ix := w.ix
	if n := len(ix.free); n > 0 {
		id := ix.free[n-1]
		ix.free = ix.free[:n-1]
		return id
	}
	id := ix.next
	ix.next++
	return id
}

func (w *writer) add(key ChunkKey, salt Salt, toks []Token, prefix bool) {
	if _, ok := w.s.lookupKey(key); ok {
		return
	}
	id := w.allocID()
	e := &entry{key: key, salt: salt, toks: slices.Clone(toks), prefix: prefix}
	w.setEntry(id, e)
	w.keyMap(key)[key] = id
	w.s.tokens += int64(len(toks))
	if prefix {
		w.s.prefixes++
		for i, k := range w.ix.chainKeys(salt, e.toks) {
			m := w.blockMap(k)
			refs := m[k]
			m[k] = append(refs[:len(refs):len(refs)], blockRef{ent: id, block: uint32(i)})
		}
		return
	}
	w.s.chunks++
	mix := saltMix(salt.ID())
	w.anchors = w.ix.params.Anchors(e.toks, w.anchors[:0])
	for _, a := range w.anchors {
		k := postingKey(a.FP, mix)
		sh := int(k >> (64 - shardBits))
		l, r := w.ix.contextHashes(e.toks, a.Off)
		w.pending[sh] = append(w.pending[sh], posting{key: k, ent: id, off: uint32(a.Off), lctx: l, rctx: r})
		w.touched[sh] = true
	}
	w.s.postings += len(w.anchors)
	w.countSalt(mix, len(w.anchors))
}

func (w *writer) remove(key ChunkKey) bool {
	id, ok := w.s.lookupKey(key)
	if !ok {
		return false
	}
	e := w.s.entry(id)
	delete(w.keyMap(key), key)
	w.setEntry(id, nil)
	w.freed = append(w.freed, id)
	w.s.tokens -= int64(len(e.toks))
	if e.prefix {
		w.s.prefixes--
		for _, k := range w.ix.chainKeys(e.salt, e.toks) {
			m := w.blockMap(k)
			refs := slices.DeleteFunc(slices.Clone(m[k]), func(r blockRef) bool { return r.ent == id })
			if len(refs) == 0 {
				delete(m, k)
			} else {
				m[k] = refs
			}
		}
		return true
	}
	w.s.chunks--
	w.dead[id] = true
	mix := saltMix(e.salt.ID())
	w.anchors = w.ix.params.Anchors(e.toks, w.anchors[:0])
	for _, a := range w.anchors {
		w.touched[int(postingKey(a.FP, mix)>>(64-shardBits))] = true
	}
	w.s.postings -= len(w.anchors)
	w.countSalt(mix, -len(w.anchors))
	return true
}

// commit rebuilds every touched shard once and publishes the snapshot.
func (w *writer) commit() {
	for sh := range w.touched {
		w.s.shards[sh] = rebuildShard(w.old.shards[sh], w.pending[sh], w.dead)
	}
	w.ix.snap.Store(w.s)
	// Ids freed by this batch become reusable only now, so that a batch
	// never filters its own new postings as dead.
	w.ix.free = append(w.ix.free, w.freed...)
}

// rebuildShard returns a new shard holding old's postings of live entries
// plus add, or nil when that is nothing. When nothing is removed and the
// table has room, it copies the old table and inserts only add.
func rebuildShard(old *postShard, add []posting, dead map[uint32]bool) *postShard {
	removes := false
	if old != nil && len(dead) > 0 {
		for _, p := range old.slots {
			if p.ent != 0 && dead[p.ent] {
				removes = true
				break
			}
		}
	}
	if old != nil && !removes && 2*(old.n+len(add)) <= len(old.slots) {
		ns := &postShard{slots: slices.Clone(old.slots), n: old.n + len(add)}
		for _, p := range add {
			ns.put(p)
		}
		return ns
	}
	live := len(add)
	if old != nil {
		for _, p := range old.slots {
			if p.ent != 0 && !dead[p.ent] {
				live++
			}
		}
	}
	if live == 0 {
		return nil
	}
	size := 8
	for size < 2*live {
		size <<= 1
	}
	ns := &postShard{slots: make([]posting, size), n: live}
	if old != nil {
		for _, p := range old.slots {
			if p.ent != 0 && !dead[p.ent] {
				ns.put(p)
			}
		}
	}
	for _, p := range add {
		ns.put(p)
	}
	return ns
}

// put inserts p by linear probing; the table must have a free slot.
func (sh *postShard) put(p posting) {
	mask := uint64(len(sh.slots) - 1)
	i := p.key & mask
	for sh.slots[i].ent != 0 {
		i = (i + 1) & mask
	}
	sh.slots[i] = p
}

// Get returns the entry with key k. Its Tokens are shared with the index
// and must not be modified.
func (ix *Index) Get(k ChunkKey) (Entry, bool) {
	s := ix.snap.Load()
	id, ok := s.lookupKey(k)
	if !ok {
		return Entry{}, false
	}
	e := s.entry(id)
	return Entry{Salt: e.salt, Tokens: e.toks, Prefix: e.prefix}, true
}

// Len returns the number of entries (chunks and prefix chains).
func (ix *Index) Len() int {
	s := ix.snap.Load()
	return s.chunks + s.prefixes
}

// Entries iterates over one consistent snapshot of the index, in entry-id
// order (stable while the index is unchanged, not a sort by key). Tokens
// are shared with the index and must not be modified. Writers may run
// meanwhile; the iteration does not see them.
func (ix *Index) Entries() iter.Seq2[ChunkKey, Entry] {
	s := ix.snap.Load()
	return func(yield func(ChunkKey, Entry) bool) {
		for _, p := range s.pages {
			if p == nil {
				continue
			}
			for _, e := range p {
				if e == nil {
					continue
				}
				if !yield(e.key, Entry{Salt: e.salt, Tokens: e.toks, Prefix: e.prefix}) {
					return
				}
			}
		}
	}
}

// Stats describe an index's contents and its memory beyond the tokens.
type Stats struct {
	Chunks   int
	Prefixes int
	Tokens   int64 // stored tokens (4 bytes each)
	Postings int   // anchors of chunks
	// OverheadBytes estimates the memory the index uses beyond the stored
	// tokens: posting tables, entry records and pages, key maps.
	OverheadBytes int64
}

// Stats returns the current contents' statistics.
func (ix *Index) Stats() Stats {
	s := ix.snap.Load()
	st := Stats{Chunks: s.chunks, Prefixes: s.prefixes, Tokens: s.tokens, Postings: s.postings}
	var b int64
	b += int64(unsafe.Sizeof(*s))
	for _, sh := range s.shards {
		if sh != nil {
			b += int64(unsafe.Sizeof(*sh)) + int64(cap(sh.slots))*int64(unsafe.Sizeof(posting{}))
		}
	}
	b += int64(len(s.pages)) * int64(unsafe.Sizeof(page{}))
	n := int64(s.chunks + s.prefixes)
	// An entry record rounds up to the 80-byte size class; a Go map entry
	// costs its key and value plus about a third for control bytes and
	// spare slots.
	b += n * 80
	b += n * (16 + 4) * 4 / 3
	for _, m := range s.blocks {
		for _, refs := range m {
			b += (16+24)*4/3 + int64(cap(refs))*8
		}
	}
	st.OverheadBytes = b
	return st
}
