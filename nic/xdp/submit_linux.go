//go:build linux

package xdp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/wire"
)

// XDP verdicts (enum xdp_action).
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3
)

// submitEndpoints addresses the frames Submit feeds the program: a router in
// the benchmarking range (RFC 2544) hinting the device.
func (d *Device) submitEndpoints() wire.Endpoints {
	return wire.Endpoints{
		SrcMAC: net.HardwareAddr{0x02, 0x6b, 0x76, 0x00, 0x00, 0x01}, DstMAC: net.HardwareAddr{0x02, 0x6b, 0x76, 0x00, 0x00, 0x02},
		SrcIP: netip.AddrFrom4([4]byte{198, 18, 0, 1}), DstIP: netip.AddrFrom4([4]byte{198, 18, 0, 2}),
		SrcPort: 40000, DstPort: d.opts.Port,
	}
}

// Submit matches a request through the program: its anchors and prefix
// block keys go in as HINT frames (BPF_PROG_TEST_RUN), the replies say
// which the index holds (and the program reports each hit to the ring
// buffer, as for hints from the network), and the host verifies and
// extends the hits on the tokens the control plane pushed. The events are
// the matches in matcher.FindAll's order, one EventPrefetch per distinct
// matched chunk, and EventDone with the time spent in the kernel.
func (d *Device) Submit(ctx context.Context, req nic.Request) (<-chan nic.Event, error) {
	d.mu.RLock()
	cfg, closed := d.cfg, d.closed
	d.mu.RUnlock()
	n := len(req.Tokens)
	switch {
	case closed:
		return nil, fmt.Errorf("submit request %d: %w", req.ID, nic.ErrClosed)
	case n == 0:
		return nil, fmt.Errorf("submit request %d: empty prompt: %w", req.ID, nic.ErrBadRequest)
	case n > cfg.match.MaxPromptLen:
		return nil, fmt.Errorf("submit request %d: %d tokens, device limit is %d: %w", req.ID, n, cfg.match.MaxPromptLen, nic.ErrBadRequest)
	case req.Salt.Model == [8]byte{}:
		return nil, fmt.Errorf("submit request %d: %w: %w", req.ID, nic.ErrBadRequest, matcher.ErrZeroSalt)
	}
	if v := cfg.match.Vocab; v > 0 {
		for i, tok := range req.Tokens {
			if int64(tok) >= int64(v) {
				return nil, fmt.Errorf("submit request %d: token %d at offset %d outside the vocabulary of %d: %w: %w", req.ID, tok, i, v, nic.ErrBadRequest, matcher.ErrTokenRange)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("submit request %d: %w", req.ID, err)
	}
	select {
	case d.inflight <- struct{}{}:
	default:
		d.count(func(s *nic.Stats) { s.Backpressure++ })
		return nil, fmt.Errorf("submit request %d: %d requests in flight: %w", req.ID, cap(d.inflight), nic.ErrQueueFull)
	}
	ch := make(chan nic.Event, d.opts.EventBuffer)
	d.wg.Add(1)
	go d.serve(ctx, req, ch)
	return ch, nil
}

// serve runs one request and delivers its events; it owns ch.
func (d *Device) serve(ctx context.Context, req nic.Request, ch chan nic.Event) {
	defer d.wg.Done()
	defer func() { <-d.inflight }()
	defer close(ch)
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}

	res, busy, err := d.run(ctx, req)
	d.count(func(s *nic.Stats) {
		s.Requests++
		s.Tokens += uint64(len(req.Tokens))
		s.DeviceBusyTime += busy
		if err != nil {
			s.Errors++
		}
	})
	// fail delivers a terminal error if the channel has room: the consumer
	// may have stopped reading, and nothing may block Close.
	fail := func(err error) {
		select {
		case ch <- nic.Event{Kind: nic.EventError, RequestID: req.ID, Err: err}:
		default:
		}
	}
	send := func(ev nic.Event) bool {
		ev.RequestID = req.ID
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
			fail(fmt.Errorf("request %d: %w", req.ID, ctx.Err()))
		case <-d.stop:
			fail(fmt.Errorf("request %d: %w", req.ID, nic.ErrClosed))
		}
		return false
	}
	if err != nil {
		send(nic.Event{Kind: nic.EventError, Err: err})
		return
	}
	var matched uint64
	seen := map[matcher.ChunkKey]bool{}
	var prefetch []matcher.ChunkKey
	for _, m := range res.matches {
		if !send(nic.Event{Kind: nic.EventMatch, Match: m}) {
			return
		}
		matched += uint64(m.Len)
		if !seen[m.Chunk] {
			seen[m.Chunk] = true
			prefetch = append(prefetch, m.Chunk)
		}
	}
	for _, k := range prefetch {
		if !send(nic.Event{Kind: nic.EventPrefetch, Key: k}) {
			return
		}
	}
	d.count(func(s *nic.Stats) {
		s.Matches += uint64(len(res.matches))
		s.TokensMatched += matched
		s.Prefetches += uint64(len(prefetch))
	})
	send(nic.Event{Kind: nic.EventDone, DeviceTime: busy, Truncated: res.truncated})
}

