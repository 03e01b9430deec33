package simnic_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/kvloom/kvloom/matcher"
	"github.com/kvloom/kvloom/nic"
	"github.com/kvloom/kvloom/nic/simnic"
	"github.com/kvloom/kvloom/sim"
)

// TestPowerOn: the identification and geometry registers say what the
// configuration is, and the driver's geometry check accepts them.
func TestPowerOn(t *testing.T) {
	r := newRig(t, simnic.Options{Pipeline: smallPipeline()})
	g, err := nic.ReadGeometry(r.bar)
	if err != nil {
		t.Fatalf("read geometry: %v", err)
	}
	p := smallPipeline()
	if g.ReqEntries != 4 || g.CplEntries != 8 || g.TableCapacity != 4 || g.Lanes != uint32(p.Lanes) ||
		g.ClockKHz != uint32(p.ClockHz/1e3) || g.MinMatchTokens != 64 || g.BlockTokens != 256 || g.AnchorK != uint32(matcher.DefaultAnchorK) ||
		g.MaxReqTokens != uint32((nic.MinBARSize-nic.WinDataOffset)/4) {
		t.Errorf("geometry %+v does not follow the configuration", g)
	}
	if g.Features&nic.FeaturesSimulated == 0 || r.bar.Load32(nic.RegStatus)&nic.StatusReady == 0 || g.Epoch != 1 {
		t.Errorf("FEATURES %#x, STATUS %#x, EPOCH %d: want simulated, ready, epoch 1", g.Features, r.bar.Load32(nic.RegStatus), g.Epoch)
	}
	blank := newRig(t, simnic.Options{Blank: true})
	if err := nic.CheckIdentity(blank.bar); !errors.Is(err, nic.ErrIncompatibleImage) {
		t.Errorf("blank card identity check: %v, want ErrIncompatibleImage", err)
	}
	if blank.m.Poll() {
		t.Errorf("a blank card did work")
	}
}

