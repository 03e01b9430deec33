package nic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvloom/kvloom/matcher"
)

// DriverOptions configure a Driver. The zero value is usable.
type DriverOptions struct {
	// Kick, when set, is called after every doorbell the driver writes. An
	// in-process device (the simulator) uses it to wake its loop at once; a
	// card sees the write itself and needs none.
	Kick func()
	// PollMin and PollMax bound the exponential backoff of the pollers that
	// replace interrupts. Zero means 2µs and 1ms.
	PollMin, PollMax time.Duration
	// Timeout bounds each handshake with the device: a reset, a table
	// batch. Zero means 5s.
	Timeout time.Duration
	// EventBuffer is the capacity of each request's event channel. Zero
	// means 64.
	EventBuffer int
	// Logger receives faults and resets. Nil discards them.
	Logger *slog.Logger
}

func (o DriverOptions) withDefaults() DriverOptions {
	if o.PollMin <= 0 {
		o.PollMin = 2 * time.Microsecond
	}
	if o.PollMax <= 0 {
		o.PollMax = time.Millisecond
	}
	if o.PollMax < o.PollMin {
		o.PollMax = o.PollMin
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.EventBuffer <= 0 {
		o.EventBuffer = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Kick == nil {
		o.Kick = func() {}
	}
	return o
}

// Driver is the host side of the register map: it posts requests on the
// request ring, consumes the completion ring, applies index updates through
// the table window, and resets the device after a fault. It implements every
// method of Device except Info and Load, which need to know what the device
// is (backends embed it and add those). It is safe for concurrent use.
//
// The same Driver drives a card's BAR mapped from sysfs and the simulator's
// register model; nothing in it knows which.
type Driver struct {
	bar  *Region
	opts DriverOptions
	log  *slog.Logger
	geo  atomic.Pointer[Geometry]

	mu        sync.Mutex // request ring producer state and the in-flight list
	inflight  []*request // posted and not yet finished by the device, in ring order
	tail      uint32     // REQ_TAIL as last written
	nextTag   uint64
	closed    bool
	resetting bool
	broken    error // set when a reset failed; Submit refuses until one succeeds

	tblMu  sync.Mutex // table batches and the shadow table
	tblSeq uint32
	shadow map[matcher.ChunkKey]*shadowEntry
	tblBuf []byte // one batch, staged before it is copied into the window
	tblN   uint64 // insertions so far, to order the shadow table
	saved  bool   // Suspend folded the counters into base already

	cplHead uint32 // CPL_HEAD as last written; owned by the poller goroutine
	scratch []byte // one completion entry; owned by the poller goroutine

	statsMu sync.Mutex
	base    Stats // device counters from before the last reset
	host    Stats // counters only the host sees (Backpressure, Resets, host-detected Errors)

	wake     chan struct{} // interrupt stand-in: wakes the poller
	tblWake  chan struct{} // wakes a table batch waiter
	resetReq chan resetCall
	faultCh  chan error // a fault seen outside the poller; the poller resets
	stop     chan struct{}
	done     chan struct{}
}

type request struct {
	ctx      context.Context
	cancel   context.CancelFunc
	id       uint64
	tag      uint64
	slot     uint32
	bufStart uint32 // DATA-relative
	bufEnd   uint32
	matches  uint32
	ch       chan Event
	closed   bool // owned by the poller goroutine
}

type shadowEntry struct {
	salt   matcher.Salt
	tokens []matcher.Token
	prefix bool
	rank   float64
	seq    uint64 // insertion order, for a deterministic re-push
}

type resetCall struct {
	ctx     context.Context
	suspend bool // only fail what is in flight and hold new work off
	err     chan error
}

var _ interface {
	PushIndex(context.Context, IndexUpdate) error
	Submit(context.Context, Request) (<-chan Event, error)
	Stats() Stats
	Close() error
} = (*Driver)(nil)

// NewDriver checks the device's identity, resets it, pushes nothing, and
// starts the completion poller. bar must be writable.
func NewDriver(ctx context.Context, bar *Region, opts DriverOptions) (*Driver, error) {
	if !bar.Writable() {
		return nil, errors.New("new driver: the BAR is mapped read-only")
	}
	if err := CheckIdentity(bar); err != nil {
		return nil, fmt.Errorf("new driver: %w", err)
	}
	opts = opts.withDefaults()
	d := &Driver{
		bar:      bar,
		opts:     opts,
		log:      opts.Logger,
		shadow:   map[matcher.ChunkKey]*shadowEntry{},
		scratch:  make([]byte, CplEntrySize),
		wake:     make(chan struct{}, 1),
		tblWake:  make(chan struct{}, 1),
		resetReq: make(chan resetCall),
		faultCh:  make(chan error, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	// Prove the BAR is live before trusting anything else it says.
	for _, pat := range []uint32{0xa5a5_5a5a, 0x5a5a_a5a5} {
		bar.Store32(RegScratch, pat)
		if got := bar.Load32(RegScratch); got != pat {
			return nil, fmt.Errorf("new driver: SCRATCH reads back %#08x after writing %#08x: the BAR is not live: %w", got, pat, ErrDeviceFault)
		}
	}
	if err := d.resetDevice(ctx); err != nil {
		return nil, fmt.Errorf("new driver: %w", err)
	}
	go d.run()
	return d, nil
}

// Geometry returns what the device's registers said at the last reset.
func (d *Driver) Geometry() Geometry { return *d.geo.Load() }

// Region returns the BAR the driver drives.
func (d *Driver) Region() *Region { return d.bar }

// Wake tells the driver that the device posted something: the stand-in for
// an interrupt. Devices that cannot call it are found by polling.
func (d *Driver) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
	select {
	case d.tblWake <- struct{}{}:
	default:
	}
}

// Suspend fails the requests in flight and holds new work off (Submit and
// PushIndex refuse with ErrQueueFull) until the next Reset, after waiting
// for a table batch in progress. Backends call it before reprogramming the
// device under the driver.
func (d *Driver) Suspend(ctx context.Context) error {
	return d.call(ctx, resetCall{ctx: ctx, suspend: true, err: make(chan error, 1)}, "suspend")
}

// Reset resets the device: in-flight requests fail, the rings and counters
// restart, the geometry is read again (a new image may have changed it) and
// the driver's copy of the index table is pushed back, by rank where it no
// longer fits. Backends call it after loading an image.
func (d *Driver) Reset(ctx context.Context) error {
	return d.call(ctx, resetCall{ctx: ctx, err: make(chan error, 1)}, "reset")
}

// call hands a reset or suspension to the poller and waits for it.
func (d *Driver) call(ctx context.Context, call resetCall, what string) error {
	select {
	case d.resetReq <- call:
	case <-d.done:
		return fmt.Errorf("%s: %w", what, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", what, ctx.Err())
	}
	select {
	case err := <-call.err:
		return err
	case <-d.done:
		return fmt.Errorf("%s: %w", what, ErrClosed)
	}
}

// serve runs a reset or suspension on the poller.
func (d *Driver) serve(rc resetCall) error {
	if !rc.suspend {
		return d.reset(rc.ctx, nil)
	}
	d.mu.Lock()
	d.resetting = true
	d.mu.Unlock()
	d.failAll(fmt.Errorf("device suspended for reprogramming: %w", ErrDeviceFault))
	// A batch in progress finishes first; then the counters are saved,
	// because programming the device clears them.
	d.tblMu.Lock()
	d.accumulate()
	d.saved = true
	d.tblMu.Unlock()
	return nil
}

// Close fails what is in flight with ErrClosed, stops the poller and
// disables the device. The table stays on the device. It does not close
// the BAR, which belongs to the caller.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	close(d.stop)
	<-d.done
	d.tblMu.Lock()
	d.bar.Store32(RegCtrl, 0)
	d.tblMu.Unlock()
	d.opts.Kick()
	return nil
}

// Submit posts a request on the request ring.
func (d *Driver) Submit(ctx context.Context, req Request) (<-chan Event, error) {
	geo := d.geo.Load()
	n := len(req.Tokens)
	if n == 0 {
		return nil, fmt.Errorf("submit request %d: empty prompt: %w", req.ID, ErrBadRequest)
	}
	if n > int(geo.MaxReqTokens) {
		return nil, fmt.Errorf("submit request %d: %d tokens, device limit MAX_REQ_TOKENS is %d: %w", req.ID, n, geo.MaxReqTokens, ErrBadRequest)
	}
	if req.Salt.Model == [8]byte{} {
		return nil, fmt.Errorf("submit request %d: %w: %w", req.ID, ErrBadRequest, matcher.ErrZeroSalt)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("submit request %d: %w", req.ID, err)
	}
	d.mu.Lock()
	switch {
	case d.closed:
		d.mu.Unlock()
		return nil, fmt.Errorf("submit request %d: %w", req.ID, ErrClosed)
	case d.resetting:
		d.mu.Unlock()
		d.countBackpressure()
		return nil, fmt.Errorf("submit request %d: device is resetting or being reprogrammed: %w", req.ID, ErrQueueFull)
	case d.broken != nil:
		err := d.broken
		d.mu.Unlock()
		return nil, fmt.Errorf("submit request %d: device unusable since a failed reset: %w", req.ID, err)
	case len(d.inflight) >= int(geo.ReqEntries):
		inflight := len(d.inflight)
		d.mu.Unlock()
		d.countBackpressure()
		return nil, fmt.Errorf("submit request %d: request ring full (%d in flight): %w", req.ID, inflight, ErrQueueFull)
	}
	start, ok := d.allocLocked(uint32(4*n), geo.DataSize)
	if !ok {
		inflight := len(d.inflight)
		d.mu.Unlock()
		d.countBackpressure()
		return nil, fmt.Errorf("submit request %d: card buffer memory full (%d bytes wanted, %d in flight): %w", req.ID, 4*n, inflight, ErrQueueFull)
	}
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if !req.Deadline.IsZero() {
		rctx, cancel = context.WithDeadline(ctx, req.Deadline)
	}
	r := &request{
		ctx: rctx, cancel: cancel, id: req.ID, tag: d.nextTag, slot: d.tail,
		bufStart: start, bufEnd: start + uint32(4*n),
		ch: make(chan Event, d.opts.EventBuffer),
	}
	d.nextTag++
	d.bar.WriteTokens(int(geo.DataOffset+start), req.Tokens)
	desc := ReqDesc{
		Opcode: OpMatch,
		Tokens: uint32(n),
		Tag:    r.tag,
		Salt:   req.Salt.Bytes(),
		Buf:    DMADesc{Addr: uint64(geo.DataOffset + start), Len: uint32(4 * n)},
	}
	var b [ReqDescSize]byte
	desc.Encode(b[:])
	d.bar.Write(WinReqRingOffset+int(d.tail&(geo.ReqEntries-1))*ReqDescSize, b[:])
	d.tail++
	d.bar.Store32(RegReqTail, d.tail) // the doorbell
	d.inflight = append(d.inflight, r)
	d.mu.Unlock()
	d.opts.Kick()
	d.Wake()
	return r.ch, nil
}

// allocLocked reserves n bytes of DATA. Requests finish in ring order, so
// DATA is used as a FIFO: live buffers run from the oldest in-flight
// request's start to the newest one's end, possibly wrapping.
func (d *Driver) allocLocked(n, size uint32) (uint32, bool) {
	if len(d.inflight) == 0 {
		return 0, n <= size
	}
	head, tail := d.inflight[0].bufStart, d.inflight[len(d.inflight)-1].bufEnd
	if head < tail {
		switch {
		case tail+n <= size:
			return tail, true
		case n <= head:
			return 0, true
		}
		return 0, false
	}
	if tail+n <= head {
		return tail, true
	}
	return 0, false
}

func (d *Driver) countBackpressure() {
	d.statsMu.Lock()
	d.host.Backpressure++
	d.statsMu.Unlock()
}

// run is the poller: it consumes completions, delivers events, notices
// faults, and performs resets. It owns cplHead and every request's channel.
func (d *Driver) run() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	backoff := d.opts.PollMin
	var batch []delivery
	for {
		select {
		case <-d.stop:
			d.failAll(fmt.Errorf("device closed: %w", ErrClosed))
			return
		case rc := <-d.resetReq:
			rc.err <- d.serve(rc)
			continue
		case fault := <-d.faultCh:
			d.recover(fault)
			continue
		default:
		}
		var fault error
		batch, fault = d.gather(batch[:0])
		for _, dl := range batch {
			d.deliver(dl.r, dl.ev, dl.terminal)
		}
		if fault != nil {
			d.recover(fault)
			continue
		}
		if len(batch) > 0 {
			backoff = d.opts.PollMin
			continue
		}
		d.mu.Lock()
		busy := len(d.inflight) > 0
		var expired []*request
		for _, r := range d.inflight {
			if !r.closed && r.ctx.Err() != nil {
				expired = append(expired, r)
			}
		}
		d.mu.Unlock()
		for _, r := range expired {
			d.abandon(r, fmt.Errorf("request %d: %w", r.id, r.ctx.Err()))
		}
		if busy {
			if fault := d.health(); fault != nil {
				d.recover(fault)
				continue
			}
			timer.Reset(backoff)
			backoff = min(2*backoff, d.opts.PollMax)
		}
		var tick <-chan time.Time
		if busy {
			tick = timer.C
		}
		select {
		case <-d.wake:
		case <-tick:
		case <-d.stop:
		case rc := <-d.resetReq:
			rc.err <- d.serve(rc)
		case fault := <-d.faultCh:
			d.recover(fault)
		}
		if busy && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// recover resets the device after a fault; it runs on the poller.
func (d *Driver) recover(fault error) {
	d.countError()
	d.log.Error("device_fault", "err", fault)
	if err := d.reset(context.Background(), fault); err != nil {
		d.log.Error("device_reset_failed", "err", err)
	}
}

type delivery struct {
	r        *request
	ev       Event
	terminal bool
}

// gather copies the posted completions out of the ring, matches them with
// in-flight requests, frees the finished requests' slots and buffers, and
// returns the ring space to the device. Delivery happens outside the lock.
func (d *Driver) gather(out []delivery) ([]delivery, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.resetting || d.broken != nil {
		return out, nil
	}
	geo := d.geo.Load()
	tail := d.bar.Load32(RegCplTail)
	avail := tail - d.cplHead
	if avail == 0 {
		return out, nil
	}
	if avail > geo.CplEntries {
		return out, &DeviceError{Op: "poll completions", Code: CodeCplOverrun, Value: avail, Fatal: true,
			Detail: fmt.Sprintf("CPL_TAIL %d is %d entries ahead of CPL_HEAD %d, ring has %d", tail, avail, d.cplHead, geo.CplEntries)}
	}
	for range avail {
		off := WinCplRingOffset + int(d.cplHead&(geo.CplEntries-1))*CplEntrySize
		d.bar.Read(off, d.scratch)
		e := DecodeCplEntry(d.scratch)
		if len(d.inflight) == 0 {
			return out, &DeviceError{Op: "poll completions", Info: d.cplHead, Value: e.Slot, Fatal: true,
				Detail: "completion for a request that was never posted"}
		}
		r := d.inflight[0]
		if e.Slot != r.slot || e.Tag != r.tag {
			return out, &DeviceError{Op: "poll completions", Info: d.cplHead, Value: e.Slot, Fatal: true,
				Detail: fmt.Sprintf("completion for slot %d tag %d, oldest request is slot %d tag %d", e.Slot, e.Tag, r.slot, r.tag)}
		}
		d.cplHead++
		ev := Event{RequestID: r.id}
		terminal := false
		switch e.Type {
		case CplMatch:
			r.matches++
			ev.Kind = EventMatch
			ev.Match = matcher.Match{ReqOff: int(e.ReqOff), Len: int(e.Len), Chunk: e.Key, ChunkOff: int(e.ChunkOff),
				Prefix: e.Flags&CplFlagPrefix != 0, Shared: e.Flags&CplFlagShared != 0}
		case CplPrefetch:
			ev.Kind = EventPrefetch
			ev.Key = e.Key
		case CplDone:
			if e.Count != r.matches {
				return out, &DeviceError{Op: "poll completions", Info: e.Slot, Value: e.Count, Fatal: true,
					Detail: fmt.Sprintf("DONE says %d matches, %d were posted", e.Count, r.matches)}
			}
			ev.Kind = EventDone
			ev.DeviceTime = time.Duration(min(e.DeviceNS, math.MaxInt64))
			ev.Truncated = e.Flags&CplFlagTruncated != 0
			terminal = true
		case CplError:
			ev.Kind = EventError
			ev.Err = &DeviceError{Op: fmt.Sprintf("submit request %d", r.id), Code: Code(e.ErrCode), Info: e.Slot, Value: e.ErrInfo}
			terminal = true
		default:
			return out, &DeviceError{Op: "poll completions", Info: e.Slot, Value: uint32(e.Type), Fatal: true,
				Detail: fmt.Sprintf("unknown completion type %d", e.Type)}
		}
		out = append(out, delivery{r: r, ev: ev, terminal: terminal})
		if terminal {
			d.inflight[0] = nil
			d.inflight = d.inflight[1:]
		}
	}
	d.bar.Store32(RegCplHead, d.cplHead) // the completion doorbell
	d.opts.Kick()
	return out, nil
}

// health reads the status registers while requests wait: a halted device or
// one that was reset behind the driver's back is a fault.
func (d *Driver) health() error {
	st := d.bar.Load32(RegStatus)
	if st&StatusHalted != 0 {
		return &DeviceError{Op: "poll completions", Code: Code(d.bar.Load32(RegErrCode)), Info: d.bar.Load32(RegErrInfo), Value: d.bar.Load32(RegErrValue), Fatal: true, Detail: "device halted"}
	}
	if ep := d.bar.Load32(RegEpoch); ep != d.geo.Load().Epoch {
		return &DeviceError{Op: "poll completions", Value: ep, Fatal: true, Detail: "device was reset or reprogrammed behind the driver (EPOCH changed)"}
	}
	return nil
}

// deliver sends one event; a terminal one closes the channel.
func (d *Driver) deliver(r *request, ev Event, terminal bool) {
	if r.closed {
		return // the caller gave up; the device finished anyway
	}
	select {
	case r.ch <- ev:
	case <-r.ctx.Done():
		d.abandon(r, fmt.Errorf("request %d: %w", r.id, r.ctx.Err()))
		return
	case <-d.stop:
		d.abandon(r, fmt.Errorf("device closed: %w", ErrClosed))
		return
	}
	if terminal {
		close(r.ch)
		r.closed = true
		r.cancel()
	}
}

// abandon ends a request's channel with err if there is room for it.
func (d *Driver) abandon(r *request, err error) {
	if r.closed {
		return
	}
	select {
	case r.ch <- Event{Kind: EventError, RequestID: r.id, Err: err}:
	default:
	}
	close(r.ch)
	r.closed = true
	r.cancel()
}

// failAll ends every in-flight request with err and forgets them.
func (d *Driver) failAll(err error) {
	d.mu.Lock()
	reqs := d.inflight
	d.inflight = nil
	d.mu.Unlock()
	for _, r := range reqs {
		d.abandon(r, err)
	}
}

// reset runs on the poller goroutine (or before it starts). cause is the
// fault that triggered it, nil for a requested reset.
func (d *Driver) reset(ctx context.Context, cause error) error {
	d.mu.Lock()
	d.resetting = true
	d.mu.Unlock()
	failErr := fmt.Errorf("device reset: %w", ErrDeviceFault)
	if cause != nil {
		failErr = cause
	}
	d.failAll(failErr)

	d.tblMu.Lock()
	if !d.saved {
		d.accumulate()
	}
	d.saved = false
	err := d.resetDeviceLocked(ctx)
	if err == nil {
		err = d.repushLocked(ctx)
	}
	d.tblMu.Unlock()

	d.statsMu.Lock()
	d.host.Resets++
	d.statsMu.Unlock()
	d.mu.Lock()
	d.resetting = false
	d.broken = nil
	if err != nil {
		d.broken = err
	}
	d.mu.Unlock()
	if cause != nil {
		d.log.Warn("device_reset", "cause", cause, "err", err)
	}
	return err
}

// resetDevice is the reset NewDriver performs before the poller runs.
func (d *Driver) resetDevice(ctx context.Context) error {
	d.tblMu.Lock()
	defer d.tblMu.Unlock()
	return d.resetDeviceLocked(ctx)
}

// resetDeviceLocked writes CTRL.RESET, waits for READY, re-reads the
// geometry and enables the device. Callers hold tblMu and keep Submit out.
func (d *Driver) resetDeviceLocked(ctx context.Context) error {
	d.bar.Store32(RegCtrl, CtrlReset)
	d.opts.Kick()
	err := d.await(ctx, "reset", func() (bool, error) {
		return d.bar.Load32(RegCtrl)&CtrlReset == 0 && d.bar.Load32(RegStatus)&StatusReady != 0, nil
	})
	if err != nil {
		return err
	}
	geo, err := ReadGeometry(d.bar)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	d.geo.Store(&geo)
	d.cplHead = d.bar.Load32(RegCplHead)
	d.tail = d.bar.Load32(RegReqTail)
	if d.cplHead != 0 || d.tail != 0 || d.bar.Load32(RegCplTail) != 0 || d.bar.Load32(RegReqHead) != 0 {
		return fmt.Errorf("reset: rings did not restart at 0 (REQ_TAIL %d, CPL_HEAD %d): %w", d.tail, d.cplHead, ErrDeviceFault)
	}
	d.tblSeq = d.bar.Load32(RegTblDone)
	d.bar.Store32(RegCtrl, CtrlEnable)
	d.opts.Kick()
	return nil
}

// await polls cond with backoff until it holds, the device halts, the
// driver's timeout passes or ctx ends.
func (d *Driver) await(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(d.opts.Timeout)
	backoff := d.opts.PollMin
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no answer within %v: %w", what, d.opts.Timeout, ErrTimeout)
		}
		timer.Reset(backoff)
		select {
		case <-d.tblWake:
		case <-timer.C:
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		backoff = min(2*backoff, d.opts.PollMax)
	}
}

// PushIndex applies an index update through the table window.
func (d *Driver) PushIndex(ctx context.Context, upd IndexUpdate) error {
	lim := d.geo.Load().EntryLimits()
	for i, e := range upd.Add {
		if err := CheckEntry(e, lim); err != nil {
			return fmt.Errorf("push index: add[%d] key %s: %w", i, e.Key, err)
		}
	}
	d.mu.Lock()
	closed, resetting, broken := d.closed, d.resetting, d.broken
	d.mu.Unlock()
	if closed {
		return fmt.Errorf("push index: %w", ErrClosed)
	}
	if broken != nil {
		return fmt.Errorf("push index: device unusable since a failed reset: %w", broken)
	}
	if resetting {
		return fmt.Errorf("push index: device is resetting: %w", ErrQueueFull)
	}
	ops := make([]tableOp, 0, len(upd.Remove)+len(upd.Add))
	for _, k := range upd.Remove {
		ops = append(ops, tableOp{op: TblOpRemove, key: k})
	}
	for i := range upd.Add {
		ops = append(ops, tableOp{op: TblOpInsert, key: upd.Add[i].Key, entry: &upd.Add[i]})
	}
	d.tblMu.Lock()
	defer d.tblMu.Unlock()
	d.mu.Lock()
	resetting = d.resetting
	d.mu.Unlock()
	if resetting { // suspended while this call waited for the table
		return fmt.Errorf("push index: device is resetting or being reprogrammed: %w", ErrQueueFull)
	}
	res, err := d.applyLocked(ctx, ops)
	if err != nil {
		return err
	}
	if len(res.rejected)+len(res.evicted) > 0 {
		return &TableFullError{Capacity: int(d.geo.Load().TableCapacity), Rejected: res.rejected, Evicted: res.evicted}
	}
	return nil
}

type tableOp struct {
	op    uint16
	key   matcher.ChunkKey
	entry *Entry // INSERT
}

type tableResult struct {
	rejected, evicted []matcher.ChunkKey
}

// applyLocked sends ops in as many batches as the window needs and updates
// the shadow table from the device's answers. Callers hold tblMu.
func (d *Driver) applyLocked(ctx context.Context, ops []tableOp) (tableResult, error) {
	var res tableResult
	for len(ops) > 0 {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("push index: %w", err)
		}
		// Fill one batch.
		n, size := 0, 0
		for n < len(ops) {
			l := TblRecordSize
			if ops[n].entry != nil {
				l = TableRecordLen(len(ops[n].entry.Tokens))
			}
			if size+l > WinTableSize {
				break
			}
			size += l
			n++
		}
		batch := ops[:n]
		ops = ops[n:]
		if cap(d.tblBuf) < size {
			d.tblBuf = make([]byte, size)
		}
		buf := d.tblBuf[:size]
		clear(buf)
		offs := make([]int, len(batch))
		off := 0
		for i, op := range batch {
			offs[i] = off
			rec := TableRecord{Op: op.op, Key: op.key}
			l := TblRecordSize
			if e := op.entry; e != nil {
				if e.Prefix {
					rec.Flags = TblFlagPrefix
				}
				rec.Tokens = uint32(len(e.Tokens))
				rec.Salt = e.Salt.Bytes()
				rec.Rank = EncodeRank(e.Rank)
				l = TableRecordLen(len(e.Tokens))
			}
			rec.Encode(buf[off:])
			off += l
		}
		d.bar.Write(WinTableOffset, buf)
		// Tokens go straight into the window, without staging.
		for i, op := range batch {
			if op.entry != nil {
				d.bar.WriteTokens(WinTableOffset+offs[i]+TblRecordSize, op.entry.Tokens)
			}
		}
		d.bar.Store32(RegTblCount, uint32(len(batch)))
		d.bar.Store32(RegTblBytes, uint32(size))
		d.tblSeq++
		seq := d.tblSeq
		d.bar.Store32(RegTblDoorbell, seq)
		d.opts.Kick()
		// The batch is on the device now: wait for it regardless of ctx,
		// bounded by the driver's timeout, or the shadow would lie.
		err := d.await(context.WithoutCancel(ctx), "push index", func() (bool, error) {
			if d.bar.Load32(RegTblDone) == seq {
				return true, nil
			}
			if d.bar.Load32(RegStatus)&StatusHalted != 0 {
				return false, &DeviceError{Op: "push index", Code: Code(d.bar.Load32(RegErrCode)), Info: d.bar.Load32(RegErrInfo), Fatal: true, Detail: "device halted"}
			}
			return false, nil
		})
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				d.reportFault(err)
			}
			return res, err
		}
		if code := d.bar.Load32(RegTblResult); code != uint32(CodeNone) {
			return res, &DeviceError{Op: "push index", Code: Code(code), Info: d.bar.Load32(RegErrInfo), Value: d.bar.Load32(RegErrValue), Detail: "batch refused"}
		}
		var bad []error
		for i, op := range batch {
			var hdr [TblRecordSize]byte
			d.bar.Read(WinTableOffset+offs[i], hdr[:])
			rec := DecodeTableRecord(hdr[:])
			switch rec.Status {
			case TblStStored, TblStReplaced:
				d.remember(op)
			case TblStEvicted:
				d.remember(op)
				delete(d.shadow, rec.Victim)
				res.evicted = append(res.evicted, rec.Victim)
			case TblStRejected:
				res.rejected = append(res.rejected, op.key)
			case TblStRemoved, TblStAbsent, TblStCleared:
				delete(d.shadow, op.key)
			case TblStMalformed:
				bad = append(bad, &DeviceError{Op: "push index", Code: Code(rec.ErrCode), Info: uint32(i), Detail: "record " + op.key.String() + " refused"})
			default:
				return res, &DeviceError{Op: "push index", Info: uint32(i), Value: uint32(rec.Status), Fatal: true, Detail: "record left with an unknown status"}
			}
		}
		if len(bad) > 0 {
			return res, errors.Join(bad...)
		}
	}
	return res, nil
}

