//go:build linux

package xdp

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
)

// slotKey is one key of the BPF hot index (struct kvlp_key): a salt id and
// a fingerprint. Chunks put their anchors' fingerprints there; prefix chains
// put each block key's first eight bytes (big-endian), which live in the
// same 64-bit space.
type slotKey struct {
	salt, fp uint64
}

func (k slotKey) bpf() kvlpKvlpKey { return kvlpKvlpKey{SaltId: k.salt, Fingerprint: k.fp} }

// blockFP is the fingerprint a prefix block key is announced and indexed under.
func blockFP(k matcher.ChunkKey) uint64 { return binary.BigEndian.Uint64(k[:8]) }

// posting is one anchor of a resident chunk: the chunk and the anchor's
// token offset in it.
type posting struct {
	e   *hostEntry
	off int
}

// blockRef is one block of a resident prefix chain: the chain, the block's
// index and its full key.
type blockRef struct {
	e     *hostEntry
	block int
	key   matcher.ChunkKey
}

// slot is what the host knows about one BPF map key: every posting and
// block behind it. The map holds one representative (value); the host
// resolves a hit to all of them.
type slot struct {
	postings []posting
	blocks   []blockRef
	value    kvlpKvlpValue
}

func (s *slot) refs() int { return len(s.postings) + len(s.blocks) }

// hostEntry is a resident entry as the control plane pushed it; a prefix
// chain keeps only its full blocks, as matcher does.
type hostEntry struct {
	nic.Entry
	slots []slotKey // distinct map keys it holds a reference on
}

// table is the host's shadow of the device's hot index: the entries (with
// their tokens, for verification), and per BPF map key the postings behind
// it. It decides capacity, and tells the caller which map keys to write or
// delete. It is not safe for concurrent use.
type table struct {
	params    matcher.AnchorParams
	blockSize int
	maxSlots  int // the BPF map's max_entries
	capacity  int // entries

	entries  map[matcher.ChunkKey]*hostEntry
	slots    map[slotKey]*slot
	chunks   int
	prefixes int
	anchors  []matcher.Anchor
}

func newTable(params matcher.AnchorParams, blockSize, capacity, maxSlots int) *table {
	return &table{
		params: params, blockSize: blockSize, capacity: capacity, maxSlots: maxSlots,
		entries: map[matcher.ChunkKey]*hostEntry{}, slots: map[slotKey]*slot{},
	}
}

// ref is one reference an entry holds: a posting or a block.
type ref struct {
	key   slotKey
	off   int // posting: anchor offset; block: block index
	block bool
	bkey  matcher.ChunkKey
}

// refsOf lists the map references entry e needs.
func (t *table) refsOf(e *nic.Entry) []ref {
	var out []ref
	id := e.Salt.ID()
	if e.Prefix {
		var parent matcher.ChunkKey
		b := t.blockSize
		for i := 0; (i+1)*b <= len(e.Tokens); i++ {
			parent = matcher.PrefixBlockKey(e.Salt, parent, e.Tokens[i*b:(i+1)*b])
			out = append(out, ref{key: slotKey{id, blockFP(parent)}, off: i, block: true, bkey: parent})
		}
		return out
	}
	t.anchors = t.params.Anchors(e.Tokens, t.anchors[:0])
	for _, a := range t.anchors {
		out = append(out, ref{key: slotKey{id, a.FP}, off: a.Off})
	}
	return out
}

// newSlots is how many map keys adding refs would create.
func (t *table) newSlots(refs []ref) int {
	n := 0
	seen := map[slotKey]bool{}
	for _, r := range refs {
		if _, ok := t.slots[r.key]; !ok && !seen[r.key] {
			seen[r.key] = true
			n++
		}
	}
	return n
}

// fits reports whether an entry with refs fits beside what is resident.
func (t *table) fits(refs []ref) bool {
	return len(t.entries) < t.capacity && len(t.slots)+t.newSlots(refs) <= t.maxSlots
}