func TestConfigErrors(t *testing.T) {
	for name, mod := range map[string]func(*simnic.Options){
		"request depth not a power of two": func(o *simnic.Options) { o.Pipeline.RequestQueueDepth = 100 },
		"request depth over the window":    func(o *simnic.Options) { o.Pipeline.RequestQueueDepth = 2048 },
		"completion depth over the window": func(o *simnic.Options) { o.Pipeline.CompletionQueueDepth = 4096 },
		"no table":                         func(o *simnic.Options) { o.Pipeline.TableEntries = 0 },
		"entry larger than the window":     func(o *simnic.Options) { o.MaxEntryTokens = 1 << 20 },
		"prompt larger than card memory":   func(o *simnic.Options) { o.Matcher.MaxPromptLen = 1 << 30 },
		"bad matcher options":              func(o *simnic.Options) { o.Matcher.MinLen = 2 },
		"zero lanes":                       func(o *simnic.Options) { o.Pipeline.Lanes = -1 },
		"negative KV size":                 func(o *simnic.Options) { o.KVBytesPerToken = -1 },
	} {
		o := simnic.Options{Pipeline: sim.DefaultPipeline()}
		mod(&o)
		bar, _ := nic.NewRegion(make([]byte, nic.MinBARSize))
		if _, err := simnic.NewModel(bar, o); !errors.Is(err, simnic.ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}

// TestMalformedDescriptors: each malformed descriptor gets an ERROR
// completion with its code, latches the error registers, and the device
// goes on serving.
func TestMalformedDescriptors(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*nic.ReqDesc)
		code nic.Code
	}{
		{"bad opcode", func(d *nic.ReqDesc) { d.Opcode = 9 }, nic.CodeBadOpcode},
		{"flags", func(d *nic.ReqDesc) { d.Flags = 1 }, nic.CodeBadFlags},
		{"reserved", func(d *nic.ReqDesc) { d.Rsvd[7] = 1 }, nic.CodeReserved},
		{"no tokens", func(d *nic.ReqDesc) { d.Tokens, d.Buf.Len = 0, 0 }, nic.CodeNoTokens},
		{"too many tokens", func(d *nic.ReqDesc) { d.Tokens = 1 << 30; d.Buf.Len = 0 }, nic.CodeTooManyTokens},
		{"dma flags", func(d *nic.ReqDesc) { d.Buf.Flags = 1 }, nic.CodeDMAFlags},
		{"length mismatch", func(d *nic.ReqDesc) { d.Buf.Len += 4 }, nic.CodeBufLen},
		{"misaligned", func(d *nic.ReqDesc) { d.Buf.Addr += 2 }, nic.CodeBufAlign},
		{"below DATA", func(d *nic.ReqDesc) { d.Buf.Addr = nic.WinTableOffset }, nic.CodeBufRange},
		{"past the BAR", func(d *nic.ReqDesc) { d.Buf.Addr = nic.MinBARSize - 8 }, nic.CodeBufRange},
		{"address overflow", func(d *nic.ReqDesc) { d.Buf.Addr = math.MaxUint64 - 3 }, nic.CodeBufRange},
		{"zero salt", func(d *nic.ReqDesc) { d.Salt = [16]byte{} }, nic.CodeZeroSalt},
	}
	r := newRig(t, simnic.Options{Pipeline: smallPipeline()})
	toks := tokens(1, 100)
	for i, c := range cases {
		d := r.desc(len(toks))
		c.mod(&d)
		got := r.ask(d, toks)
		if len(got) != 1 || got[0].Type != nic.CplError || nic.Code(got[0].ErrCode) != c.code || got[0].Tag != d.Tag || got[0].Slot != r.tail-1 {
			t.Errorf("%s: completions %+v, want one ERROR %s for slot %d tag %d", c.name, got, c.code, r.tail-1, d.Tag)
		}
		if st := r.bar.Load32(nic.RegErrStatus); st&nic.FaultDesc == 0 {
			t.Errorf("%s: ERR_STATUS = %#x, want DESC", c.name, st)
		}
		if first := nic.Code(r.bar.Load32(nic.RegErrCode)); first != cases[0].code {
			t.Errorf("%s: ERR_CODE = %s, want the first error %s (latched)", c.name, first, cases[0].code)
		}
		if n := r.bar.Load64(nic.RegCntErrors); n != uint64(i+1) {
			t.Errorf("%s: CNT_ERRORS = %d, want %d", c.name, n, i+1)
		}
	}
	if got := r.bar.Load32(nic.RegReqHead); got != r.tail {
		t.Errorf("REQ_HEAD = %d, want %d: every malformed request is finished", got, r.tail)
	}
	// The device goes on, and clearing the errors works.
	r.bar.Store32(nic.RegErrClear, nic.FaultDesc)
	got := r.ask(r.desc(len(toks)), toks)
	if len(got) != 1 || got[0].Type != nic.CplDone {
		t.Errorf("valid request after the malformed ones: %+v, want DONE", got)
	}
	if st, code, clr := r.bar.Load32(nic.RegErrStatus), r.bar.Load32(nic.RegErrCode), r.bar.Load32(nic.RegErrClear); st != 0 || code != 0 || clr != 0 {
		t.Errorf("after ERR_CLEAR: ERR_STATUS %#x, ERR_CODE %d, ERR_CLEAR %#x; want all 0", st, code, clr)
	}
}