// remember records an applied INSERT in the shadow table; tokens are copied
// because the caller owns the entry.
func (d *Driver) remember(op tableOp) {
	e := op.entry
	if e == nil {
		return
	}
	d.tblN++
	seq := d.tblN
	if old, ok := d.shadow[op.key]; ok {
		seq = old.seq
	}
	d.shadow[op.key] = &shadowEntry{salt: e.Salt, tokens: append([]matcher.Token(nil), e.Tokens...), prefix: e.Prefix, rank: e.Rank, seq: seq}
}

// repushLocked puts the shadow table back after a reset, highest rank first
// so that a smaller table keeps the best entries.
func (d *Driver) repushLocked(ctx context.Context) error {
	if len(d.shadow) == 0 {
		return nil
	}
	keys := make([]matcher.ChunkKey, 0, len(d.shadow))
	for k := range d.shadow {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := d.shadow[keys[i]], d.shadow[keys[j]]
		if a.rank != b.rank {
			return a.rank > b.rank
		}
		return a.seq < b.seq
	})
	old := d.shadow
	d.shadow = make(map[matcher.ChunkKey]*shadowEntry, len(old))
	ops := make([]tableOp, len(keys))
	for i, k := range keys {
		s := old[k]
		ops[i] = tableOp{op: TblOpInsert, key: k, entry: &Entry{Salt: s.salt, Key: k, Tokens: s.tokens, Prefix: s.prefix, Rank: s.rank}}
	}
	res, err := d.applyLocked(ctx, ops)
	if err != nil {
		return fmt.Errorf("restore index table: %w", err)
	}
	if n := len(res.rejected) + len(res.evicted); n > 0 {
		d.log.Warn("device_table_shrunk", "dropped", n, "capacity", d.geo.Load().TableCapacity)
	}
	return nil
}

