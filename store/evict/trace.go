package evict

import (
	"fmt"
	"math"
)

// Request is one request of a trace.
type Request struct {
	// Timestamp is the arrival time in milliseconds from the trace start.
	Timestamp float64
	// InputLength and OutputLength are the prompt and generated tokens.
	InputLength, OutputLength int
	// Blocks are the prompt's block ids: equal ids mean an equal block and
	// an equal prefix before it.
	Blocks []uint64
}

// BlockTokens returns the tokens of block i of a request whose blocks hold
// blockTokens tokens (the last one holds the remainder).
func (r *Request) BlockTokens(i, blockTokens int) int {
	if i == len(r.Blocks)-1 {
		return r.InputLength - i*blockTokens
	}
	return blockTokens
}

// Trace is a request trace in arrival order, as plain data: evict reads no
// trace files (sim.ReadMooncake does; `kvloom trace replay` hands its
// requests over).
type Trace struct {
	Name        string
	BlockTokens int
	Requests    []Request
}

// ReplayResult is what one replay measured.
type ReplayResult struct {
	Policy   string `json:"policy"`
	Capacity int64  `json:"capacity_blocks"`
	Requests int    `json:"requests"`
	// Tokens is the prompt tokens replayed and HitTokens those served from
	// cache: each request's longest cached prefix of blocks.
	Tokens    int64 `json:"tokens"`
	HitTokens int64 `json:"hit_tokens"`
	// BlockAccesses counts blocks looked up and BlockHits those in the
	// cached prefix.
	BlockAccesses int64   `json:"block_accesses"`
	BlockHits     int64   `json:"block_hits"`
	Evictions     int64   `json:"evictions"`
	TokenHitRatio float64 `json:"token_hit_ratio"`
}

// Replay runs tr through p with prefix-cache semantics, as an engine with a
// block cache sees it: each request looks up its blocks in order and reuses
// the longest resident prefix (a hit stops being usable at the first
// missing block, since later blocks' KV depends on it), then computes and
// inserts the rest (blocks already resident past the first miss are
// touched). Every block weighs 1, so p's capacity is in blocks. Each
// request's InputLength must be what its blocks hold: every block full but
// the last, which holds 1 to tr.BlockTokens tokens (a trace read by
// sim.ReadMooncake is).
func Replay(tr *Trace, p Policy[uint64]) ReplayResult {
	res := ReplayResult{Policy: p.Name(), Capacity: p.Capacity(), Requests: len(tr.Requests)}
	var evicted []uint64
	for i := range tr.Requests {
		rq := &tr.Requests[i]
		res.Tokens += int64(rq.InputLength)
		prefix := true
		for b, id := range rq.Blocks {
			res.BlockAccesses++
			hit := p.Touch(id)
			if hit && prefix {
				res.BlockHits++
				res.HitTokens += int64(rq.BlockTokens(b, tr.BlockTokens))
				continue
			}
			prefix = false
			if !hit {
				evicted = evicted[:0]
				_, evicted = p.Insert(id, 1, evicted)
				res.Evictions += int64(len(evicted))
			}
		}
	}
	if res.Tokens > 0 {
		res.TokenHitRatio = float64(res.HitTokens) / float64(res.Tokens)
	}
	return res
}

// HashID mixes a trace block id (splitmix64's finaliser), for policies
// that sketch frequencies.
func HashID(id uint64) uint64 {
	id ^= id >> 30
	id *= 0xbf58476d1ce4e5b9
	id ^= id >> 27
	id *= 0x94d049bb133111eb
	return id ^ id>>31
}

// ReplayPolicy builds policy name with capacity blocks and replays tr on it.
func ReplayPolicy(tr *Trace, name string, capacity int64) (ReplayResult, error) {
	if capacity <= 0 || capacity > math.MaxInt32 {
		return ReplayResult{}, fmt.Errorf("capacity %d blocks, want 1..%d: %w", capacity, math.MaxInt32, ErrPolicy)
	}
	p, err := New(name, capacity, Options[uint64]{Hash: HashID, ExpectedEntries: int(capacity)})
	if err != nil {
		return ReplayResult{}, err
	}
	return Replay(tr, p), nil
}