// TestRingViolationsHalt: a tail more than a ring ahead, or a completion
// head past the tail, halts the device until reset.
func TestRingViolationsHalt(t *testing.T) {
	for name, violate := range map[string]func(r *rig){
		"request tail overrun": func(r *rig) { r.bar.Store32(nic.RegReqTail, 5) },
		"completion overrun":   func(r *rig) { r.bar.Store32(nic.RegCplHead, 3) },
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, simnic.Options{Pipeline: smallPipeline()})
			violate(r)
			r.m.Poll()
			if st := r.bar.Load32(nic.RegStatus); st&nic.StatusHalted == 0 {
				t.Fatalf("STATUS = %#x, want HALTED", st)
			}
			if e := r.bar.Load32(nic.RegErrStatus); e&nic.FaultRing == 0 {
				t.Errorf("ERR_STATUS = %#x, want RING", e)
			}
			r.bar.Store32(nic.RegReqTail, 1)
			if r.m.Poll() {
				t.Errorf("a halted device did work")
			}
			r.bar.Store32(nic.RegCtrl, nic.CtrlReset)
			r.m.Poll()
			if st, ep, ctrl := r.bar.Load32(nic.RegStatus), r.bar.Load32(nic.RegEpoch), r.bar.Load32(nic.RegCtrl); st != nic.StatusReady || ep != 2 || ctrl != 0 {
				t.Errorf("after reset: STATUS %#x, EPOCH %d, CTRL %#x; want READY, 2, 0", st, ep, ctrl)
			}
			for _, reg := range []int{nic.RegReqTail, nic.RegReqHead, nic.RegCplHead, nic.RegCplTail, nic.RegErrStatus} {
				if v := r.bar.Load32(reg); v != 0 {
					t.Errorf("register %#x = %d after reset, want 0", reg, v)
				}
			}
			r.tail, r.cplHead = 0, 0
			r.bar.Store32(nic.RegCtrl, nic.CtrlEnable)
			if got := r.ask(r.desc(80), tokens(2, 80)); len(got) != 1 || got[0].Type != nic.CplDone {
				t.Errorf("after reset: %+v, want DONE", got)
			}
		})
	}
}

// TestCompletionStall: a request with more completions than the ring holds
// stalls the device until the host makes room; the request's slot stays the
// device's until its DONE is out.
func TestCompletionStall(t *testing.T) {
	r := newRig(t, simnic.Options{Pipeline: smallPipeline()})
	var prompt []matcher.Token
	var recs []record
	for i := range 4 {
		c := tokens(10+i, 70)
		recs = append(recs, r.insert(c, 1))
		prompt = append(prompt, c...)
	}
	r.batch(recs...)
	r.post(r.desc(len(prompt)), prompt) // 4 MATCH + 4 PREFETCH + DONE = 9 > 8
	for r.m.Poll() {
	}
	if st := r.bar.Load32(nic.RegStatus); st&nic.StatusCplStall == 0 {
		t.Fatalf("STATUS = %#x, want CPL_STALL", st)
	}
	if n := r.bar.Load64(nic.RegCntCplStalls); n != 1 {
		t.Errorf("CNT_CPL_STALLS = %d, want 1", n)
	}
	if h := r.bar.Load32(nic.RegReqHead); h != 0 {
		t.Errorf("REQ_HEAD = %d while the request's completions are not all out", h)
	}
	first := r.drain()
	for r.m.Poll() {
	}
	rest := r.drain()
	all := append(first, rest...)
	if len(first) != 8 || len(all) != 9 || all[8].Type != nic.CplDone || all[8].Count != 4 {
		t.Fatalf("completions %d then %d (%+v), want 8 then the rest ending in DONE count 4", len(first), len(rest), all)
	}
	for i, e := range all[:4] {
		if e.Type != nic.CplMatch || e.ReqOff != uint32(70*i) || e.Len != 70 {
			t.Errorf("completion %d = %+v, want MATCH at %d", i, e, 70*i)
		}
	}
	if st := r.bar.Load32(nic.RegStatus); st&nic.StatusCplStall != 0 || r.bar.Load32(nic.RegReqHead) != 1 {
		t.Errorf("after draining: STATUS %#x, REQ_HEAD %d; want no stall and the request finished", st, r.bar.Load32(nic.RegReqHead))
	}
}