// reportFault asks the poller to recover from a fault seen elsewhere,
// without waiting: one pending fault is enough to cause a reset.
func (d *Driver) reportFault(err error) {
	select {
	case d.faultCh <- err:
	default:
	}
	d.Wake()
}

func (d *Driver) countError() {
	d.statsMu.Lock()
	d.host.Errors++
	d.statsMu.Unlock()
}

// deviceCounters reads the device's counter registers.
func (d *Driver) deviceCounters() Stats {
	b := d.bar
	return Stats{
		Requests:         b.Load64(RegCntRequests),
		Tokens:           b.Load64(RegCntTokens),
		TokensMatched:    b.Load64(RegCntMatchedTokens),
		Matches:          b.Load64(RegCntMatches),
		Prefetches:       b.Load64(RegCntPrefetches),
		TableInserts:     b.Load64(RegCntTblInserts),
		TableRemoves:     b.Load64(RegCntTblRemoves),
		TableRejects:     b.Load64(RegCntTblRejects),
		TableEvictions:   b.Load64(RegCntTblEvictions),
		CompletionStalls: b.Load64(RegCntCplStalls),
		Errors:           b.Load64(RegCntErrors),
		DeviceBusyTime:   time.Duration(min(b.Load64(RegCntBusyNS), math.MaxInt64)),
	}
}

