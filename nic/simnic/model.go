package simnic

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kvloom/kvloom/bitstream"
	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/sim"
)

// Model is the simulated card behind BAR0: it serves the register map on a
// Region. Poll does whatever the doorbells ask; Serve polls them in a loop.
// A Model is safe for concurrent use; its work is serialised.
type Model struct {
	mu     sync.Mutex
	bar    *nic.Region
	cfg    config
	blank  bool
	log    *slog.Logger
	notify func()
	kick   chan struct{}
	pollLo time.Duration
	pollHi time.Duration

	ix    *matcher.Index
	table map[matcher.ChunkKey]*tableEntry
	ranks rankHeap
	seq   uint64

	halted     bool
	reqHead    uint32
	cplTail    uint32
	cplHead    uint32 // CPL_HEAD as last seen
	tblDone    uint32
	epoch      uint32
	cur        *pending // the request being answered
	stalled    bool     // cur waits for completion ring room
	clockNS    uint64
	errLatched bool

	toks    []matcher.Token
	matches []matcher.Match
	ent     []byte
}

var _ bitstream.SimTarget = (*Model)(nil)

type tableEntry struct {
	key    matcher.ChunkKey
	rank   uint64 // order-preserving encoding
	seq    uint64 // insertion order, to break rank ties (oldest goes first)
	tokens int
	pos    int // index in the rank heap
}

// rankHeap is a min-heap of the table's entries by (rank, seq): its top is
// the entry a higher-ranked insert evicts.
type rankHeap []*tableEntry

func (h rankHeap) Len() int { return len(h) }
func (h rankHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].seq < h[j].seq
}
func (h rankHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *rankHeap) Push(x any) {
	e := x.(*tableEntry)
	e.pos = len(*h)
	*h = append(*h, e)
}
func (h *rankHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// pending is a request whose completions are being posted.
type pending struct {
	slot    uint32
	entries []nic.CplEntry
	next    int
	work    stats
}

// stats are the counter increments a request makes when it finishes.
type stats struct {
	tokens, matches, matchedTokens, prefetches, busyNS uint64
}

// NewModel powers a simulated card on over bar: the identification and
// geometry registers of opts' configuration (or none, with opts.Blank), an
// empty table, reset rings, STATUS.READY.
func NewModel(bar *nic.Region, opts Options) (*Model, error) {
	if !bar.Writable() {
		return nil, fmt.Errorf("new simulator: the BAR is read-only: %w", ErrConfig)
	}
	cfg, err := newConfig(opts, bar.Size())
	if err != nil {
		return nil, fmt.Errorf("new simulator: %w", err)
	}
	m := &Model{
		bar:    bar,
		cfg:    cfg,
		blank:  opts.Blank,
		log:    opts.Logger,
		notify: func() {},
		kick:   make(chan struct{}, 1),
		pollLo: opts.PollMin,
		pollHi: opts.PollMax,
		ent:    make([]byte, nic.CplEntrySize),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.pollLo <= 0 {
		m.pollLo = time.Microsecond
	}
	if m.pollHi <= 0 {
		m.pollHi = 200 * time.Microsecond
	}
	m.pollHi = max(m.pollHi, m.pollLo)
	m.mu.Lock()
	m.powerOn()
	m.mu.Unlock()
	return m, nil
}

// OpenFile maps path (a fake sysfs resource0) with MAP_SHARED and powers a
// card on over it. Close unmaps it.
func OpenFile(path string, opts Options) (*Model, error) {
	bar, err := nic.MapFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("open simulated BAR: %w", err)
	}
	m, err := NewModel(bar, opts)
	if err != nil {
		return nil, errors.Join(err, bar.Close())
	}
	return m, nil
}

// Close unmaps a BAR the Model mapped itself (OpenFile); otherwise the BAR
// belongs to the caller. Stop Serve first.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bar.Close()
}

// SetNotify sets the function called after the device posts completions or
// finishes a table batch: the stand-in for an interrupt line (nic.Driver's
// Wake). Nil removes it.
func (m *Model) SetNotify(f func()) {
	if f == nil {
		f = func() {}
	}
	m.mu.Lock()
	m.notify = f
	m.mu.Unlock()
}