// TestTableRecords: every status and every malformed record.
func TestTableRecords(t *testing.T) {
	r := newRig(t, simnic.Options{Pipeline: smallPipeline()})
	a, b, c, d, e := tokens(1, 64), tokens(2, 64), tokens(3, 64), tokens(4, 64), tokens(5, 64)
	got := r.batch(r.insert(a, 5), r.insert(b, 3), r.insert(c, 3), r.insert(d, 4), r.insert(a, 6))
	want := []uint16{nic.TblStStored, nic.TblStStored, nic.TblStStored, nic.TblStStored, nic.TblStReplaced}
	for i := range got {
		if got[i].Status != want[i] {
			t.Errorf("record %d: status %d, want %d", i, got[i].Status, want[i])
		}
	}
	// Full (capacity 4): a higher rank evicts the lowest, oldest first on
	// ties (b before c); an equal or lower one is rejected.
	got = r.batch(r.insert(e, 3.5), r.insert(tokens(6, 64), 3), r.insert(tokens(7, 64), 2))
	if got[0].Status != nic.TblStEvicted || got[0].Victim != matcher.ChunkKeyOf(r.salt(), b) {
		t.Errorf("insert above the lowest rank: %+v, want EVICTED of b (rank 3, oldest)", got[0])
	}
	if got[1].Status != nic.TblStRejected || got[2].Status != nic.TblStRejected {
		t.Errorf("inserts at and below the lowest rank: %d, %d; want REJECTED", got[1].Status, got[2].Status)
	}
	got = r.batch(record{hdr: nic.TableRecord{Op: nic.TblOpRemove, Key: matcher.ChunkKeyOf(r.salt(), c)}},
		record{hdr: nic.TableRecord{Op: nic.TblOpRemove, Key: matcher.ChunkKeyOf(r.salt(), c)}})
	if got[0].Status != nic.TblStRemoved || got[1].Status != nic.TblStAbsent {
		t.Errorf("remove, remove again: %d, %d; want REMOVED, ABSENT", got[0].Status, got[1].Status)
	}
	if occ := r.bar.Load32(nic.RegTblOccupancy); occ != 3 {
		t.Errorf("TBL_OCCUPANCY = %d, want 3", occ)
	}
	for reg, want := range map[int]uint64{nic.RegCntTblInserts: 6, nic.RegCntTblEvictions: 1, nic.RegCntTblRejects: 2, nic.RegCntTblRemoves: 1} {
		if got := r.bar.Load64(reg); got != want {
			t.Errorf("counter %#x = %d, want %d", reg, got, want)
		}
	}

	bad := func(mod func(*record)) record {
		rec := r.insert(tokens(9, 64), 1)
		mod(&rec)
		return rec
	}
	malformed := []struct {
		name string
		rec  record
		code nic.Code
	}{
		{"unknown op", bad(func(x *record) { x.hdr.Op = 7; x.hdr.Tokens = 0; x.toks = nil }), nic.CodeBadOpcode},
		{"flags", bad(func(x *record) { x.hdr.Flags = 2 }), nic.CodeBadFlags},
		{"reserved", bad(func(x *record) { x.hdr.Rsvd2 = 1 }), nic.CodeReserved},
		{"remove with tokens", record{hdr: nic.TableRecord{Op: nic.TblOpRemove, Tokens: 1}, toks: []matcher.Token{1}}, nic.CodeReserved},
		{"no tokens", bad(func(x *record) { x.hdr.Tokens = 0; x.toks = nil }), nic.CodeNoTokens},
		{"NaN rank", bad(func(x *record) { x.hdr.Rank = nic.EncodeRank(math.NaN()) }), nic.CodeBadRank},
		{"zero salt", bad(func(x *record) { x.hdr.Salt = [16]byte{} }), nic.CodeZeroSalt},
		{"wrong key", bad(func(x *record) { x.hdr.Key[3] ^= 1 }), nic.CodeKeyMismatch},
		{"too short", bad(func(x *record) { x.toks = x.toks[:10]; x.hdr.Tokens = 10 }), nic.CodeEntryRefused},
		{"prefix shorter than a block", bad(func(x *record) { x.hdr.Flags = nic.TblFlagPrefix }), nic.CodeEntryRefused},
	}
	for _, m := range malformed {
		got := r.batch(m.rec)
		if got[0].Status != nic.TblStMalformed || nic.Code(got[0].ErrCode) != m.code {
			t.Errorf("%s: status %d code %s, want MALFORMED %s", m.name, got[0].Status, nic.Code(got[0].ErrCode), m.code)
		}
	}
	if e := r.bar.Load32(nic.RegErrStatus); e&nic.FaultTable == 0 {
		t.Errorf("ERR_STATUS = %#x, want TABLE", e)
	}
	if occ := r.bar.Load32(nic.RegTblOccupancy); occ != 3 {
		t.Errorf("TBL_OCCUPANCY = %d after malformed records, want 3", occ)
	}
	// A batch past the window, and a record past the batch.
	r.ring(1, nic.WinTableSize+16, nil)
	if res := nic.Code(r.bar.Load32(nic.RegTblResult)); res != nic.CodeBatchRange {
		t.Errorf("oversized batch: TBL_RESULT %s, want BATCH_RANGE", res)
	}
	var hdr [nic.TblRecordSize]byte
	rec := r.insert(tokens(11, 64), 1)
	rec.hdr.Encode(hdr[:])
	r.bar.Write(nic.WinTableOffset, hdr[:])
	r.ring(1, nic.TblRecordSize+8, nil) // tokens cut off
	if res := nic.Code(r.bar.Load32(nic.RegTblResult)); res != nic.CodeBatchRange {
		t.Errorf("record past the batch: TBL_RESULT %s, want BATCH_RANGE", res)
	}
	r.ring(3, nic.TblRecordSize, nil) // count says more than bytes hold
	if res := nic.Code(r.bar.Load32(nic.RegTblResult)); res != nic.CodeBatchRange {
		t.Errorf("count past the batch: TBL_RESULT %s, want BATCH_RANGE", res)
	}
	// CLEAR empties the table and the index.
	got = r.batch(record{hdr: nic.TableRecord{Op: nic.TblOpClear}})
	if got[0].Status != nic.TblStCleared || r.bar.Load32(nic.RegTblOccupancy) != 0 {
		t.Errorf("clear: status %d, occupancy %d", got[0].Status, r.bar.Load32(nic.RegTblOccupancy))
	}
	if cpl := r.ask(r.desc(len(a)), a); len(cpl) != 1 || cpl[0].Type != nic.CplDone {
		t.Errorf("after CLEAR the table still matches: %+v", cpl)
	}
}