// accumulate folds the device's counters into the base before a reset
// clears them. Callers hold tblMu.
func (d *Driver) accumulate() {
	c := d.deviceCounters()
	d.statsMu.Lock()
	d.base = addStats(d.base, c)
	d.statsMu.Unlock()
}

func addStats(a, b Stats) Stats {
	a.Requests += b.Requests
	a.Tokens += b.Tokens
	a.TokensMatched += b.TokensMatched
	a.Matches += b.Matches
	a.Prefetches += b.Prefetches
	a.TableInserts += b.TableInserts
	a.TableRemoves += b.TableRemoves
	a.TableRejects += b.TableRejects
	a.TableEvictions += b.TableEvictions
	a.Backpressure += b.Backpressure
	a.CompletionStalls += b.CompletionStalls
	a.Errors += b.Errors
	a.Resets += b.Resets
	a.DeviceBusyTime += b.DeviceBusyTime
	return a
}

// Stats returns the counters since the driver was created.
func (d *Driver) Stats() Stats {
	c := d.deviceCounters()
	d.statsMu.Lock()
	s := addStats(addStats(d.base, d.host), c)
	d.statsMu.Unlock()
	s.TableEntries = int(d.bar.Load32(RegTblOccupancy))
	s.TableCapacity = int(d.geo.Load().TableCapacity)
	return s
}