// Kick wakes Serve at once: the in-process stand-in for a doorbell write
// reaching the device.
func (m *Model) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Pipeline returns the timing model in effect.
func (m *Model) Pipeline() sim.Pipeline {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.pipe
}

// Image returns the image in effect; the zero ImageRef means the built-in
// defaults.
func (m *Model) Image() bitstream.ImageRef {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg.image
}

// Serve polls the doorbells until ctx ends, backing off while idle. A Kick
// ends the backoff at once.
func (m *Model) Serve(ctx context.Context) error {
	backoff := m.pollLo
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		if m.Poll() {
			backoff = m.pollLo
			continue
		}
		timer.Reset(backoff)
		select {
		case <-ctx.Done():
		case <-m.kick:
			backoff = m.pollLo
		case <-timer.C:
			backoff = min(2*backoff, m.pollHi)
		}
	}
	return nil
}

// ConfigureSim switches the simulator to a sim image's configuration, as
// programming a card would: the new image's registers, an empty table,
// reset rings, EPOCH incremented, CTRL cleared. On error nothing changes.
// It implements bitstream.SimTarget.
func (m *Model) ConfigureSim(ctx context.Context, img bitstream.SimConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg, err := m.cfg.withImage(img, m.bar.Size())
	if err != nil {
		return fmt.Errorf("configure simulator with %s: %w", img.Image, err)
	}
	m.cfg = cfg
	m.blank = false
	m.powerOn()
	m.log.Info("simnic_configured", "image", img.Image.String())
	return nil
}

// Program makes the simulated fabric run img, as a card does once its
// loader reports the image live: the image's identity and matcher
// parameters, and its pipeline when the manifest carries one (a sim image);
// otherwise the pipeline in effect stays. Tests of FPGA drivers call it from
// the loader that "programs" the simulated card.
func (m *Model) Program(ctx context.Context, img *bitstream.Image) error {
	man := img.Manifest()
	p, err := bitstream.PipelineFromParams(man.Params)
	if err != nil {
		cur := m.Pipeline()
		p = bitstream.Pipeline{
			ClockMHz: cur.ClockHz / 1e6, Lanes: cur.Lanes, LookupLatencyCycles: cur.LookupCycles,
			RequestQueueDepth: cur.RequestQueueDepth, CompletionQueueDepth: cur.CompletionQueueDepth,
			PCIeGbps: cur.PCIeBandwidth * 8 / 1e9, NetworkGbps: cur.NetworkBandwidth * 8 / 1e9,
		}
	}
	return m.ConfigureSim(ctx, bitstream.SimConfig{Image: img.Ref(), Matcher: man.Matcher, Pipeline: p, Params: man.Params})
}

// powerOn writes the identification and geometry registers and resets.
func (m *Model) powerOn() {
	b := m.bar
	b.Zero(0, nic.WinRegsSize)
	if m.blank {
		return
	}
	c := m.cfg
	b.Store32(nic.RegMagic, nic.RegMagicReset)
	b.Store32(nic.RegRegmapVersion, nic.RegmapVersion)
	b.Store32(nic.RegFeatures, nic.FeaturesExactMatch|nic.FeaturesPrefetch|nic.FeaturesEvictByRank|nic.FeaturesSimulated)
	b.Store64(nic.RegImageID0, binary.LittleEndian.Uint64(c.imageID[0:8]))
	b.Store64(nic.RegImageID1, binary.LittleEndian.Uint64(c.imageID[8:16]))
	b.Store32(nic.RegImageVersion, c.imageVersion)
	b.Store32(nic.RegClockKHz, uint32(min(c.pipe.ClockHz/1e3, 1<<32-1)))
	b.Store32(nic.RegLanes, uint32(c.pipe.Lanes))
	b.Store32(nic.RegLookupCycles, uint32(c.pipe.LookupCycles))
	b.Store32(nic.RegLineRateMbps, uint32(min(c.pipe.NetworkBandwidth*8/1e6, 1<<32-1)))
	b.Store32(nic.RegPCIeMbps, uint32(min(c.pipe.PCIeBandwidth*8/1e6, 1<<32-1)))
	b.Store32(nic.RegReqRingEntries, c.reqEntries)
	b.Store32(nic.RegCplRingEntries, c.cplEntries)
	b.Store32(nic.RegDataOffset, c.dataOff)
	b.Store32(nic.RegDataSize, c.dataSize)
	b.Store32(nic.RegTableCapacity, uint32(c.pipe.TableEntries))
	b.Store32(nic.RegMaxEntryTokens, uint32(c.maxEntryTokens))
	b.Store32(nic.RegMaxReqTokens, uint32(c.match.MaxPromptLen))
	b.Store32(nic.RegMinMatchTokens, uint32(c.match.MinLen))
	b.Store32(nic.RegAnchorK, uint32(c.match.AnchorK))
	b.Store32(nic.RegBlockTokens, uint32(c.match.BlockSize))
	b.Store32(nic.RegMaxMatches, uint32(c.match.MaxMatches))
	b.Store32(nic.RegMaxCandidates, uint32(c.match.MaxCandidates))
	m.reset()
}