// run does a request's work under the shared lock: hints through the
// program, then host verification. busy is the time spent running the
// program.
func (d *Device) run(ctx context.Context, req nic.Request) (result, time.Duration, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed || d.prog == nil {
		return result{}, 0, fmt.Errorf("request %d: %w", req.ID, nic.ErrClosed)
	}
	t, cfg := d.tbl, d.cfg
	pl := t.plan(req.Salt, req.Tokens, cfg.match.MinLen)
	hits := make([][]bool, len(pl.probes))
	for si := range pl.probes {
		hits[si] = make([]bool, len(pl.probes[si]))
	}
	ep := d.submitEndpoints()
	parser := wire.NewParser(d.opts.Port)
	var busy time.Duration
	for si, ps := range pl.probes {
		if len(ps) == 0 {
			continue
		}
		h := pl.hint(si, req.ID, cfg.match.BlockSize)
		msgs, err := h.Packets(wire.MaxEntries)
		if err != nil {
			return result{}, busy, fmt.Errorf("request %d: %w", req.ID, err)
		}
		for pi, msg := range msgs {
			if err := ctx.Err(); err != nil {
				return result{}, busy, fmt.Errorf("request %d: %w", req.ID, err)
			}
			frame, err := ep.Frame(msg)
			if err != nil {
				return result{}, busy, fmt.Errorf("request %d: build hint frame: %w", req.ID, err)
			}
			out := make([]byte, len(frame)+64) // the program keeps the size; room to spare all the same
			start := time.Now()
			verdict, err := d.prog.prog.Run(&ebpf.RunOptions{Data: frame, DataOut: out})
			busy += time.Since(start)
			if err != nil {
				return result{}, busy, &nic.DeviceError{Op: "submit", Detail: fmt.Sprintf("BPF_PROG_TEST_RUN: %v", err)}
			}
			if verdict != xdpTX {
				return result{}, busy, &nic.DeviceError{Op: "submit", Value: verdict, Detail: fmt.Sprintf("hint %d/%d of request %d: verdict %d, want XDP_TX", msg.FragIndex, msg.FragCount, req.ID, verdict)}
			}
			pkt, err := parser.Parse(out)
			if err != nil {
				return result{}, busy, &nic.DeviceError{Op: "submit", Detail: fmt.Sprintf("reply to hint %d/%d: %v", msg.FragIndex, msg.FragCount, err)}
			}
			found, err := wire.HitsOf(msg, pkt.Message)
			if err != nil {
				return result{}, busy, &nic.DeviceError{Op: "submit", Detail: err.Error()}
			}
			for _, f := range found {
				i := pi*wire.MaxEntries + f.Index
				p := ps[i]
				s := t.slots[p.key]
				if s == nil || f.Reply.ChunkID != wire.ChunkID(s.value.ChunkKey) || f.Reply.ChunkOffset != s.value.ChunkOffset {
					return result{}, busy, &nic.DeviceError{Op: "submit", Detail: fmt.Sprintf("the program answers anchor %#x with chunk %#x offset %d, which the host table does not hold there", p.key.fp, f.Reply.ChunkID, f.Reply.ChunkOffset)}
				}
				hits[si][i] = true
			}
		}
	}
	res, err := t.match(req.Salt, req.Tokens, pl, func(si, i int) bool { return hits[si][i] }, cfg.match)
	if err != nil {
		return result{}, busy, fmt.Errorf("request %d: %w", req.ID, err)
	}
	return res, busy, nil
}
