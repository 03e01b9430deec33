package hostctl

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/kvloom/kvloom/matcher"
)

// entryInfo is what the daemon knows about one index entry beyond the
// matcher's view: who stored it (for quotas), which peers hold it, whether
// it is pinned, and how often it has been reused (for the control loop).
type entryInfo struct {
	salt   matcher.Salt
	prefix bool
	tokens []matcher.Token
	tenant string // "" for entries learned from peers
	bytes  int64  // charged to tenant
	local  bool   // stored through this daemon
	peers  []string
	pinned bool
	// hits is the decayed count of prompts that reused this entry, as of
	// hitAt.
	hits  float64
	hitAt time.Time
}

// syncEntry is one locally stored entry as peers pull it.
type syncEntry struct {
	seq    uint64
	salt   matcher.Salt
	prefix bool
	tokens []matcher.Token
}

// maxSyncLog bounds the entries kept for peers to pull; a peer that falls
// further behind misses the oldest.
const maxSyncLog = 1 << 16

// owners tracks entryInfo by index key, where peers' chunks are, and the
// log peers sync from.
type owners struct {
	mu      sync.Mutex
	entries map[matcher.ChunkKey]*entryInfo
	// remote maps chunk and prefix-block keys to the peers that hold them.
	remote map[matcher.ChunkKey][]string

	epoch   uint64
	log     []syncEntry
	nextSeq uint64
}

func newOwners() *owners {
	return &owners{
		entries: map[matcher.ChunkKey]*entryInfo{},
		remote:  map[matcher.ChunkKey][]string{},
		epoch:   uint64(time.Now().UnixNano()),
		nextSeq: 1,
	}
}

// addLocal records an entry stored through this daemon; it reports whether
// the entry is new (and so charged to tenant).
func (o *owners) addLocal(key matcher.ChunkKey, e *entryInfo) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if old, ok := o.entries[key]; ok {
		if !old.local {
			old.local, old.tenant, old.bytes = true, e.tenant, e.bytes
			o.appendLog(e)
			return true
		}
		return false
	}
	e.local = true
	o.entries[key] = e
	o.appendLog(e)
	return true
}

func (o *owners) appendLog(e *entryInfo) {
	o.log = append(o.log, syncEntry{seq: o.nextSeq, salt: e.salt, prefix: e.prefix, tokens: e.tokens})
	o.nextSeq++
	if len(o.log) > maxSyncLog {
		o.log = slices.Delete(o.log, 0, len(o.log)-maxSyncLog)
	}
}

// addRemote records that peer holds an entry and the chunk keys under it.
// It reports whether the entry is new to the index.
func (o *owners) addRemote(key matcher.ChunkKey, e *entryInfo, peer string, chunkKeys []matcher.ChunkKey) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, k := range chunkKeys {
		if !slices.Contains(o.remote[k], peer) {
			o.remote[k] = append(o.remote[k], peer)
		}
	}
	if old, ok := o.entries[key]; ok {
		if !slices.Contains(old.peers, peer) {
			old.peers = append(old.peers, peer)
		}
		return false
	}
	e.peers = []string{peer}
	o.entries[key] = e
	return true
}

// get returns a copy of an entry's info.
func (o *owners) get(key matcher.ChunkKey) (entryInfo, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.entries[key]
	if !ok {
		return entryInfo{}, false
	}
	return *e, true
}

// peersOf returns the peers that hold chunk key k.
func (o *owners) peersOf(k matcher.ChunkKey) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.remote[k])
}

// dropPeer forgets everything a peer was said to hold (it went away).
func (o *owners) dropPeer(peer string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, ps := range o.remote {
		if i := slices.Index(ps, peer); i >= 0 {
			ps = slices.Delete(ps, i, i+1)
			if len(ps) == 0 {
				delete(o.remote, k)
			} else {
				o.remote[k] = ps
			}
		}
	}
}

// remove forgets an entry and returns it.
func (o *owners) remove(key matcher.ChunkKey) (*entryInfo, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.entries[key]
	if ok {
		delete(o.entries, key)
	}
	return e, ok
}

// setPinned pins or unpins an entry.
func (o *owners) setPinned(key matcher.ChunkKey, pinned bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e, ok := o.entries[key]
	if ok {
		e.pinned = pinned
	}
	return ok
}

// hit counts one reuse of an entry at now, decaying older hits with
// half-life hl.
func (o *owners) hit(key matcher.ChunkKey, now time.Time, hl time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e, ok := o.entries[key]; ok {
		e.hits = decay(e.hits, e.hitAt, now, hl) + 1
		e.hitAt = now
	}
}

func decay(v float64, at, now time.Time, hl time.Duration) float64 {
	if at.IsZero() || v == 0 {
		return v
	}
	dt := now.Sub(at)
	if dt <= 0 {
		return v
	}
	return v * math.Exp2(-dt.Seconds()/hl.Seconds())
}

// since returns up to n locally stored entries from seq on, and the seq to
// ask from next time.
func (o *owners) since(epoch, seq uint64, n int) (uint64, uint64, []syncEntry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if epoch != o.epoch {
		seq = 0
	}
	i, _ := slices.BinarySearchFunc(o.log, seq, func(e syncEntry, s uint64) int {
		switch {
		case e.seq < s:
			return -1
		case e.seq > s:
			return 1
		}
		return 0
	})
	end := min(i+n, len(o.log))
	out := slices.Clone(o.log[i:end])
	next := o.nextSeq
	if end < len(o.log) {
		next = o.log[end].seq
	}
	return o.epoch, next, out
}

// snapshot copies every entry's info with its key (for the control loop).
func (o *owners) snapshot() map[matcher.ChunkKey]entryInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[matcher.ChunkKey]entryInfo, len(o.entries))
	for k, e := range o.entries {
		out[k] = *e
	}
	return out
}