// reset is CTRL.RESET: rings, table, counters, errors and the clock start
// over; EPOCH increments; the device is left READY and disabled.
func (m *Model) reset() {
	b := m.bar
	for _, r := range []int{nic.RegReqHead, nic.RegReqTail, nic.RegCplHead, nic.RegCplTail,
		nic.RegTblDoorbell, nic.RegTblCount, nic.RegTblBytes, nic.RegTblDone, nic.RegTblResult, nic.RegTblOccupancy,
		nic.RegErrStatus, nic.RegErrCode, nic.RegErrInfo, nic.RegErrValue, nic.RegErrCount, nic.RegErrClear} {
		b.Store32(r, 0)
	}
	for r := nic.RegCntRequests; r <= nic.RegDevTimeNS; r += 8 {
		b.Store64(r, 0)
	}
	ix, err := matcher.New(m.cfg.match)
	if err != nil {
		panic(fmt.Sprintf("simnic: matcher options validated at configuration fail now: %v", err))
	}
	m.ix = ix
	m.table = map[matcher.ChunkKey]*tableEntry{}
	m.ranks = m.ranks[:0]
	m.halted, m.stalled, m.errLatched = false, false, false
	m.reqHead, m.cplTail, m.cplHead, m.tblDone = 0, 0, 0, 0
	m.cur = nil
	m.clockNS = 0
	m.epoch++
	b.Store32(nic.RegEpoch, m.epoch)
	b.Store32(nic.RegStatus, nic.StatusReady)
	b.Store32(nic.RegCtrl, 0)
}

// Poll serves whatever the doorbells ask: a reset, a table batch, requests
// (as far as the completion ring has room). It reports whether it did
// anything.
func (m *Model) Poll() bool {
	m.mu.Lock()
	progress, notify := m.poll()
	f := m.notify
	m.mu.Unlock()
	if notify {
		f()
	}
	return progress
}

func (m *Model) poll() (progress, notify bool) {
	b := m.bar
	if m.blank {
		return false, false
	}
	ctrl := b.Load32(nic.RegCtrl)
	if ctrl&nic.CtrlReset != 0 {
		m.reset()
		return true, true
	}
	if clr := b.Load32(nic.RegErrClear); clr != 0 {
		st := b.Load32(nic.RegErrStatus) &^ clr
		b.Store32(nic.RegErrStatus, st)
		if st == 0 {
			b.Store32(nic.RegErrCode, 0)
			b.Store32(nic.RegErrInfo, 0)
			b.Store32(nic.RegErrValue, 0)
		}
		b.Store32(nic.RegErrClear, 0)
		progress = true
	}
	if ctrl&nic.CtrlEnable == 0 || m.halted {
		return progress, false
	}
	if b.Load32(nic.RegTblDoorbell) != m.tblDone {
		m.applyBatch()
		progress, notify = true, true
	}
	// Completion ring room the host returned.
	head := b.Load32(nic.RegCplHead)
	if head != m.cplHead {
		if head-m.cplHead > m.cplTail-m.cplHead {
			m.fatal(nic.CodeCplOverrun, m.cplTail, head)
			return true, true
		}
		m.cplHead = head
		progress = true
	}
	for range 64 { // bounded, so a reset or table batch waits for at most this much
		if m.cur == nil {
			tail := b.Load32(nic.RegReqTail)
			n := tail - m.reqHead
			if n == 0 {
				break
			}
			if n > m.cfg.reqEntries {
				m.fatal(nic.CodeRingOverrun, m.reqHead, tail)
				return true, true
			}
			m.cur = m.fetch(m.reqHead)
		}
		posted := m.post()
		progress = progress || posted > 0
		notify = notify || posted > 0
		if m.cur != nil { // the completion ring is full
			if !m.stalled {
				m.stalled = true
				m.add(nic.RegCntCplStalls, 1)
				b.Store32(nic.RegStatus, b.Load32(nic.RegStatus)|nic.StatusCplStall)
			}
			break
		}
	}
	return progress, notify
}

