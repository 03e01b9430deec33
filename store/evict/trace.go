package evict

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// Trace limits: a longer line or request is an error, not an allocation.
const (
	MaxTraceLine   = 4 << 20
	MaxTraceTokens = 1 << 24
	// MooncakeBlockTokens is the block size of the published Mooncake
	// traces: one hash id per 512 prompt tokens.
	MooncakeBlockTokens = 512
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

// Trace is a request trace in arrival order.
type Trace struct {
	Name        string
	BlockTokens int
	Requests    []Request
}

type mooncakeLine struct {
	Timestamp    *float64 `json:"timestamp"`
	InputLength  *int64   `json:"input_length"`
	OutputLength *int64   `json:"output_length"`
	HashIDs      []int64  `json:"hash_ids"`
}

// ReadMooncake reads a trace in the Mooncake FAST'25 format: one JSON
// object a line with timestamp (ms), input_length, output_length and
// hash_ids (one per blockTokens-token block). Unknown fields, missing
// fields, out-of-range values, a hash_ids count that disagrees with
// input_length and timestamps out of order are errors naming the line and
// field (wrapping ErrTrace); on error the trace is nil. Blank lines are
// skipped.
func ReadMooncake(r io.Reader, name string, blockTokens int) (*Trace, error) {
	if blockTokens <= 0 || blockTokens > MaxTraceTokens {
		return nil, fmt.Errorf("block size %d tokens, want 1..%d: %w", blockTokens, MaxTraceTokens, ErrTrace)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxTraceLine)
	tr := &Trace{Name: name, BlockTokens: blockTokens}
	line := 0
	last := 0.0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var m mooncakeLine
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("%s line %d: %v: %w", name, line, err, ErrTrace)
		}
		if dec.More() {
			return nil, fmt.Errorf("%s line %d: more than one JSON value: %w", name, line, ErrTrace)
		}
		switch {
		case m.Timestamp == nil:
			return nil, fmt.Errorf("%s line %d: missing timestamp: %w", name, line, ErrTrace)
		case m.InputLength == nil:
			return nil, fmt.Errorf("%s line %d: missing input_length: %w", name, line, ErrTrace)
		case m.OutputLength == nil:
			return nil, fmt.Errorf("%s line %d: missing output_length: %w", name, line, ErrTrace)
		case m.HashIDs == nil:
			return nil, fmt.Errorf("%s line %d: missing hash_ids: %w", name, line, ErrTrace)
		}
		ts, in, out := *m.Timestamp, *m.InputLength, *m.OutputLength
		switch {
		case !(ts >= 0) || ts > 1e15:
			return nil, fmt.Errorf("%s line %d: timestamp %v, want 0..1e15 ms: %w", name, line, ts, ErrTrace)
		case ts < last:
			return nil, fmt.Errorf("%s line %d: timestamp %v before the previous %v (want arrival order): %w", name, line, ts, last, ErrTrace)
		case in <= 0 || in > MaxTraceTokens:
			return nil, fmt.Errorf("%s line %d: input_length %d, want 1..%d: %w", name, line, in, MaxTraceTokens, ErrTrace)
		case out < 0 || out > MaxTraceTokens:
			return nil, fmt.Errorf("%s line %d: output_length %d, want 0..%d: %w", name, line, out, MaxTraceTokens, ErrTrace)
		}
		if want := (in + int64(blockTokens) - 1) / int64(blockTokens); int64(len(m.HashIDs)) != want {
			return nil, fmt.Errorf("%s line %d: %d hash_ids for input_length %d, want %d (one per %d-token block): %w",
				name, line, len(m.HashIDs), in, want, blockTokens, ErrTrace)
		}
		blocks := make([]uint64, len(m.HashIDs))
		for i, id := range m.HashIDs {
			if id < 0 {
				return nil, fmt.Errorf("%s line %d: hash_ids[%d] = %d, want >= 0: %w", name, line, i, id, ErrTrace)
			}
			blocks[i] = uint64(id)
		}
		last = ts
		tr.Requests = append(tr.Requests, Request{Timestamp: ts, InputLength: int(in), OutputLength: int(out), Blocks: blocks})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s line %d: longer than %d bytes: %w", name, line+1, MaxTraceLine, ErrTrace)
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(tr.Requests) == 0 {
		return nil, fmt.Errorf("%s: no requests: %w", name, ErrTrace)
	}
	return tr, nil
}

// ReadMooncakeFile reads a Mooncake-format trace file with 512-token blocks.
func ReadMooncakeFile(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	return ReadMooncake(f, path, MooncakeBlockTokens)
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
// touched). Every block weighs 1, so p's capacity is in blocks.
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
