package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"
)

// Trace limits: a line longer than MaxTraceLine or a request longer than
// MaxTraceTokens is an error, not an allocation.
const (
	MaxTraceLine   = 4 << 20
	MaxTraceTokens = 1 << 24
)

// MooncakeBlockTokens is the block size of the published Mooncake traces:
// one hash id per 512 prompt tokens.
const MooncakeBlockTokens = 512

// mooncakeLine is one line of the Mooncake trace format.
type mooncakeLine struct {
	Timestamp    *float64 `json:"timestamp"`
	InputLength  *int64   `json:"input_length"`
	OutputLength *int64   `json:"output_length"`
	HashIDs      []int64  `json:"hash_ids"`
}

// ReadMooncake reads a trace in the Mooncake format (FAST'25 release): one
// JSON object a line with timestamp (ms from the start), input_length,
// output_length and hash_ids, one id per blockTokens-token block
// (MooncakeBlockTokens in the published traces), where equal ids mean an equal block and an equal
// prefix. Blank lines are skipped. Errors name the line and field; on error
// the result is nil.
func ReadMooncake(r io.Reader, name string, blockTokens int) (*Workload, error) {
	if blockTokens <= 0 {
		return nil, fmt.Errorf("block size %d tokens, want > 0: %w", blockTokens, ErrConfig)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxTraceLine)
	w := &Workload{Name: name}
	line := 0
	var last float64
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
			return nil, fmt.Errorf("%s line %d: more than one JSON value on the line: %w", name, line, ErrTrace)
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
		case !(ts >= 0) || math.IsInf(ts, 0) || ts > 1e15:
			return nil, fmt.Errorf("%s line %d: timestamp %v, want 0 to 1e15 ms: %w", name, line, ts, ErrTrace)
		case ts < last:
			return nil, fmt.Errorf("%s line %d: timestamp %v is before the previous line's %v (the trace must be in arrival order): %w", name, line, ts, last, ErrTrace)
		case in <= 0 || in > MaxTraceTokens:
			return nil, fmt.Errorf("%s line %d: input_length %d, want 1 to %d: %w", name, line, in, MaxTraceTokens, ErrTrace)
		case out < 0 || out > MaxTraceTokens:
			return nil, fmt.Errorf("%s line %d: output_length %d, want 0 to %d: %w", name, line, out, MaxTraceTokens, ErrTrace)
		}
		want := (in + int64(blockTokens) - 1) / int64(blockTokens)
		if int64(len(m.HashIDs)) != want {
			return nil, fmt.Errorf("%s line %d: %d hash_ids for input_length %d, want %d (one per %d-token block): %w",
				name, line, len(m.HashIDs), in, want, blockTokens, ErrTrace)
		}
		last = ts
		blocks := make([]Block, len(m.HashIDs))
		for i, id := range m.HashIDs {
			if id < 0 {
				return nil, fmt.Errorf("%s line %d: hash_ids[%d] = %d is negative: %w", name, line, i, id, ErrTrace)
			}
			tok := int32(blockTokens)
			if i == len(m.HashIDs)-1 {
				tok = int32(in - int64(i)*int64(blockTokens))
			}
			blocks[i] = Block{ID: uint64(id), Tokens: tok}
		}
		w.Requests = append(w.Requests, Request{
			Arrival: time.Duration(math.Round(ts * float64(time.Millisecond))),
			Output:  int32(out),
			Blocks:  blocks,
		})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s line %d: longer than %d bytes: %w", name, line+1, MaxTraceLine, ErrTrace)
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(w.Requests) == 0 {
		return nil, fmt.Errorf("%s: no requests: %w", name, ErrTrace)
	}
	if err := w.finish(); err != nil {
		return nil, err
	}
	return w, nil
}

// ReadMooncakeFile reads a Mooncake-format trace file.
func ReadMooncakeFile(path string, blockTokens int) (*Workload, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	defer f.Close()
	w, err := ReadMooncake(f, path, blockTokens)
	if err != nil {
		return nil, err
	}
	w.Name = filepath.Base(path)
	return w, nil
}