// post writes as many of cur's completions as the ring has room for. When
// the last one is out the request is finished: its counters are added and
// REQ_HEAD moves past it, returning its slot and buffer.
func (m *Model) post() int {
	c := m.cur
	b := m.bar
	n := 0
	for c.next < len(c.entries) && m.cplTail-m.cplHead < m.cfg.cplEntries {
		c.entries[c.next].Encode(m.ent)
		b.Write(nic.WinCplRingOffset+int(m.cplTail&(m.cfg.cplEntries-1))*nic.CplEntrySize, m.ent)
		m.cplTail++
		c.next++
		n++
	}
	if n > 0 {
		b.Store32(nic.RegCplTail, m.cplTail)
	}
	if c.next < len(c.entries) {
		return n
	}
	if m.stalled {
		m.stalled = false
		b.Store32(nic.RegStatus, b.Load32(nic.RegStatus)&^nic.StatusCplStall)
	}
	w := c.work
	m.add(nic.RegCntRequests, 1)
	m.add(nic.RegCntTokens, w.tokens)
	m.add(nic.RegCntMatches, w.matches)
	m.add(nic.RegCntMatchedTokens, w.matchedTokens)
	m.add(nic.RegCntPrefetches, w.prefetches)
	m.add(nic.RegCntBusyNS, w.busyNS)
	m.clockNS += w.busyNS
	b.Store64(nic.RegDevTimeNS, m.clockNS)
	m.cur = nil
	m.reqHead++
	b.Store32(nic.RegReqHead, m.reqHead)
	return n
}