func postingValue(e *hostEntry, off int) kvlpKvlpValue {
	return kvlpKvlpValue{ChunkKey: e.Key, ChunkOffset: uint32(off)}
}

// add makes e resident and returns the map keys whose value must be
// written (new keys, whose representative is e). e must fit and must not
// be resident.
func (t *table) add(e nic.Entry, refs []ref) []slotKey {
	if e.Prefix {
		e.Tokens = e.Tokens[:len(e.Tokens)/t.blockSize*t.blockSize]
		t.prefixes++
	} else {
		t.chunks++
	}
	e.Tokens = slices.Clone(e.Tokens)
	he := &hostEntry{Entry: e}
	t.entries[e.Key] = he
	var write []slotKey
	for _, r := range refs {
		s, ok := t.slots[r.key]
		if !ok {
			s = &slot{}
			if r.block {
				s.value = kvlpKvlpValue{ChunkKey: r.bkey, ChunkOffset: uint32(r.off * t.blockSize)}
			} else {
				s.value = postingValue(he, r.off)
			}
			t.slots[r.key] = s
			write = append(write, r.key)
		}
		if len(he.slots) == 0 || !slices.Contains(he.slots, r.key) {
			he.slots = append(he.slots, r.key)
		}
		if r.block {
			s.blocks = append(s.blocks, blockRef{e: he, block: r.off, key: r.bkey})
		} else {
			s.postings = append(s.postings, posting{e: he, off: r.off})
		}
	}
	return write
}

// remove drops the entry with key k and returns the map keys to delete and
// those whose representative changed (to rewrite). It reports false when k
// is not resident.
func (t *table) remove(k matcher.ChunkKey) (del, write []slotKey, ok bool) {
	he, ok := t.entries[k]
	if !ok {
		return nil, nil, false
	}
	delete(t.entries, k)
	if he.Prefix {
		t.prefixes--
	} else {
		t.chunks--
	}
	for _, sk := range he.slots {
		s := t.slots[sk]
		s.postings = slices.DeleteFunc(s.postings, func(p posting) bool { return p.e == he })
		s.blocks = slices.DeleteFunc(s.blocks, func(b blockRef) bool { return b.e == he })
		switch {
		case s.refs() == 0:
			delete(t.slots, sk)
			del = append(del, sk)
		case !t.valueLive(s): // its representative was he
			if len(s.postings) > 0 {
				s.value = postingValue(s.postings[0].e, s.postings[0].off)
			} else {
				b := s.blocks[0]
				s.value = kvlpKvlpValue{ChunkKey: b.key, ChunkOffset: uint32(b.block * t.blockSize)}
			}
			write = append(write, sk)
		}
	}
	return del, write, true
}

// valueLive reports whether a slot's representative still names one of its
// references.
func (t *table) valueLive(s *slot) bool {
	for _, p := range s.postings {
		if p.e.Key == s.value.ChunkKey && uint32(p.off) == s.value.ChunkOffset {
			return true
		}
	}
	for _, b := range s.blocks {
		if b.key == s.value.ChunkKey {
			return true
		}
	}
	return false
}

// checkEntry validates an entry before anything is applied: nic's rules
// for every device, then the vocabulary of the index this device mirrors
// (matcher.Options.Vocab), which the card's registers do not carry.
func checkEntry(e nic.Entry, opts matcher.Options, maxTokens int) error {
	if err := nic.CheckEntry(e, nic.EntryLimits{MaxTokens: maxTokens, MinMatch: opts.MinLen, BlockTokens: opts.BlockSize}); err != nil {
		return err
	}
	if opts.Vocab > 0 {
		for i, tok := range e.Tokens {
			if int64(tok) >= int64(opts.Vocab) {
				return fmt.Errorf("token %d at offset %d is outside the vocabulary of %d: %w", tok, i, opts.Vocab, nic.ErrBadRequest)
			}
		}
	}
	return nil
}