// TestDeviceTime: a request's device time is sim.Pipeline.Time of its
// work, the clock and busy counters add it up, and a faster pipeline is
// faster. Virtual time: the same work gives the same figure every run.
func TestDeviceTime(t *testing.T) {
	run := func(p sim.Pipeline) (uint64, *rig) {
		r := newRig(t, simnic.Options{Pipeline: p, KVBytesPerToken: 1024})
		chunk := tokens(1, 200)
		r.batch(r.insert(chunk, 1))
		prompt := append(tokens(2, 300), chunk...)
		cpl := r.ask(r.desc(len(prompt)), prompt)
		done := cpl[len(cpl)-1]
		if done.Type != nic.CplDone || len(cpl) != 3 {
			t.Fatalf("completions %+v, want MATCH, PREFETCH, DONE", cpl)
		}
		ix, err := matcher.New(matcher.Options{MaxPromptLen: 1 << 17})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ix.Add(matcher.Entry{Salt: r.salt(), Tokens: chunk}); err != nil {
			t.Fatal(err)
		}
		res, err := ix.Find(r.salt(), prompt, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.DescriptorBytes, p.CompletionBytes = nic.ReqDescSize, nic.CplEntrySize
		want := p.Time(sim.Work{Tokens: len(prompt), Lookups: res.Anchors, Events: 2, PrefetchBytes: 200 * 1024, PrefetchMessages: 1}).Total
		if time.Duration(done.DeviceNS) != want {
			t.Errorf("DONE.DEVICE_NS = %v, pipeline model says %v", time.Duration(done.DeviceNS), want)
		}
		return done.DeviceNS, r
	}
	p := sim.DefaultPipeline()
	t1, r := run(p)
	if t1 == 0 {
		t.Fatal("device time is zero")
	}
	t2, _ := run(p)
	if t1 != t2 {
		t.Errorf("same work, device times %d and %d: not deterministic", t1, t2)
	}
	cpl := r.ask(r.desc(50), tokens(3, 50))
	if busy, clock := r.bar.Load64(nic.RegCntBusyNS), r.bar.Load64(nic.RegDevTimeNS); busy != t1+cpl[0].DeviceNS || clock != busy {
		t.Errorf("CNT_BUSY_NS %d, DEV_TIME_NS %d; want both %d", busy, clock, t1+cpl[0].DeviceNS)
	}
	slow := p
	slow.Lanes, slow.ClockHz = 1, 100e6
	if t3, _ := run(slow); t3 <= t1 {
		t.Errorf("a 1-lane 100 MHz pipeline took %d ns, the default %d ns", t3, t1)
	}
}