// fetch reads and answers the descriptor in ring slot idx: it validates it,
// matches the prompt, and prepares the completions.
func (m *Model) fetch(idx uint32) *pending {
	var raw [nic.ReqDescSize]byte
	m.bar.Read(nic.WinReqRingOffset+int(idx&(m.cfg.reqEntries-1))*nic.ReqDescSize, raw[:])
	d := nic.DecodeReqDesc(raw[:])
	p := &pending{slot: idx}
	fail := func(code nic.Code, value uint32, latch bool) *pending {
		if latch {
			m.latch(nic.FaultDesc, code, idx, value)
		}
		p.entries = append(p.entries[:0], nic.CplEntry{Type: nic.CplError, Slot: idx, Tag: d.Tag, ErrCode: uint32(code), ErrInfo: value})
		return p
	}
	c := m.cfg
	end := d.Buf.Addr + uint64(d.Buf.Len)
	switch {
	case d.Opcode != nic.OpMatch:
		return fail(nic.CodeBadOpcode, uint32(d.Opcode), true)
	case d.Flags != 0:
		return fail(nic.CodeBadFlags, uint32(d.Flags), true)
	case d.Rsvd != [16]byte{}:
		return fail(nic.CodeReserved, 0, true)
	case d.Tokens == 0:
		return fail(nic.CodeNoTokens, 0, true)
	case d.Tokens > uint32(c.match.MaxPromptLen):
		return fail(nic.CodeTooManyTokens, d.Tokens, true)
	case d.Buf.Flags != 0:
		return fail(nic.CodeDMAFlags, d.Buf.Flags, true)
	case uint64(d.Buf.Len) != 4*uint64(d.Tokens):
		return fail(nic.CodeBufLen, d.Buf.Len, true)
	case d.Buf.Addr%4 != 0:
		return fail(nic.CodeBufAlign, uint32(d.Buf.Addr), true)
	case d.Buf.Addr < uint64(c.dataOff) || end > uint64(c.dataOff)+uint64(c.dataSize) || end < d.Buf.Addr:
		return fail(nic.CodeBufRange, uint32(d.Buf.Addr), true)
	}
	salt, _ := matcher.ParseSalt(d.Salt[:])
	if salt.Model == [8]byte{} {
		return fail(nic.CodeZeroSalt, 0, true)
	}
	n := int(d.Tokens)
	// The device matches straight out of its buffer memory; the host does
	// not touch the buffer until REQ_HEAD passes the request.
	toks := m.bar.Tokens(int(d.Buf.Addr), n)
	if toks == nil {
		if cap(m.toks) < n {
			m.toks = make([]matcher.Token, n)
		}
		toks = m.toks[:n]
		m.bar.ReadTokens(int(d.Buf.Addr), toks)
	}
	res, err := m.ix.Find(salt, toks, m.matches[:0])
	m.matches = res.Matches[:0]
	if err != nil {
		if !errors.Is(err, matcher.ErrTooManyCandidates) {
			// Everything else the matcher refuses was validated above.
			m.log.Error("simnic_unexpected_match_error", "err", err)
		}
		return fail(nic.CodeTooManyCandidates, uint32(min(res.Candidates, 1<<32-1)), false)
	}
	var prefetch []matcher.ChunkKey
	var prefetchTokens int64
	seen := make(map[matcher.ChunkKey]bool, len(res.Matches))
	p.entries = make([]nic.CplEntry, 0, 2*len(res.Matches)+1)
	for _, mt := range res.Matches {
		var fl uint16
		if mt.Prefix {
			fl |= nic.CplFlagPrefix
		}
		if mt.Shared {
			fl |= nic.CplFlagShared
		}
		p.entries = append(p.entries, nic.CplEntry{Type: nic.CplMatch, Flags: fl, Slot: idx, Tag: d.Tag,
			ReqOff: uint32(mt.ReqOff), Len: uint32(mt.Len), ChunkOff: uint32(mt.ChunkOff), Key: mt.Chunk})
		p.work.matchedTokens += uint64(mt.Len)
		if !seen[mt.Chunk] {
			seen[mt.Chunk] = true
			prefetch = append(prefetch, mt.Chunk)
			if e, ok := m.table[mt.Chunk]; ok {
				prefetchTokens += int64(e.tokens)
			}
		}
	}
	for _, k := range prefetch {
		p.entries = append(p.entries, nic.CplEntry{Type: nic.CplPrefetch, Slot: idx, Tag: d.Tag, Key: k})
	}
	t := c.pipe.Time(sim.Work{
		Tokens:           n,
		Lookups:          res.Anchors,
		Events:           len(res.Matches) + len(prefetch),
		PrefetchBytes:    prefetchTokens * int64(c.kvBytes),
		PrefetchMessages: len(prefetch),
	})
	done := nic.CplEntry{Type: nic.CplDone, Slot: idx, Tag: d.Tag, Count: uint32(len(res.Matches)), DeviceNS: uint64(max(t.Total, 0))}
	if res.Truncated {
		done.Flags |= nic.CplFlagTruncated
	}
	p.entries = append(p.entries, done)
	p.work.tokens = uint64(n)
	p.work.matches = uint64(len(res.Matches))
	p.work.prefetches = uint64(len(prefetch))
	p.work.busyNS = done.DeviceNS
	return p
}

// latch records an error in the error registers: the first one since
// ERR_STATUS was last empty keeps its code, slot and value.
func (m *Model) latch(bit uint32, code nic.Code, info, value uint32) {
	b := m.bar
	st := b.Load32(nic.RegErrStatus)
	if st == 0 {
		b.Store32(nic.RegErrCode, uint32(code))
		b.Store32(nic.RegErrInfo, info)
		b.Store32(nic.RegErrValue, value)
	}
	b.Store32(nic.RegErrStatus, st|bit)
	if c := b.Load32(nic.RegErrCount); c != ^uint32(0) {
		b.Store32(nic.RegErrCount, c+1)
	}
	m.add(nic.RegCntErrors, 1)
	m.log.Warn("simnic_error", "code", code.String(), "info", info, "value", value)
}

// fatal halts the device after a ring protocol violation.
func (m *Model) fatal(code nic.Code, info, value uint32) {
	m.latch(nic.FaultRing, code, info, value)
	m.halted = true
	m.bar.Store32(nic.RegStatus, m.bar.Load32(nic.RegStatus)|nic.StatusHalted)
}

func (m *Model) add(reg int, n uint64) {
	if n != 0 {
		m.bar.Store64(reg, m.bar.Load64(reg)+n)
	}
}

// applyBatch applies the table batch in the TABLE window, writing each
// record's result back in place, then TBL_DONE.
func (m *Model) applyBatch() {
	b := m.bar
	seq := b.Load32(nic.RegTblDoorbell)
	count := b.Load32(nic.RegTblCount)
	size := b.Load32(nic.RegTblBytes)
	b.Store32(nic.RegStatus, b.Load32(nic.RegStatus)|nic.StatusTblBusy)
	result := nic.CodeNone
	if size > nic.WinTableSize {
		result = nic.CodeBatchRange
		m.latch(nic.FaultTable, result, 0, size)
	} else {
		var ch changes
		off := uint64(0)
		for i := range count {
			if off+nic.TblRecordSize > uint64(size) {
				result = nic.CodeBatchRange
				m.latch(nic.FaultTable, result, i, uint32(off))
				break
			}
			var hdr [nic.TblRecordSize]byte
			b.Read(nic.WinTableOffset+int(off), hdr[:])
			rec := nic.DecodeTableRecord(hdr[:])
			l := uint64(nic.TblRecordSize)
			if rec.Op == nic.TblOpInsert {
				l += (4*uint64(rec.Tokens) + 15) &^ 15
			}
			if off+l > uint64(size) {
				result = nic.CodeBatchRange
				m.latch(nic.FaultTable, result, i, rec.Tokens)
				break
			}
			status, code, victim := m.applyRecord(&ch, rec, int(off)+nic.TblRecordSize)
			if code != nic.CodeNone {
				m.latch(nic.FaultTable, code, i, uint32(rec.Op))
			}
			rec.Status, rec.ErrCode, rec.Victim = status, uint16(code), victim
			rec.Encode(hdr[:])
			b.Write(nic.WinTableOffset+int(off)+nic.TblRecordStatus, hdr[nic.TblRecordStatus:])
			off += l
		}
		m.commit(&ch)
	}
	b.Store32(nic.RegTblResult, uint32(result))
	b.Store32(nic.RegTblOccupancy, uint32(len(m.table)))
	b.Store32(nic.RegStatus, b.Load32(nic.RegStatus)&^nic.StatusTblBusy)
	m.tblDone = seq
	b.Store32(nic.RegTblDone, seq)
}

// changes collects a batch's net effect on the matcher index, applied in
// one Update at the end of the batch (requests never see half a batch).
type changes struct {
	add    map[matcher.ChunkKey]matcher.Entry
	remove map[matcher.ChunkKey]bool
	clear  bool
}

func (ch *changes) put(k matcher.ChunkKey, e matcher.Entry) {
	if ch.add == nil {
		ch.add = map[matcher.ChunkKey]matcher.Entry{}
	}
	ch.add[k] = e
}

func (ch *changes) drop(k matcher.ChunkKey) {
	if _, ok := ch.add[k]; ok {
		delete(ch.add, k)
		return
	}
	if ch.remove == nil {
		ch.remove = map[matcher.ChunkKey]bool{}
	}
	ch.remove[k] = true
}

func (m *Model) commit(ch *changes) {
	if ch.clear {
		ix, err := matcher.New(m.cfg.match)
		if err != nil {
			panic(fmt.Sprintf("simnic: matcher options validated at configuration fail now: %v", err))
		}
		m.ix = ix
	}
	if len(ch.add) == 0 && len(ch.remove) == 0 {
		return
	}
	add := make([]matcher.Entry, 0, len(ch.add))
	for _, e := range ch.add {
		add = append(add, e)
	}
	rm := make([]matcher.ChunkKey, 0, len(ch.remove))
	for k := range ch.remove {
		rm = append(rm, k)
	}
	if _, _, err := m.ix.Update(add, rm); err != nil {
		// Every entry passed KeyOf, which is the same validation.
		panic(fmt.Sprintf("simnic: index update of validated entries failed: %v", err))
	}
}

// applyRecord applies one record; tokOff is where its tokens start.
func (m *Model) applyRecord(ch *changes, rec nic.TableRecord, tokOff int) (uint16, nic.Code, [16]byte) {
	var none [16]byte
	c := m.cfg
	malformed := func(code nic.Code) (uint16, nic.Code, [16]byte) { return nic.TblStMalformed, code, none }
	if rec.Rsvd != 0 || rec.Rsvd2 != 0 {
		return malformed(nic.CodeReserved)
	}
	switch rec.Op {
	case nic.TblOpRemove, nic.TblOpClear:
		if rec.Flags != 0 {
			return malformed(nic.CodeBadFlags)
		}
		if rec.Tokens != 0 {
			return malformed(nic.CodeReserved)
		}
		if rec.Op == nic.TblOpClear {
			n := uint64(len(m.table))
			m.table = map[matcher.ChunkKey]*tableEntry{}
			m.ranks = m.ranks[:0]
			*ch = changes{clear: true}
			m.add(nic.RegCntTblRemoves, n)
			return nic.TblStCleared, nic.CodeNone, none
		}
		e, ok := m.table[rec.Key]
		if !ok {
			return nic.TblStAbsent, nic.CodeNone, none
		}
		m.evict(ch, e)
		m.add(nic.RegCntTblRemoves, 1)
		return nic.TblStRemoved, nic.CodeNone, none
	case nic.TblOpInsert:
	default:
		return malformed(nic.CodeBadOpcode)
	}
	switch {
	case rec.Flags&^nic.TblFlagPrefix != 0:
		return malformed(nic.CodeBadFlags)
	case rec.Tokens == 0:
		return malformed(nic.CodeNoTokens)
	case rec.Tokens > uint32(c.maxEntryTokens):
		return malformed(nic.CodeTooManyTokens)
	case nic.RankIsNaN(rec.Rank):
		return malformed(nic.CodeBadRank)
	}
	salt, _ := matcher.ParseSalt(rec.Salt[:])
	if salt.Model == [8]byte{} {
		return malformed(nic.CodeZeroSalt)
	}
	toks := make([]matcher.Token, rec.Tokens)
	m.bar.ReadTokens(nic.WinTableOffset+tokOff, toks)
	ent := matcher.Entry{Salt: salt, Tokens: toks, Prefix: rec.Flags&nic.TblFlagPrefix != 0}
	key, err := m.ix.KeyOf(ent)
	if err != nil {
		return malformed(nic.CodeEntryRefused)
	}
	if key != rec.Key {
		return malformed(nic.CodeKeyMismatch)
	}
	if e, ok := m.table[key]; ok {
		// Same key, same content: only the rank changes.
		e.rank = rec.Rank
		heap.Fix(&m.ranks, e.pos)
		m.add(nic.RegCntTblInserts, 1)
		return nic.TblStReplaced, nic.CodeNone, none
	}
	status, victim := uint16(nic.TblStStored), none
	if len(m.table) >= c.pipe.TableEntries {
		low := m.ranks[0]
		if rec.Rank <= low.rank {
			m.add(nic.RegCntTblRejects, 1)
			return nic.TblStRejected, nic.CodeNone, none
		}
		m.evict(ch, low)
		m.add(nic.RegCntTblEvictions, 1)
		status, victim = nic.TblStEvicted, low.key
	}
	m.seq++
	e := &tableEntry{key: key, rank: rec.Rank, seq: m.seq, tokens: len(toks)}
	m.table[key] = e
	heap.Push(&m.ranks, e)
	ch.put(key, ent)
	m.add(nic.RegCntTblInserts, 1)
	return status, nic.CodeNone, victim
}

func (m *Model) evict(ch *changes, e *tableEntry) {
	heap.Remove(&m.ranks, e.pos)
	delete(m.table, e.key)
	ch.drop(e.key)
}
